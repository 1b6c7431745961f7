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
    from taskology.bench import provenance, result_stem, run_benchmark
    from taskology.errors import ConfigError

    preset = Path("consistency-gpu")
    with pytest.raises(ConfigError, match="train.seedz: unknown key"):
        run_benchmark("consistency", out_dir=tmp_path, config=preset, overrides=["train.seedz=[1]"])
    with pytest.raises(ConfigError, match="train.seedz: unknown key"):  # the bench's own preset without --config
        run_benchmark("consistency", out_dir=tmp_path, overrides=["train.seedz=[1]"])
    with pytest.raises(ConfigError, match="takes no --config"):
        run_benchmark("staleness", out_dir=tmp_path, config=preset)
    with pytest.raises(ConfigError, match="takes no --set"):
        run_benchmark("staleness", out_dir=tmp_path, overrides=["train.seeds=[1]"])
    assert not list(tmp_path.iterdir())  # nothing written by a refused run
    # an overridden run never replaces the preset's own result, and its command can be pasted back
    assert result_stem("consistency", False, preset, ["train.seeds=[1]"]) != result_stem("consistency", False, preset)
    assert result_stem("consistency", False, None, ["train.seeds=[1]"]) == "consistency-train-seeds-1"
    assert provenance("consistency", False, preset, ["train.seeds=[1]"])["command"] == (
        "taskology bench consistency --config consistency-gpu --set 'train.seeds=[1]'")


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


def test_bench_seeds_is_checked_before_a_run_and_named_in_the_command_and_stem(tmp_path) -> None:
    from taskology.bench import provenance, result_stem

    for args, message in ((["geometry", "--seeds", "12"], "benchmark 'geometry' takes no --seeds"),
                          (["staleness", "--seeds", "1"], "Invalid value for '--seeds'"),
                          (["staleness", "--factor", "anchors"], "No such option '--factor'")):
        done = subprocess.run([sys.executable, "-m", "taskology", "bench", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    assert provenance("staleness", False, None, seeds=12)["command"] == "taskology bench staleness --seeds 12"
    assert result_stem("staleness", False, None, seeds=12) == "staleness-seeds-12"


def test_sim_world_in_processes_makes_the_same_shards(tmp_path: Path) -> None:
    """``sim_world(..., processes=2)`` (shards simulated in worker processes) writes the world one process does."""
    from taskology.bench import sim_world
    from taskology.sim.cache import shard_digest

    one = sim_world(tmp_path / "one", (8, 24), 2, 2)
    two = sim_world(tmp_path / "two", (8, 24), 2, 2, processes=2)
    names = sorted(p.name for p in one.glob("*.h5"))
    assert len(names) == 2 and names == sorted(p.name for p in two.glob("*.h5"))
    assert [shard_digest(one / n) for n in names] == [shard_digest(two / n) for n in names]
