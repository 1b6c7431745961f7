"""Checkpoint faults on real TaskActors and TaskRunners: an unreadable newest checkpoint at resume (the run
falls back to the previous one and says so in one line), and a checkpoint write that finds the disk full
(the previous checkpoint stays whole, no temp file is left, training goes on and a later save succeeds)."""
from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import synthetic_task_data  # noqa: E402

import taskology.engine.checkpoints as checkpoints  # noqa: E402
from taskology.atomic import DiskFullError  # noqa: E402
from taskology.config import load_config  # noqa: E402
from taskology.engine.actor import TaskActor  # noqa: E402
from taskology.engine.checkpoints import (CheckpointDir, latest_common_step, load_checkpoint,  # noqa: E402
                                          save_checkpoint)
from taskology.engine.exchange import ExchangePolicy  # noqa: E402
from taskology.engine.peers import InProcessPeerView  # noqa: E402
from taskology.engine.runner import TaskRunner  # noqa: E402
from taskology.errors import DataError  # noqa: E402

TASK = "depth"
LOGGER = "taskology.engine"


def tiny_config() -> Any:
    return load_config(None, ["train.mediator_batch_size=2", f"tasks.{TASK}.width=4", f"tasks.{TASK}.batch_size=2"])


def make_actor(run_dir: Path, config: Any, every: int | None = 2) -> TaskActor:
    """A real TaskActor around a real TaskRunner (collective, no peers: it publishes, so side files hold a
    publication too) on tiny synthetic data."""
    return TaskActor(task_name=TASK, runner_cls=TaskRunner,
                     runner_kwargs=dict(task_name=TASK, config=config, data_root=run_dir, run_dir=run_dir, seed=0,
                                        collective=True, data=synthetic_task_data()),
                     run_dir=str(run_dir), policy=ExchangePolicy(publish_every_steps=1, max_staleness_steps=None),
                     checkpoint_every_steps=every, checkpoint_every_s=None, log_every=0)


def train(actor: TaskActor, steps: int) -> dict:
    actor.start(steps)
    state = actor.join(timeout_s=60)
    status = actor.status()
    actor.stop()
    assert state == "done", status["error"]
    return status


def model_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def same_weights(runner: TaskRunner, model: dict[str, torch.Tensor]) -> bool:
    got = runner.model.state_dict()
    return got.keys() == model.keys() and all(torch.equal(got[k], model[k]) for k in got)


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def config() -> Any:
    return tiny_config()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, config: Any) -> Path:
    """A run trained to step 4 with a checkpoint every 2 steps: checkpoints 2 and 4 with their side files."""
    run = tmp_path_factory.mktemp("trained")
    train(make_actor(run, config), 4)
    assert CheckpointDir(run / "checkpoints" / TASK).steps() == [2, 4]
    return run


@pytest.fixture()
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained run for one test to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _wrong_schema(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)  # a whole, valid zip: not a runner state
    path.write_bytes(buffer.getvalue())


