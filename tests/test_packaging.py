"""An installed package (a built wheel, not the source tree) runs from any folder: its presets are package data.

The wheel is built from this checkout without network (``pip wheel --no-deps --no-build-isolation``) and
installed with ``pip install --no-deps --target`` into a folder put first on ``PYTHONPATH``; the dependencies
come from this interpreter. Every command then runs in an empty folder elsewhere, so nothing can be found
through the source tree or the working directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables that make ``python`` import the installed wheel."""
    base = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(base / "wheel"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (base / "wheel").glob("taskology-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"taskology/configs/{p}.yaml" for p in ("default", "demo", "consistency", "consistency-gpu")} <= names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(base / "site"),
                    str(wheel)], check=True, capture_output=True)
    return {**os.environ, "PYTHONPATH": str(base / "site"), "TASKOLOGY_CACHE": str(base / "cache")}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=540)


def test_the_installed_package_loads_its_presets_by_name(installed: dict[str, str], tmp_path: Path) -> None:
    done = _run(["-c", "import taskology; from taskology.config import load_config; "
                       "print(taskology.__file__); print(load_config('demo').train.steps)"], installed, tmp_path)
    assert done.returncode == 0, done.stderr
    location, steps = done.stdout.split()
    assert Path(installed["PYTHONPATH"]) in Path(location).parents  # the wheel's copy, not the checkout
    assert int(steps) == 200
    bad = _run(["-m", "taskology", "train", "demoo"], installed, tmp_path)
    assert bad.returncode == 2 and "no shipped preset of that name; presets: consistency" in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_installed_demo_and_consistency_bench_run_from_an_empty_folder(installed: dict[str, str],
                                                                         tmp_path: Path) -> None:
    bench = _run(["-m", "taskology", "bench", "consistency", "--quick", "--set", "train.seeds=[0]",
                  "--out", "results"], installed, tmp_path)
    assert bench.returncode == 0, bench.stderr[-2000:]
    record = json.loads((tmp_path / "results" / "consistency-train-seeds-0-quick.json").read_text())
    assert record["figures"]["setup"]["preset"] == "consistency" and len(record["figures"]["runs"]) == 3
    tiny = ["sim.sequences=3", "sim.frames=6", "sim.camera=32x96", "data.camera=32x96", "data.test_sequences=1",
            "train.steps=2", "train.eval_every=0", "train.log_every=1", "train.checkpoint_every_steps=0",
            "train.checkpoint_every_s=0", "train.mediator_batch_size=2", "train.consistency_start_step=0",
            # the camera tasks suffice to show the installed demo runs (tests/test_demo.py runs all six)
            "sim.lidar_beams=0", "tasks.detection.enabled=false", "tasks.tracking.enabled=false",
            *[f"tasks.{t}.{k}" for t in ("depth", "normals", "segmentation", "motion")
              for k in ("width=4", "batch_size=2", "label_fraction=1.0")]]
    demo = _run(["-c", f"from taskology.demo import demo_command; demo_command('runs/demo', 'none', overrides={tiny!r})"],
                installed, tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "runs" / "demo" / "report" / "report.md").is_file()
