"""``taskology bench faults``: the seeded schedule, the steps-lost and within-spread rules, the rows built from
the workers' statuses and logs, the tables, the file check, and the in-worker injections (in this process, and
the fire-once marker across a real worker restart)."""
from __future__ import annotations

import errno
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from taskology.bench import fault_campaign
from taskology.bench import fault_injection as fi
from taskology.bench import faults
from taskology.bench.fault_campaign import FaultEvent
from taskology.bench.fault_injection import Injection
from taskology.errors import ConfigError

TASKS = ["depth", "normals", "segmentation", "motion", "detection", "tracking"]


def test_schedule_is_seeded_within_the_run_and_at_distinct_steps() -> None:
    for seed in range(20):
        events = faults.make_schedule(seed, TASKS, 60, 10, ["depth", "normals"], 15)
        assert events == faults.make_schedule(seed, TASKS, 60, 10, ["depth", "normals"], 15)
        kinds = [e.kind for e in events]
        assert sorted(kinds) == sorted(["kill_task"] * 3 + ["kill_sim", "nan_publication", "enospc_checkpoint",
                                                             "kill_driver"])
        steps = [e.at_step for e in events]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
        assert all(11 <= s <= 49 for s in steps)  # a checkpoint before, one interval after
        assert kinds[-1] == "kill_driver" and steps[-1] >= 21
        killed = [e.task for e in events if e.kind == "kill_task"]
        assert len(set(killed)) == 3 and set(killed) <= set(TASKS)
        nan = next(e for e in events if e.kind == "nan_publication")
        assert nan.task in ("depth", "normals") and nan.at_step >= 15
    assert faults.make_schedule(1, TASKS, 60, 10, TASKS, 15) != faults.make_schedule(2, TASKS, 60, 10, TASKS, 15)
    with pytest.raises(ConfigError, match="no room for 7 faults"):
        faults.make_schedule(0, TASKS, 16, 5, TASKS, 6)  # [6, 10]: 5 steps for 7 faults


def test_steps_lost_is_the_step_reached_minus_the_step_resumed_from() -> None:
    assert fault_campaign.steps_lost(37, 30) == 7
    assert fault_campaign.steps_lost(12, None) == 12  # no checkpoint yet: from the start
    assert fault_campaign.steps_lost(20, 24) == -4  # resumed from a newer checkpoint than the step seen


def test_within_spread_widens_the_unfaulted_range_by_itself() -> None:
    reference = [0.30, 0.32]  # range 0.02: allowed [0.28, 0.34]
    assert faults.within_spread(0.28, reference) and faults.within_spread(0.34, reference)
    assert not faults.within_spread(0.2799, reference) and not faults.within_spread(0.3401, reference)
    assert not faults.within_spread(float("nan"), reference)
    assert faults.within_spread(0.5, [0.5, 0.5]) and not faults.within_spread(0.5001, [0.5, 0.5])
    assert faults.within_spread(0.31, [0.30, float("nan"), 0.32])  # a NaN reference value is left out
    with pytest.raises(ValueError):
        faults.within_spread(1.0, [float("nan")])
    rows = faults.compare_metrics({"depth": {"abs_rel": 0.35, "step": 60.0}},
                                  [{"depth": {"abs_rel": 0.30, "step": 60.0}, "seg": {"iou": float("nan")}},
                                   {"depth": {"abs_rel": 0.32, "step": 60.0}, "seg": {"iou": float("nan")}}])
    assert [(r["task"], r["metric"], r["within"]) for r in rows] == [("depth", "abs_rel", False), ("seg", "iou", None)]
    assert math.isnan(rows[1]["faulted"])  # missing in the faulted run


def test_tables_render_each_fault_and_metric() -> None:
    table = faults.render_fault_table([
        {"fault": "SIGKILL a|b", "when": "step 3", "detected": "x", "recovered": "y", "steps_lost": 0, "survived": True},
        {"fault": "NaN", "when": "-", "detected": "-", "recovered": "-", "steps_lost": None, "survived": None},
        {"fault": "ENOSPC", "when": "-", "detected": "-", "recovered": "-", "steps_lost": 4, "survived": False}])
    assert table.splitlines()[2:] == ["| SIGKILL a/b | step 3 | x | y | 0 | yes |", "| NaN | - | - | - | - | not exercised |",
                                      "| ENOSPC | - | - | - | 4 | **no** |"]
    metrics = faults.render_metric_table([
        {"task": "seg", "metric": "iou", "faulted": 0.1, "unfaulted": [float("nan")], "within": None},
        {"task": "seg", "metric": "acc", "faulted": 0.5, "unfaulted": [0.7, 0.71], "within": False},
        {"task": "seg", "metric": "miou", "faulted": 0.3, "unfaulted": [0.3, 0.31], "within": True}])
    assert metrics.splitlines()[2] == "| seg | 1 of 2 (1 undefined in every run) | acc 0.5 (0.7, 0.71) |"


