"""TaskActor as a plain object (no cluster): background training, checkpoints, resume, serving."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from fake_runner import FakeRunner  # noqa: E402

from taskology.engine.actor import CheckpointDir, TaskActor, checkpoint_due  # noqa: E402
from taskology.engine.exchange import ExchangePolicy, StalenessLog  # noqa: E402
from taskology.engine.protocol import Predictions  # noqa: E402


def make_actor(run_dir: Path, task: str = "a", collective: bool = True, every: int | None = 5,
               **kw: object) -> TaskActor:
    return TaskActor(task_name=task, runner_cls=FakeRunner,
                     runner_kwargs={"task_name": task, "seed": 3, "collective": collective, "peers": ("b",)},
                     run_dir=str(run_dir), policy=ExchangePolicy(publish_every_steps=4, max_staleness_steps=None),
                     checkpoint_every_steps=every, checkpoint_every_s=None, log_every=0, **kw)


def wait_state(actor: TaskActor, states: set[str], timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = actor.status()
        if st["state"] in states:
            return st
        time.sleep(0.01)
    raise AssertionError(f"actor stuck in {actor.status()['state']}")


@pytest.mark.parametrize("step,last,now,last_t,n,s,due", [
    (10, 5, 0.0, 0.0, 5, None, True), (9, 5, 0.0, 0.0, 5, None, False), (9, 5, 61.0, 0.0, 5, 60.0, True),
    (5, 5, 99.0, 0.0, 5, 1.0, False), (100, 0, 0.0, 0.0, None, None, False), (1, 0, 2.0, 0.0, 0, 1.5, True)])
def test_checkpoint_due(step: int, last: int, now: float, last_t: float, n: int | None, s: float | None,
                        due: bool) -> None:
    assert checkpoint_due(step, last, now, last_t, n, s) is due


def test_checkpoint_dir_side_files_round_trip_and_prune(tmp_path: Path) -> None:
    d = CheckpointDir(tmp_path, keep=2)
    pub = Predictions("a", 7, 123.5, ["s:0", "s:1"], {"y": np.arange(6, dtype=np.float16).reshape(2, 3)})
    for step in (3, 7, 12):
        d.path(step).write_bytes(b"x")
        d.save_side(step, {"last_published_step": step}, pub)
    (tmp_path / ".step_00000099.pt.tmp123").write_bytes(b"half")  # a crashed writer's temp file
    assert d.steps() == [3, 7, 12]
    d.prune()
    assert d.steps() == [7, 12] and not (tmp_path / "step_00000003.exchange.json").exists()
    state, back = d.load_side(12, "a")
    assert state == {"last_published_step": 12}
    assert back.step == 7 and back.wall_time == 123.5 and back.sample_ids == ["s:0", "s:1"]
    assert back.outputs["y"].dtype == np.float16 and np.array_equal(back.outputs["y"], pub.outputs["y"])


def test_training_runs_in_background_and_serves_predictions(tmp_path: Path) -> None:
    actor = make_actor(tmp_path)
    assert actor.start(12) == "training"
    st = wait_state(actor, {"done"})
    assert st["step"] == 12 and "loss/mse" in st["scalars"]
    pubs = actor.predictions_since(-1)
    assert [p.step for p in pubs] == [1, 5, 9]  # publish_every_steps=4
    assert pubs[-1].outputs["y"].dtype == np.float16 and len(pubs[-1].sample_ids) == 8
    assert actor.latest_predictions(9) is None and actor.latest_predictions(8).step == 9
    assert CheckpointDir(tmp_path / "checkpoints" / "a").steps() == [10, 12]  # every 5 (+ final), keep 2
    actor.set_mediator_pool(["x.h5"])
    actor.start(13)
    wait_state(actor, {"done"})
    assert actor.runner.pool == ["x.h5"] and actor.current_step() == 13
    actor.stop()


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = make_actor(tmp_path / "one", every=None)
    straight.start(10)
    wait_state(straight, {"done"})
    straight.stop()

    first = make_actor(tmp_path / "two", every=4)
    first.cache.log.record("b", [2, 5], [0.1, 0.2])  # as if peer b's rows had been used before step 4
    first._relation_terms["b_consistency"] = 3
    first.fetcher.meter.record(1234, 0.01)  # as if 1234 bytes had been fetched
    first_log_at_4 = StalenessLog.from_dict(first.cache.log.to_dict())
    first_terms_at_4 = dict(first._relation_terms)
    first.start(6)  # checkpoints at 4 and at the end (6)
    wait_state(first, {"done"})
    first.stop()
    ckpts = CheckpointDir(tmp_path / "two" / "checkpoints" / "a")
    ckpts.path(6).unlink()  # pretend the worker died between step 4 and 6: work since step 4 is lost
    resumed = make_actor(tmp_path / "two", every=4)
    assert resumed.restored_from == 4 and resumed.status()["step"] == 4
    assert resumed.latest_predictions(-1).step == 1  # the publication saved with checkpoint 4
    # the staleness / relation figures of the first incarnation carry over (they describe the whole run)
    assert resumed.cache.log == first_log_at_4 and resumed._relation_terms == first_terms_at_4
    assert resumed.status()["exchange_bytes"] == 1234
    resumed.start(10)
    wait_state(resumed, {"done"})
    resumed.stop()
    for p, q in zip(straight.runner.model.parameters(), resumed.runner.model.parameters()):
        assert torch.equal(p, q)  # model, optimizer momentum and data RNG all restored bit for bit


def test_failure_in_training_is_reported_not_raised(tmp_path: Path) -> None:
    actor = make_actor(tmp_path)

    def boom() -> dict:
        raise RuntimeError("nan loss")

    actor.runner.train_step = boom  # type: ignore[method-assign]
    actor.start(5)
    st = wait_state(actor, {"failed"})
    assert st["error"].startswith("RuntimeError: nan loss")
    actor.stop()


def test_stop_interrupts_training(tmp_path: Path) -> None:
    actor = TaskActor(task_name="a", runner_cls=FakeRunner,
                      runner_kwargs={"task_name": "a", "seed": 0, "step_sleep_s": 0.02}, run_dir=str(tmp_path),
                      policy=ExchangePolicy(), checkpoint_every_steps=None, checkpoint_every_s=None, log_every=0)
    actor.start(10_000)
    time.sleep(0.2)
    assert actor.stop() == "stopped"
    step = actor.current_step()
    assert 0 < step < 10_000
    assert CheckpointDir(tmp_path / "checkpoints" / "a").steps() == [step]  # final checkpoint on stop


def test_alone_mode_does_not_publish(tmp_path: Path) -> None:
    actor = make_actor(tmp_path, collective=False)
    actor.runner.predict_mediator = None  # type: ignore[assignment] # would raise if called
    actor.start(6)
    st = wait_state(actor, {"done", "failed"})
    assert st["state"] == "done" and st["published_step"] is None
    actor.stop()


def test_status_names_the_pool_taken_up_before_the_last_publication(tmp_path: Path) -> None:
    """The supervisor advances the live pool only once every actor has published on the one it pushed;
    the actor says which pool it had taken up at its last publication (also when the pool was
    unreadable and kept: it was handled, so the supervisor must not wait for it forever)."""
    from types import SimpleNamespace

    from taskology.engine.actor import pool_token
    from taskology.engine.supervisor import Supervisor

    actor = make_actor(tmp_path)
    actor.start(5)  # publishes at steps 1 and 5, no pool taken up yet
    assert wait_state(actor, {"done"})["published_pool"] is None
    actor.set_mediator_pool(["x.h5"])
    assert actor.status()["published_pool"] is None  # pushed, not yet taken up nor published on
    actor.start(8)  # takes the pool up before step 6; publishes at step 9 only: not yet
    assert wait_state(actor, {"done"})["published_pool"] is None
    actor.start(9)
    assert wait_state(actor, {"done"})["published_pool"] == pool_token(["x.h5"])
    actor.runner.set_mediator_pool = lambda paths: False  # type: ignore[method-assign] # unreadable: kept
    actor.set_mediator_pool(["y.h5"])
    actor.start(13)
    st = wait_state(actor, {"done"})
    assert st["published_pool"] == pool_token(["y.h5"]) and st["mediator_pools_applied"] == 1
    actor.stop()

    def supervisor(pool, *published):
        tasks = {f"t{i}": SimpleNamespace(last_status={"published_pool": p}) for i, p in enumerate(published)}
        return SimpleNamespace(_pool=pool, tasks=tasks)

    done = Supervisor._published_since_push
    assert done(supervisor([], None, None))  # no pool pushed yet
    assert done(supervisor(["y.h5"], pool_token(["y.h5"]), pool_token(["y.h5"])))
    assert not done(supervisor(["y.h5"], pool_token(["y.h5"]), pool_token(["x.h5"])))  # one on the old pool
    assert not done(supervisor(["y.h5"], pool_token(["y.h5"]), None))
