"""``taskology demo`` end to end at 32x96 with a few steps, in-process (``--cluster none``):
data cache, Ctrl-C mid-training then resume, reuse of finished parts, the report's numbers are the
engine's, the LiDAR tasks' detections drawn in the report, settings mismatch on the same --out is an error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import taskology.engine.command as command_module
from taskology.config import load_config
from taskology import demo
from taskology.engine.runner import TaskRunner
from taskology.errors import ConfigError
from taskology.sim import cache as cache_module

TASKS = ("depth", "normals", "segmentation", "motion", "detection", "tracking")
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
    assert len(shards) == 3 and cache_module.recorded_world(shards[0].parent) == json.loads(
        (out / "world.json").read_text())["digest"]

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
    # the LiDAR tasks' boxes and tracks of the test sequence, written by the evaluation, drawn from above
    for arm in ("alone", "collective"):
        assert len(list((out / arm / "detections").glob("*.npz"))) == 1  # data.test_sequences=1
    assert "## Detections and tracks (held-out test sequences)" in text
    bevs = sorted(report_dir.glob("bev_*.png"))
    assert len(bevs) == 4 and all(f"]({p.name})" in text for p in bevs)

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
    varied = load_config(demo.DEMO_CONFIG, ["sim.ego_speed_mps=[2.0, 12.0]"])
    assert demo.sim_cache_key(varied.sim) != demo.sim_cache_key(base.sim)
    # the key caches were made under before the sim.ego_speed_* options existed (commit 24ee17a), for the demo's
    # sim settings of then (6 sequences, no LiDAR)
    then = load_config(demo.DEMO_CONFIG, ["sim.sequences=6", "sim.lidar_beams=0"])
    assert demo.sim_cache_key(then.sim) == "602a09846d8b"


def test_an_unreadable_cached_shard_is_set_aside_and_simulated_again(tmp_path: Path) -> None:
    from rich.console import Console

    config = load_config(demo.DEMO_CONFIG, tiny_overrides())
    first = demo.ensure_sim_data(config, tmp_path, Console(quiet=True))
    shard = sorted(first.root.glob("*.h5"))[1]
    shard.write_bytes(b"not hdf5")
    again = demo.ensure_sim_data(config, tmp_path, Console(quiet=True))
    assert again == first._replace(simulated=1)
    assert shard.with_name(shard.name + ".stale-0").read_bytes() == b"not hdf5"  # set aside, not deleted


def test_an_out_trained_on_another_world_is_refused(tmp_path: Path) -> None:
    demo.check_out_world(tmp_path, "aaaa")
    demo.check_out_world(tmp_path, "aaaa")
    with pytest.raises(ConfigError, match=f"{tmp_path} holds demo runs trained on simulated world aaaa; .* world bbbb"):
        demo.check_out_world(tmp_path, "bbbb")


def test_other_settings_on_the_same_out_are_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    from taskology.config import save_config

    wanted = load_config(demo.DEMO_CONFIG, tiny_overrides("train.mode=alone", f"data.root={tmp_path}"))
    saved = load_config(demo.DEMO_CONFIG, tiny_overrides("train.mode=alone", f"data.root={tmp_path}",
                                                         "tasks.depth.lr=0.01"))
    save_config(saved, tmp_path / "demo" / "alone" / "config.yaml")
    monkeypatch.setattr(command_module, "train_command", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ConfigError, match=r"tasks.depth.lr: saved 0.01, now 0.001\); use another --out"):
        demo.run_arm("alone", tmp_path / "demo", wanted, [], "none", demo._console())


@pytest.mark.slow  # a local Dask cluster starting on the loaded 2-core machine: ~40-60 s wall
@pytest.mark.timeout(300)
def test_ctrl_c_stops_a_distributed_run_cleanly(tmp_path: Path) -> None:
    """SIGINT to the whole process group (a terminal Ctrl-C) while two task actors and the SimActor
    run: exit 130 within seconds, a final checkpoint per task, manifest 'interrupted', one resume line,
    no temp files, no process of the group left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from simdata import make_sim_root

    data = make_sim_root(tmp_path / "data")
    run = tmp_path / "run"
    overrides = [f"data.root={data}", "data.camera=32x96", "sim.camera=32x96", "sim.frames=3", "sim.lidar_beams=0",
                 "data.test_sequences=1", "train.steps=100000", "train.device=cpu", "train.mediator_batch_size=2",
                 "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "exchange.live_mediator=true",
                 "train.log_every=2",
                 "tasks.segmentation.enabled=false", "tasks.motion.enabled=false",
                 "tasks.detection.enabled=false", "tasks.tracking.enabled=false"]
    for t in ("depth", "normals"):
        overrides += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.label_fraction=1.0"]
    exe = Path(sys.executable).with_name("taskology")
    proc = subprocess.Popen([str(exe), "train", str(demo.DEMO_CONFIG), *overrides, "--cluster", "local",
                             "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 200
        while time.time() < deadline and len(list((run / "tensorboard").glob("*/events*"))) < 2:
            time.sleep(0.5)
        time.sleep(5)  # a few steps (and a SimActor shard in progress)
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-2000:]
    assert took < 30, f"stopping took {took:.0f} s"
    assert f"taskology train --resume {run}" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"
    for task in ("depth", "normals"):
        assert list((run / "checkpoints" / task).glob("step_*.pt")), f"no final checkpoint of {task}"
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    left: list[str] = []
    for _ in range(20):  # worker processes exit within seconds of the driver
        left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.5)
    detail = subprocess.run(["ps", "-o", "pid,etime,cmd", "-p", ",".join(left)], capture_output=True,
                            text=True).stdout if left else ""
    assert not left, f"processes of the run still alive 10 s after it ended:\n{detail}"