def _snap(pid: int, **entry: object) -> dict:
    return {"w": {"pid": pid, "actors": [{"kind": "task", "task": "depth", **entry}], "threads": []}}


def test_enospc_row_tells_continued_training_from_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "depth" / "step_00000020.pt"
    marker = {"time": 100.0, "step": 20, "path": str(path), "pid": 7}
    event = FaultEvent("enospc_checkpoint", 15, "depth")
    (tmp_path / "workers.log").write_text(f"x\ndepth: checkpoint of step 20 not written: {path}: no space left\n")
    went_on = [(99.0, _snap(7, state="training", checkpoint_step=10)),
               (101.0, _snap(7, state="training", checkpoint_step=10)),
               (110.0, _snap(7, state="training", checkpoint_step=30))]
    row = faults.enospc_row(marker, went_on, [], tmp_path, 0.0, event)
    assert row["survived"] and row["steps_lost"] == 0 and "no space left" in row["detected"]
    assert "same process; next checkpoint at step 30" in row["recovered"]
    # the actor failed and was recreated from step 10: 10 steps lost; a later kill of the task ends the window
    restarted = went_on[:1] + [(101.0, _snap(7, state="failed", error="OSError: [Errno 28]", checkpoint_step=10)),
                               (105.0, _snap(8, state="training", checkpoint_step=10, restored_from=10)),
                               (200.0, _snap(9, state="training", checkpoint_step=40))]
    row = faults.enospc_row(marker, restarted, [(150.0, "kill_task", "depth")], tmp_path, 0.0, event)
    assert row["steps_lost"] == 10 and not row["survived"]  # no later save before the kill
    assert "status: failed (OSError: [Errno 28])" in row["detected"] and "resumed from step 10" in row["recovered"]
    path.parent.mkdir(parents=True)
    (path.parent / "step_00000030.pt").write_bytes(b"x")  # a later checkpoint on disk counts too
    row = faults.enospc_row(marker, restarted, [(150.0, "kill_task", "depth")], tmp_path, 0.0, event)
    assert row["survived"] and "next checkpoint at step 30" in row["recovered"]
    (path.parent / f".{path.name}.1-2-ab.tmp.pt").write_bytes(b"half")
    assert not faults.enospc_row(marker, went_on, [], tmp_path, 0.0, event)["survived"]  # its temp file was left
    assert not faults.enospc_row(None, went_on, [], tmp_path, 0.0, event)["survived"]  # never fired


def test_nan_row_counts_drops_once_per_task_and_sees_non_finite_losses(tmp_path: Path) -> None:
    (tmp_path / "driver-0.log").write_text("train done: 2 dropped publications\n")
    (tmp_path / "workers.log").write_text("dropped the publication of peer normals at its step 7: NaN\n")
    history = [(5.0, _snap(3, dropped_publications=1, loss=0.5)), (6.0, _snap(3, dropped_publications=1, loss=0.4)),
               (7.0, _snap(4, dropped_publications=1, loss=float("nan")))]  # restarted: the counter carried over
    row = faults.nan_row({"time": 4.0, "step": 7}, history, ["depth"], tmp_path, 0.0,
                         FaultEvent("nan_publication", 5, "normals"))
    assert row["dropped_publications"] == 1 and row["nonfinite_loss_tasks"] == ["depth"]
    assert row["detected"].endswith("log: dropped the publication of peer normals at its step 7: NaN")
    assert row["survived"] is None  # decided from the final metrics


