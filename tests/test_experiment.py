"""``taskology.experiment``: an arm's config, its simulated world (cached and checked), one arm trained and
evaluated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskology import experiment
from taskology.errors import ConfigError


def test_arm_config_sets_mode_and_every_enabled_task_fraction_after_the_overrides(tmp_path: Path) -> None:
    cfg = experiment.arm_config("consistency", 0.1, "collective", data_root=tmp_path,
                                overrides=["tasks.motion.enabled=false", "train.mode=alone",
                                           "tasks.depth.label_fraction=0.5"])
    assert cfg.train.mode == "collective" and cfg.data.root == tmp_path  # the arm wins over the overrides
    assert {name: t.label_fraction for name, t in cfg.tasks.items()} == {
        "depth": 0.1, "normals": 0.1, "segmentation": 0.1, "motion": 0.02}  # a disabled task keeps its own
    with pytest.raises(ConfigError, match="mode 'both': expected one of alone, collective"):
        experiment.arm_config("consistency", 0.1, "both")
    with pytest.raises(ConfigError, match="label fraction 0: expected 0 < fraction <= 1"):
        experiment.arm_config("consistency", 0, "alone")
    with pytest.raises(ConfigError, match="no shipped preset of that name; presets: consistency, consistency-gpu"):
        experiment.arm_config("consistensy", 0.1, "alone")


def test_ensure_world_simulates_a_varied_world_into_its_own_folder(tmp_path: Path) -> None:
    from taskology.config import load_config
    from taskology.data.shard import Shard

    base = [f"data.root={tmp_path}", "sim.sequences=1", "sim.frames=2", "sim.camera=8x24", "sim.seed=3",
            "sim.lidar_beams=0"]
    default = experiment.ensure_world(load_config(None, base))
    varied = experiment.ensure_world(load_config(None, base + ["sim.ego_speed_mps=[2,12]"]))
    assert default.name == "seed3-1x2-8x24"
    assert varied.name == "seed3-1x2-8x24-ego_speed_mps2-12"
    with Shard.open(next(varied.glob("*.h5"))) as shard:
        assert shard.generator["config"]["world"]["ego_speed_mps"] == [2.0, 12.0]
    with Shard.open(next(default.glob("*.h5"))) as shard:
        assert shard.generator["config"]["world"]["ego_speed_mps"] == [5.0, 9.0]


def test_ensure_world_checks_a_world_cached_by_other_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The real simulator: a folder recorded under another simulator fingerprint is checked by simulating
    its first shard again; today's simulator makes it bit for bit, so the folder is kept."""
    from taskology.config import load_config
    from taskology.sim import cache

    config = load_config(None, [f"data.root={tmp_path}", "sim.sequences=2", "sim.frames=2", "sim.camera=8x24",
                                "sim.lidar_beams=0"])
    root = experiment.ensure_world(config)
    world = cache.recorded_world(root)
    assert world is not None and len(cache.read_record(root)["shards"]) == 2
    record = json.loads((root / cache.RECORD).read_text())
    record["simulator"] = "older-code"
    (root / cache.RECORD).write_text(json.dumps(record))
    capsys.readouterr()
    assert experiment.ensure_world(config) == root
    assert "simulates seed0-seq00000.h5 identically" in capsys.readouterr().out
    assert cache.recorded_world(root) == world and cache.read_record(root)["simulator"] == cache.simulator_fingerprint()
    assert not list(tmp_path.glob("*.stale-*"))




def test_run_arm_trains_into_its_folder_and_returns_the_evaluation(sim_root: Path, tmp_path: Path) -> None:
    overrides = ["train.steps=2", "train.mediator_batch_size=2", "data.test_sequences=1", "data.val_sequences=1",
                 "train.consistency_start_step=0", "train.device=cpu", "sim.camera=32x96", "data.camera=32x96",
                 *[f"tasks.{t}.{k}" for t in ("depth", "normals", "segmentation", "motion")
                   for k in ("width=4", "batch_size=2")]]
    metrics, seconds = experiment.run_arm("consistency", 0.5, "collective", seed=0, run_dir=tmp_path / "arm",
                                          data_root=sim_root, overrides=overrides, split="val")
    record = json.loads((tmp_path / "arm" / "metrics.json").read_text())
    assert record["tasks"] == metrics and record["split"] == "val" and record["mode"] == "collective"
    assert seconds > 0 and set(metrics) == {"depth", "normals", "segmentation", "motion"}