def test_an_arm_without_detections_is_evaluated_again_before_the_report(tmp_path: Path, monkeypatch) -> None:
    from taskology.config import save_config

    calls: list[tuple[Path, str]] = []
    monkeypatch.setattr(command_module, "eval_command", lambda run_dir, split: calls.append((run_dir, split)))
    wanted = load_config(demo.DEMO_CONFIG, tiny_overrides("train.mode=alone", f"data.root={tmp_path}"))
    save_config(wanted, tmp_path / "demo" / "alone" / "config.yaml")
    demo.ensure_detections("alone", tmp_path / "demo", wanted, demo._console())
    assert calls == [(tmp_path / "demo" / "alone", "test")]
    (tmp_path / "demo" / "alone" / "detections").mkdir()
    (tmp_path / "demo" / "alone" / "detections" / "seed0-seq00002.npz").write_bytes(b"")
    demo.ensure_detections("alone", tmp_path / "demo", wanted, demo._console())
    camera_only = load_config(demo.DEMO_CONFIG, tiny_overrides("tasks.tracking.enabled=false"))
    demo.ensure_detections("alone", tmp_path / "nowhere", camera_only, demo._console())
    assert len(calls) == 1  # detections there, or no tracks to write: nothing evaluated


def test_live_view_prints_plain_lines_when_not_a_terminal() -> None:
    """The demo's driver output goes to a log file or pipe: no redrawing table, a progress line per
    interval instead (the first poll prints, the next within the interval does not)."""
    import io

    from rich.console import Console

    from taskology.cluster.live import LiveView

    class Supervisor:
        def summary(self) -> dict:
            return {"target_steps": 200, "actors": {
                "depth": {"kind": "task", "restarts": 0, "status": {
                    "state": "training", "step": 12, "scalars": {"loss/total": 0.5},
                    "staleness": {"staleness/normals/mean_steps": 4.0, "staleness/normals/mean_s": 1.0}}},
                "normals": {"kind": "task", "restarts": 0, "status": {"state": "done", "step": 200}},
                "sim": {"kind": "sim", "restarts": 0, "status": {"phase": "generating", "shards_available": 3,
                                                                 "frames_per_s": 2.0}}}}

    out = io.StringIO()
    with LiveView(console=Console(file=out, width=60), plain_every_s=60) as view:
        view.update(Supervisor())
        view.update(Supervisor())
    assert out.getvalue() == ("depth 12/200 loss 0.5 stale 4 st / 1.0 s | normals done 200/200 | "
                              "sim 3 shards 2.0 fr/s\n")