def test_check_run_files_finds_a_truncated_checkpoint_and_temp_files(tmp_path: Path) -> None:
    from taskology.engine.checkpoints import save_checkpoint

    folder = tmp_path / "checkpoints" / "depth"
    save_checkpoint({"step": 10, "w": torch.ones(3)}, folder / "step_00000010.pt")
    save_checkpoint({"step": 20, "w": torch.ones(300)}, folder / "step_00000020.pt")
    (folder / "step_00000020.exchange.json").write_text("{}")
    np.savez(folder / "step_00000020.pub.npz", sample_ids=np.asarray(["a"]), out_depth=np.zeros((1, 2)))
    whole = faults.check_run_files(tmp_path)
    assert whole == {"checked": 4, "broken": [], "temp_files": [], "quarantined": []}
    broken = folder / "step_00000020.pt"
    os.truncate(broken, broken.stat().st_size // 2)
    (folder / ".step_00000030.pt.1-2-ab.tmp.pt").write_bytes(b"x")
    found = faults.check_run_files(tmp_path)
    assert [b.split(":")[0] for b in found["broken"]] == ["checkpoints/depth/step_00000020.pt"]
    assert found["temp_files"] == ["checkpoints/depth/.step_00000030.pt.1-2-ab.tmp.pt"]
    assert faults.check_run_files(tmp_path, skip=[broken])["broken"] == []


def test_enospc_injection_fails_one_write_half_way_then_lets_saves_through(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "save", torch.save)  # restored after the test
    injection = Injection("enospc_checkpoint", "depth", at_step=20)
    fi.INSTALLERS[injection.kind](tmp_path / injection.marker_name, injection)
    folder = tmp_path / "checkpoints" / "depth"
    folder.mkdir(parents=True)
    torch.save({"w": torch.ones(100)}, folder / "step_00000010.pt")  # before its step: written
    torch.save({"w": torch.ones(100)}, tmp_path / "checkpoints" / "step_00000030.pt")  # another folder
    temp = folder / ".step_00000030.pt.1-2-ab.tmp.pt"
    with open(temp, "wb") as handle, pytest.raises(OSError) as raised:
        torch.save({"w": torch.ones(100)}, handle)
    assert raised.value.errno == errno.ENOSPC and str(temp) in str(raised.value)
    whole = (folder / "step_00000010.pt").stat().st_size
    assert 0 < temp.stat().st_size < whole  # half the bytes reached the file, as on a full disk
    marker = fi.read_markers(tmp_path)[injection.marker_name]
    assert marker["step"] == 30 and marker["path"] == str(folder / "step_00000030.pt")
    torch.save({"w": torch.ones(100)}, folder / "step_00000040.pt")  # fired once: the next save is whole
    assert torch.load(folder / "step_00000040.pt", weights_only=True)["w"].shape == (100,)


def test_nan_injection_poisons_one_publication_of_its_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.engine.protocol import Predictions
    from taskology.engine.runner import TaskRunner

    def predict(self: object) -> Predictions:
        return Predictions(self.task_name, self.step, 0.0, ["s0", "s1"],  # type: ignore[attr-defined]
                           {"depth": np.ones((2, 1, 2, 2), np.float16), "valid": np.ones((2,), np.int64)})

    monkeypatch.setattr(TaskRunner, "predict_mediator", predict)
    injection = Injection("nan_publication", "depth", at_step=10)
    fi.INSTALLERS[injection.kind](tmp_path / injection.marker_name, injection)

    class Runner:
        def __init__(self, task_name: str, step: int) -> None:
            self.task_name, self.step = task_name, step

    def outputs(task: str, step: int) -> dict:
        return TaskRunner.predict_mediator(Runner(task, step)).outputs  # type: ignore[arg-type]

    assert np.isfinite(outputs("depth", 9)["depth"]).all()  # before its step
    assert np.isfinite(outputs("normals", 12)["depth"]).all()  # another task
    poisoned = outputs("depth", 12)
    assert np.isnan(poisoned["depth"]).all() and (poisoned["valid"] == 1).all()  # integers untouched
    assert np.isfinite(outputs("depth", 13)["depth"]).all()  # once
    assert fi.read_markers(tmp_path)[injection.marker_name]["step"] == 12


def test_plugin_fires_once_across_a_worker_restart(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    def probe() -> str:
        import sys

        return sys.modules["taskology.bench.fault_injection"].probe_value()

    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        client.register_plugin(fi.FaultPlugin(tmp_path, [Injection("probe")]))
        assert list(client.run(probe).values()) == ["fired"]
        assert list(client.run(probe).values()) == ["original"]
        (address, pid), = client.run(os.getpid).items()
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 60
        while time.time() < deadline:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            if workers and address not in workers:
                break
            time.sleep(0.1)
        assert address not in workers, "the nanny did not restart the worker"
        assert list(client.run(fi.is_installed, "probe").values()) == [True]  # set up in the new process too
        assert list(client.run(probe).values()) == ["original"]  # but the marker holds it back
    assert fi.read_markers(tmp_path)["probe-any.fired"]["pid"] == pid


def test_a_truncated_checkpoint_the_bench_did_not_see_resumed_is_judged_from_the_log(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "normals" / "step_00000060.pt"
    row = {"survived": None, "recovered": "not exercised", "steps_lost": None,
           "corrupt": {"path": str(path), "step": 60, "previous": 50}}
    unseen = dict(row)
    faults.corrupt_detection(unseen, tmp_path)  # no log line: stays not exercised
    assert unseen["survived"] is None and unseen["detected"] == "-"
    (tmp_path / "workers.log").write_text(f"{path.parent}: resuming from step 50: {path.name} unreadable (truncated), "
                                          f"set aside as {path.name}.corrupt\n")
    faults.corrupt_detection(row, tmp_path)
    assert row["survived"] and row["steps_lost"] == 10 and "resumed from step 50" in row["recovered"]
    assert row["detected"].startswith("log: ") and "unreadable" in row["detected"]
