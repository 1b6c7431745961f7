"""``taskology demo`` end to end at 32x96 with a few steps, in-process (``--cluster none``):
data cache, Ctrl-C mid-training then resume, reuse of finished parts, the report's numbers are the
engine's, settings mismatch on the same --out is an error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import taskology.engine.command as command_module
from taskology.config import load_config
from taskology.engine import demo
from taskology.engine.runner import TaskRunner
from taskology.errors import ConfigError

TASKS = ("depth", "normals", "segmentation", "motion")
STEPS = 3


def tiny_overrides(*extra: str) -> list[str]:
    out = ["sim.sequences=3", "sim.frames=6", "sim.camera=32x96", "data.camera=32x96", "data.test_sequences=1",
           f"train.steps={STEPS}", "train.log_every=1", "train.eval_every=0", "train.checkpoint_every_steps=1",
           "train.checkpoint_every_s=0", "train.mediator_batch_size=2", "train.device=cpu"]
    for t in TASKS:
        out += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.label_fraction=1.0"]
    return out + list(extra)


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow  # ~20 s of CPU; minutes of wall time on the loaded shared machine
def test_demo_interrupted_resumed_reused_and_reported(tmp_path: Path, monkeypatch) -> None:
    out, cache = tmp_path / "demo", tmp_path / "cache"
    real_step = TaskRunner.train_step
    calls = {"n": 0}

    def interrupting_step(self: TaskRunner) -> dict[str, float]:
        if self.collective and self.step == 2 and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt  # Ctrl-C during the collective arm's third step
        return real_step(self)

    monkeypatch.setattr(TaskRunner, "train_step", interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        demo.demo_command(out, "none", overrides=tiny_overrides(), cache_dir=cache)
    # the alone arm finished; the collective one stopped with its step-2 checkpoints; no report, no temp files
    assert json.loads((out / "alone" / "metrics.json").read_text())["steps"] == STEPS
    assert not (out / "collective" / "metrics.json").exists() and not (out / "report").exists()
    assert sorted(p.name for p in (out / "collective" / "checkpoints" / "depth").iterdir()) == [
        "step_00000001.pt", "step_00000002.pt"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    shards = sorted((cache / "sim").glob("*/*.h5"))
    assert len(shards) == 3 and (shards[0].parent / demo.COMPLETE_MARKER).is_file()

    alone_before = files_under(out / "alone")
    report_dir = demo.demo_command(out, "none", overrides=tiny_overrides(), cache_dir=cache)
    assert files_under(out / "alone") == alone_before  # finished arm reused untouched
    steps = [json.loads(line)["step"] for line in (out / "collective" / "logs" / "depth.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed at step 3, nothing retrained
    saved = load_config(out / "collective" / "config.yaml")
    assert saved.train.mode == "collective" and Path(saved.data.root) == shards[0].parent

    # the report's table holds exactly the engine's held-out numbers
    table = json.loads((report_dir / "metrics.json").read_text())["rows"]
    for arm in ("alone", "collective"):
        engine = json.loads((out / arm / "metrics.json").read_text())["tasks"]
        for row in table:
            assert row[arm] == pytest.approx(engine[row["task"]][row["metric"]], nan_ok=True)
    assert {row["task"] for row in table} == set(TASKS)
    text = (report_dir / "report.md").read_text()
    assert "In-process run: predictions fresh" in text and "- nothing missing" in text
    for name in ("gallery.png", *(f"loss_{t}.png" for t in TASKS)):
        assert (report_dir / name).stat().st_size > 10_000

    # a third run reuses everything: no training, no evaluation
    def no_training(*args, **kwargs):
        raise AssertionError("finished arms must not be retrained or re-evaluated")

    monkeypatch.setattr(command_module, "train_command", no_training)
    monkeypatch.setattr(command_module, "eval_command", no_training)
    demo.demo_command(out, "none", overrides=tiny_overrides(), cache_dir=cache)
    with pytest.raises(ConfigError, match="train.steps: saved 3, now 4"):
        demo.demo_command(out, "none", overrides=tiny_overrides("train.steps=4"), cache_dir=cache)


def test_cache_key_follows_the_sim_settings() -> None:
    base = load_config(demo.DEMO_CONFIG)
    same = load_config(demo.DEMO_CONFIG, ["train.steps=5", "cluster.address=none"])
    other = load_config(demo.DEMO_CONFIG, ["sim.frames=7"])
    assert demo.sim_cache_key(base.sim) == demo.sim_cache_key(same.sim)
    assert demo.sim_cache_key(base.sim) != demo.sim_cache_key(other.sim)


def test_unreadable_cached_shard_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "seed0-seq00000.h5").write_bytes(b"not hdf5")
    assert not demo._valid_shards(tmp_path, 1)
    assert not list(tmp_path.iterdir())


def test_other_settings_on_the_same_out_are_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    from taskology.config import save_config

    wanted = load_config(demo.DEMO_CONFIG, tiny_overrides("train.mode=alone", f"data.root={tmp_path}"))
    saved = load_config(demo.DEMO_CONFIG, tiny_overrides("train.mode=alone", f"data.root={tmp_path}",
                                                         "tasks.depth.lr=0.01"))
    save_config(saved, tmp_path / "demo" / "alone" / "config.yaml")
    monkeypatch.setattr(command_module, "train_command", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ConfigError, match=r"tasks.depth.lr: saved 0.01, now 0.001\); use another --out"):
        demo.run_arm("alone", tmp_path / "demo", wanted, [], "none", demo._console())
