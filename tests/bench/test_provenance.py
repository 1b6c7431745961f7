"""Every benchmark result carries its provenance, read before the run starts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_provenance_names_installed_versions_before_anything_is_imported() -> None:
    # a fresh interpreter: nothing but the harness imported, as when `taskology bench` starts
    code = ("import sys; from taskology.bench import provenance; v = provenance('x', True, None)['versions']; "
            "print(sorted(v), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, torch_imported = out.rsplit(" ", 1)
    assert torch_imported.strip() == "False"  # so the versions come from the installed packages
    for dist in ("numpy", "torch", "numba", "h5py", "dask", "distributed", "trimesh", "python"):
        assert f"'{dist}'" in names, out


def test_bench_set_overrides_are_checked_before_a_run_and_named_in_the_result_stem(tmp_path) -> None:
    from pathlib import Path

    import pytest

    from taskology.bench import provenance, result_stem, run_benchmark
    from taskology.errors import ConfigError

    preset = Path("configs/consistency-cpu.yaml")
    with pytest.raises(ConfigError, match="train.seedz: unknown key"):
        run_benchmark("label-weights", out_dir=tmp_path, config=preset, overrides=["train.seedz=[1]"])
    with pytest.raises(ConfigError, match="--set needs --config"):
        run_benchmark("label-weights", out_dir=tmp_path, overrides=["train.seeds=[1]"])
    with pytest.raises(ConfigError, match="takes no --config"):
        run_benchmark("staleness", out_dir=tmp_path, config=preset, overrides=["train.seeds=[1]"])
    assert not list(tmp_path.iterdir())  # nothing written by a refused run
    # an overridden run never replaces the preset's own result, and its command can be pasted back
    assert result_stem("label-weights", False, preset, ["train.seeds=[1]"]) != result_stem("label-weights", False, preset)
    assert provenance("label-weights", False, preset, ["train.seeds=[1]"])["command"] == (
        "taskology bench label-weights --config configs/consistency-cpu.yaml --set 'train.seeds=[1]'")


def test_bench_factor_is_checked_before_a_run_and_named_in_the_command_and_stem(tmp_path) -> None:
    from pathlib import Path

    from taskology.bench import provenance, result_stem

    preset = Path("configs/consistency-cpu.yaml")
    for args, message in ((["receivers", "--factor", "segmentation <- geometry"],
                           "--factor 'segmentation <- geometry': not a factor of 'receivers'"),
                          (["label-weights", "--factor", "segmentation <- logic"], "takes no --factor")):
        done = subprocess.run([sys.executable, "-m", "taskology", "bench", *args, "--config", str(preset),
                               "--out", str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done
    assert not list(tmp_path.iterdir())
    assert provenance("receivers", False, preset, (), ["segmentation <- logic"])["command"] == (
        "taskology bench receivers --config configs/consistency-cpu.yaml --factor 'segmentation <- logic'")
    factor_stem = result_stem("receivers", False, preset, (), ["segmentation <- logic"])
    assert factor_stem != result_stem("receivers", False, preset)


def test_bench_steps_is_checked_before_a_run_and_named_in_the_command_and_stem(tmp_path) -> None:
    from taskology.bench import provenance, result_stem

    too_short = "--steps 100: a staleness run with its own length needs >= 800"
    for args, message in ((["staleness", "--steps", "100"], too_short),
                          (["staleness", "--steps", "1600", "--quick"], "--steps with --quick"),
                          (["geometry", "--steps", "1600"], "benchmark 'geometry' takes no --steps")):
        done = subprocess.run([sys.executable, "-m", "taskology", "bench", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    assert provenance("staleness", False, None, steps=1600)["command"] == "taskology bench staleness --steps 1600"
    assert result_stem("staleness", False, None, steps=1600) == "staleness-steps-1600"


def test_bench_seeds_and_staleness_factors_are_checked_before_a_run_and_named_in_the_command_and_stem(
        tmp_path) -> None:
    from taskology.bench import provenance, result_stem

    for args, message in ((["geometry", "--seeds", "12"], "benchmark 'geometry' takes no --seeds"),
                          (["staleness", "--seeds", "1"], "Invalid value for '--seeds'"),
                          (["staleness", "--factor", "anchors"], "--factor 'anchors': not a factor of 'staleness'")):
        done = subprocess.run([sys.executable, "-m", "taskology", "bench", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    assert provenance("staleness", False, None, (), ["staggered"], seeds=12)["command"] == (
        "taskology bench staleness --factor staggered --seeds 12")
    assert result_stem("staleness", False, None, (), ["staggered"], seeds=12) == "staleness-factor-staggered-seeds-12"


def test_bench_labels_is_checked_before_a_run_and_named_in_the_command_and_stem(tmp_path) -> None:
    from pathlib import Path

    from taskology.bench import provenance, result_stem

    preset = Path("configs/consistency-cpu.yaml")
    for args, message in ((["label-weights", "--labels", "0.5"],
                           "--labels 0.5: not a label fraction of 'label-weights'; available: 0.02, 0.1, 1"),
                          (["label-weights", "--labels", "0"], "Invalid value for '--labels'"),
                          (["receivers", "--labels", "1"],
                           "--labels 1: not a label fraction of 'receivers'; available: 0.02, 0.1"),
                          (["consistency", "--labels", "0.1"], "benchmark 'consistency' takes no --labels")):
        done = subprocess.run([sys.executable, "-m", "taskology", "bench", *args, "--config", str(preset),
                               "--out", str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done
    assert not list(tmp_path.iterdir())
    assert provenance("label-weights", False, preset, labels=[0.1])["command"] == (
        "taskology bench label-weights --config configs/consistency-cpu.yaml --labels 0.1")
    assert result_stem("label-weights", False, preset, labels=[0.1]) == "label-weights-consistency-cpu-labels-10pct"
    assert result_stem("label-weights", False, preset, labels=[0.02]) == "label-weights-consistency-cpu-labels-2pct"


@pytest.mark.parametrize("bench, kwargs, names", [
    ("label_weights", {}, ["alone", "relations x1", "relations x0.3", "relations x0.1"]),
    ("receivers", {"factors": ("segmentation <- ground",)}, ["alone", "all", "no segmentation <- ground"]),
])
def test_label_fraction_choosers_run_only_the_fractions_asked_for(monkeypatch, bench, kwargs, names) -> None:
    import importlib
    from pathlib import Path

    module = importlib.import_module(f"taskology.bench.{bench}")
    seen: list[tuple] = []

    def fake_validation_runs(preset, quick, jobs, overrides=()):
        seen.extend(jobs)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(module, "validation_runs", fake_validation_runs)
    with pytest.raises(RuntimeError, match="stop before training"):
        module.run(False, Path("configs/consistency-cpu.yaml"), labels=(0.02,), **kwargs)
    assert {fr for fr, *_ in seen} == {0.02}
    assert [name for _, _, name, _ in seen] == names



def test_sim_world_in_processes_makes_the_same_shards(tmp_path: Path) -> None:
    """``sim_world(..., processes=2)`` (shards simulated in worker processes) writes the world one process does."""
    from taskology.bench import sim_world
    from taskology.sim.cache import shard_digest

    one = sim_world(tmp_path / "one", (8, 24), 2, 2)
    two = sim_world(tmp_path / "two", (8, 24), 2, 2, processes=2)
    names = sorted(p.name for p in one.glob("*.h5"))
    assert len(names) == 2 and names == sorted(p.name for p in two.glob("*.h5"))
    assert [shard_digest(one / n) for n in names] == [shard_digest(two / n) for n in names]