def _overwritten_tensor_bytes(path: Path) -> None:
    """Garbage over the middle of the largest tensor: torch.load would load it without complaint."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as handle:
        handle.seek(info.header_offset + 26)  # the local header's name and extra field lengths
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
        handle.seek(info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2)
        handle.write(b"\xff" * 16)


def _older_step(path: Path) -> None:
    shutil.copyfile(path.with_name("step_00000002.pt"), path)  # whole and valid, but of step 2


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncated, "not a whole zip archive"),
    "random bytes": (_random_bytes, "not a whole zip archive"),
    "empty": (_empty, "empty file"),
    "valid zip, wrong schema": (_wrong_schema, "holds no step, model, optimizer"),
    "overwritten tensor bytes": (_overwritten_tensor_bytes, "CRC-32 mismatch"),
    "another step's state": (_older_step, "holds step 2, not 4"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_an_unreadable_newest_checkpoint_resumes_from_the_previous_one(run: Path, config: Any, kind: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    folder = run / "checkpoints" / TASK
    older = model_of(folder / "step_00000002.pt")
    newest = model_of(folder / "step_00000004.pt")
    assert not all(torch.equal(older[k], newest[k]) for k in older)  # the two checkpoints tell apart
    corrupt, reason = CORRUPTIONS[kind]
    corrupt(folder / "step_00000004.pt")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        actor = make_actor(run, config)
    assert actor.restored_from == 2 and actor.status()["step"] == 2
    assert same_weights(actor.runner, older)
    assert actor.latest_predictions(-1).step == 2  # the publication saved with checkpoint 2, not 4's
    lines = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"{folder}: resuming from step 2: step_00000004.pt unreadable (" in lines[0] and reason in lines[0]
    # the unreadable step is set aside whole (kept for a person to look at) and no longer counts
    assert CheckpointDir(folder).steps() == [2]
    assert {"step_00000004.pt.corrupt", "step_00000004.exchange.json.corrupt"} <= set(files_of(folder))
    # training goes on from step 2 and writes step 4 again, readable this time
    train(actor, 4)
    again = make_actor(run, config)
    assert again.restored_from == 4 and same_weights(again.runner, actor.runner.model.state_dict())
    again.stop()


@pytest.mark.parametrize("side", ["exchange.json", "pub.npz"])
def test_a_step_whose_side_file_is_unreadable_is_passed_over_like_its_checkpoint(
        run: Path, config: Any, side: str, caplog: pytest.LogCaptureFixture) -> None:
    """The exchange state and publication must match the weights they are resumed with: a step whose side
    file does not read back is not resumed with an empty or foreign side state, but passed over."""
    folder = run / "checkpoints" / TASK
    older = model_of(folder / "step_00000002.pt")
    side_state_2, _ = CheckpointDir(folder).load_side(2, TASK)
    (folder / f"step_00000004.{side}").write_bytes(b"{\"step\": 4, \"trunc")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        actor = make_actor(run, config)
    assert actor.restored_from == 2 and same_weights(actor.runner, older)
    assert actor.last_published_step == side_state_2["last_published_step"] == 2
    assert f"step_00000004.{side} unreadable" in caplog.text
    assert CheckpointDir(folder).steps() == [2] and f"step_00000004.{side}.corrupt" in files_of(folder)
    actor.stop()


def test_no_readable_checkpoint_is_one_error_naming_the_folder_and_changes_nothing(run: Path, config: Any) -> None:
    folder = run / "checkpoints" / TASK
    _truncated(folder / "step_00000004.pt")
    _empty(folder / "step_00000002.pt")
    before = files_of(folder)
    with pytest.raises(DataError) as info:
        make_actor(run, config)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{folder}: none of the 2 checkpoint(s) is readable")
    assert "step_00000004.pt" in message
    assert files_of(folder) == before  # nothing set aside: the next attempt does not silently start at step 0


def test_a_folder_without_checkpoints_starts_from_step_zero(tmp_path: Path, config: Any) -> None:
    actor = make_actor(tmp_path, config)
    assert actor.restored_from is None and actor.runner.step == 0
    actor.stop()


def test_the_in_process_resume_step_passes_over_an_unreadable_checkpoint_of_any_task(
        tmp_path: Path, config: Any, caplog: pytest.LogCaptureFixture) -> None:
    """``latest_common_step`` (the in-process run's resume step) takes the newest step every task can read."""
    for task in ("depth", "normals"):
        runner = TaskRunner(task_name=task, config=config, data_root=tmp_path, run_dir=tmp_path,
                            peer_view=InProcessPeerView(), seed=0, collective=False, data=synthetic_task_data())
        for step in (2, 4):
            runner.step = step
            runner.save_checkpoint(checkpoints.checkpoint_path(tmp_path, task, step))
    assert latest_common_step(tmp_path, ["depth", "normals"]) == 4
    _wrong_schema(checkpoints.checkpoint_path(tmp_path, "normals", 4))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_common_step(tmp_path, ["depth", "normals"]) == 2
    assert "resuming from step 2" in caplog.text and "normals/step_00000004.pt" in caplog.text
    _empty(checkpoints.checkpoint_path(tmp_path, "depth", 2))
    with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / 'checkpoints'))}: no step with a readable"):
        latest_common_step(tmp_path, ["depth", "normals"])


# -- a full disk while writing a checkpoint ------------------------------------------------------------
class _FillingDisk:
    """Stands in for ``open`` in :mod:`taskology.engine.checkpoints`: files opened for writing take
    ``room`` bytes, then every write raises ENOSPC (the bytes before it really reach the temp file), for
    the first ``times`` files opened; later files are written normally (space has come back)."""

    def __init__(self, room: int, times: int = 1) -> None:
        self.room, self.times, self.failed = room, times, 0

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(path, mode, *args, **kwargs)
        if "w" not in mode or self.failed >= self.times:
            return handle
        self.failed += 1
        return _FullFile(handle, self.room)


class _FullFile:
    def __init__(self, handle: Any, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        if self.handle.tell() + len(data) > self.room:
            written = self.handle.write(bytes(data)[: max(self.room - self.handle.tell(), 0)])
            self.handle.flush()
            assert written >= 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> "_FullFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


@pytest.mark.parametrize("same_step", [False, True], ids=["next step", "same step again"])
def test_a_checkpoint_write_that_finds_the_disk_full_keeps_the_previous_checkpoint(
        tmp_path: Path, config: Any, monkeypatch: pytest.MonkeyPatch, same_step: bool) -> None:
    runner = TaskRunner(task_name=TASK, config=config, data_root=tmp_path, run_dir=tmp_path,
                        peer_view=InProcessPeerView(), seed=0, collective=False, data=synthetic_task_data())
    folder = tmp_path / "checkpoints" / TASK
    runner.train_step()
    old = folder / "step_00000001.pt"
    runner.save_checkpoint(old)
    old_bytes = old.read_bytes()
    runner.train_step()
    target = old if same_step else folder / "step_00000002.pt"
    disk = _FillingDisk(room=len(old_bytes) // 2)  # the disk fills half-way through the new file
    monkeypatch.setattr(checkpoints, "open", disk, raising=False)
    with pytest.raises(DiskFullError) as info:
        runner.save_checkpoint(target)
    assert disk.failed == 1 and info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    message = str(info.value)
    assert message.startswith(f"{target}: no space left on device") and "\n" not in message
    assert old.read_bytes() == old_bytes and files_of(folder) == ["step_00000001.pt"]  # no temp, no new file
    save_checkpoint(runner.state_dict(), target)  # space is back: the same save succeeds
    assert load_checkpoint(target)["step"] == 2


def test_training_goes_on_past_a_failed_checkpoint_and_a_later_one_succeeds(
        tmp_path: Path, config: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Checkpoints every 2 steps; the one of step 2 finds the disk full (its side files are written, its
    ``.pt`` is not). Training goes on to step 6, the failure is reported once, the retry one step later (3)
    succeeds, then 5 and the final 6 are written (the newest two kept), and a new actor resumes from step 6
    with the trained weights."""
    disk = _FillingDisk(room=4096)
    monkeypatch.setattr(checkpoints, "open", disk, raising=False)
    actor = make_actor(tmp_path, config)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        status = train(actor, 6)
    assert disk.failed == 1 and status["state"] == "done" and status["step"] == 6
    assert status["checkpoint_failures"] == 1 and status["checkpoint_step"] == 6
    failures = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    folder = tmp_path / "checkpoints" / TASK
    assert len(failures) == 1 and failures[0] == status["checkpoint_last_error"] and "\n" not in failures[0]
    assert failures[0].startswith(f"{TASK}: checkpoint of step 2 not written: {folder / 'step_00000002.pt'}: "
                                  "no space left on device")
    # steps 5 and 6 kept; the side files the failed save of step 2 left behind were pruned; no temp file
    assert files_of(folder) == [f"step_0000000{s}.{ext}" for s in (5, 6) for ext in ("exchange.json", "pt", "pub.npz")]
    resumed = make_actor(tmp_path, config)
    assert resumed.restored_from == 6 and same_weights(resumed.runner, actor.runner.model.state_dict())
    resumed.stop()


def test_a_failed_checkpoint_is_retried_with_a_back_off_up_to_one_interval(
        tmp_path: Path, config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the disk stays full, attempts 1, 2, then 3 (the interval) steps after the failed one (each
    reported once), not one per step; the final checkpoint is attempted whatever the back-off."""
    disk = _FillingDisk(room=0, times=10**6)
    monkeypatch.setattr(checkpoints, "open", disk, raising=False)
    actor = make_actor(tmp_path, config, every=3)
    actor.start(13)
    actor.join(timeout_s=60)
    status = actor.status()
    actor.stop()
    assert status["state"] == "done" and status["step"] == 13
    # attempts at 3 (due), 4 (1 after), 6 (2 after), 9 and 12 (3 after: the interval caps the back-off) and the
    # final 13 (stop() tries nothing new)
    assert status["checkpoint_failures"] == 6 == disk.failed
    assert status["checkpoint_last_error"].startswith(f"{TASK}: checkpoint of step 13 not written")
    assert CheckpointDir(tmp_path / "checkpoints" / TASK).steps() == []
    assert not [p for p in (tmp_path / "checkpoints" / TASK).iterdir() if p.name.endswith(".pt")]
