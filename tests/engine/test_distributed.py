"""Supervised collective run on a real LocalCluster (loopback) with fake trainables; fault injection."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
import fake_runner  # noqa: E402

from taskology.cluster.session import ClusterSpec, open_cluster  # noqa: E402
from taskology.cluster.supervision import RestartPolicy  # noqa: E402
from taskology.engine.actor import CheckpointDir, TaskActor  # noqa: E402
from taskology.engine.supervisor import ActorSlot, Supervisor  # noqa: E402
from taskology.engine.exchange import ExchangePolicy  # noqa: E402


EVERY = 20
TARGET = 260


def task_slot(name: str, peer: str, run_dir: Path) -> ActorSlot:
    return ActorSlot(name=name, cls=TaskActor, kwargs=dict(
        task_name=name, runner_cls=fake_runner.FakeRunner, run_dir=str(run_dir),
        runner_kwargs={"task_name": name, "seed": 1 if name == "a" else 2, "peers": (peer,), "step_sleep_s": 0.015},
        policy=ExchangePolicy(publish_every_steps=10, refresh_every_s=0.1, max_staleness_steps=200,
                              max_staleness_s=None),
        checkpoint_every_steps=EVERY, checkpoint_every_s=None, log_every=50))


@pytest.mark.timeout(150)
def test_two_tasks_exchange_and_survive_three_sigkills(tmp_path: Path) -> None:
    kills: list[dict] = []
    thresholds = [50, 110, 170]

    def inject(sup: Supervisor) -> None:
        if not thresholds:
            return
        # the training task with the fewest steps that passed the next threshold (it will not finish first)
        training = sorted((s.last_status.get("step", 0), n) for n, s in sup.slots.items()
                          if s.lost_since is None and s.last_status.get("state") == "training")
        for _step, name in training:
            try:
                status = sup.slots[name].handle.status().result(timeout=5)
            except Exception:  # noqa: BLE001 - it died meanwhile; the supervisor sees it next poll
                continue
            if status["step"] >= thresholds[0] and status["state"] == "training":
                thresholds.pop(0)
                os.kill(status["pid"], signal.SIGKILL)
                kills.append({"task": name, "step_before_kill": status["step"], "pid": status["pid"],
                              "t": time.time()})
                return

    t_start = time.time()
    with open_cluster(ClusterSpec(address="local", dashboard=False, spare_workers=1), n_actors=2) as session:
        sup = Supervisor(session, [task_slot("a", "b", tmp_path), task_slot("b", "a", tmp_path)],
                         target_steps=TARGET, policy=RestartPolicy(max_restarts=3), run_dir=tmp_path, poll_s=0.2,
                         on_poll=inject)
        sup.start()
        assert len(session.worker_addresses()) == 3  # one per actor + a warm spare
        assert sup.slots["a"].worker != sup.slots["b"].worker  # one task actor per worker process
        t0 = time.time()
        summary = sup.run(timeout_s=120)
        print("run", time.time() - t0, kills, summary["events"])
        t_close = time.time()
    print("timing: cluster up", t0 - t_start, "run", t_close - t0, "close", time.time() - t_close)

    assert len(kills) == 3
    actors = summary["actors"]
    for name in "ab":
        assert actors[name]["restarts"] == sum(k["task"] == name for k in kills)
    for name in "ab":
        st = actors[name]["status"]
        assert st["state"] == "done" and st["step"] == TARGET
        # work lost per kill: steps between the newest checkpoint and the step seen just before the kill
        assert all(0 <= lost <= EVERY for lost in actors[name]["lost_work_steps"]), actors[name]
        # the exchange worked: the peer's predictions were used, with recorded staleness
        assert st["staleness"][f"staleness/{'ba'['ab'.index(name)]}/max_steps"] >= 0
        assert st["exchange_bytes"] > 0
        ckpts = CheckpointDir(tmp_path / "checkpoints" / name)
        assert ckpts.steps()[-1] == TARGET
        for step in ckpts.steps():  # no checkpoint corrupted
            state = torch.load(ckpts.path(step), weights_only=True)
            assert state["step"] == step
    assert all(k["pid"] != actors[k["task"]]["status"]["pid"] for k in kills)
    assert (tmp_path / "manifest.json").is_file() and (tmp_path / "tensorboard" / "a").is_dir()
    assert sum("lost on" in e for e in summary["events"]) == 3


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_distributed_with_real_runners_and_resume(sim_root: Path, tmp_path: Path) -> None:
    """Two real TaskRunners (depth, normals) tied by depth_normals on tiny shards, on a LocalCluster;
    then the driver "dies" and a resumed run continues from the checkpoints to a higher target."""
    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed
    from taskology.errors import ConfigError

    cfg = load_config(None, [
        f"data.root={sim_root}", "data.test_sequences=1", "data.mediator_fraction=0.4", "train.steps=6",
        "train.mediator_batch_size=2", "train.log_every=2", "train.eval_every=0", "train.device=cpu",
        "train.checkpoint_every_steps=2", "train.checkpoint_every_s=0", "train.seeds=[0]",
        "tasks.segmentation.enabled=false", "tasks.motion.enabled=false",
        "exchange.publish_every_steps=1", "exchange.refresh_every_s=0.2",
        *[f"tasks.{t}.{k}" for t in ("depth", "normals") for k in ("width=4", "batch_size=2", "label_fraction=0.5")]])
    summary = run_distributed(cfg, tmp_path, resume=False, with_sim=False, live=False, timeout_s=180)["0"]
    for task in ("depth", "normals"):
        st = summary["actors"][task]["status"]
        assert st["state"] == "done" and st["step"] == 6
        assert CheckpointDir(tmp_path / "checkpoints" / task).steps()[-1] == 6
        assert st["published_step"] is not None and st["published_step"] >= 1
    with pytest.raises(ConfigError, match="already holds a run"):
        run_distributed(cfg, tmp_path, resume=False, with_sim=False, live=False)
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 8})})
    resumed = run_distributed(more, tmp_path, resume=True, with_sim=False, live=False, timeout_s=180)["0"]
    for task in ("depth", "normals"):
        st = resumed["actors"][task]["status"]
        assert st["restored_from"] == 6 and st["step"] == 8 and st["state"] == "done"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_live_mediator_pool_changes_while_relations_keep_running(sim_root: Path, tmp_path: Path) -> None:
    """A SimActor writes new shards during training; the pool handed to the task actors changes, and
    because consumers draw mediator batches among samples their peer has published (and the pool turns
    over at most half at a time, after every task published), the relation runs on nearly every step."""
    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed

    steps = 200
    cfg = load_config(None, [
        f"data.root={sim_root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={steps}",
        "train.mediator_batch_size=2", "train.log_every=10", "train.eval_every=0", "train.device=cpu",
        "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0]",
        "train.consistency_start_step=0", "train.consistency_ramp_steps=1",
        "tasks.segmentation.enabled=false", "tasks.motion.enabled=false",
        "exchange.publish_every_steps=10", "exchange.refresh_every_s=0.5", "exchange.mediator_pool_shards=2",
        "exchange.live_mediator=true", "exchange.pool_refresh_s=0.3", "sim.frames=4", "sim.camera=32x96", "sim.lidar_beams=0",
        *[f"tasks.{t}.{k}" for t in ("depth", "normals") for k in ("width=4", "batch_size=2", "label_fraction=0.5")]])
    summary = run_distributed(cfg, tmp_path, resume=False, with_sim=True, live=False, timeout_s=240)["0"]
    for task in ("depth", "normals"):
        st = summary["actors"][task]["status"]
        assert st["state"] == "done" and st["step"] == steps
        assert st["mediator_pools_applied"] >= 3, st  # the first pool and newer ones
        terms = st["relation_terms"].get("depth_normals", 0)
        first = st["relation_first_step"]["depth_normals"]  # before it: the peer had not published yet
        # after it, pool changes cost almost nothing (tasks start on the sim's first shards; consecutive
        # pools overlap; batches come from published samples); pools replaced wholesale skipped ~95%
        # (measured). A CI run once skipped 10 of 194: the supervisor may advance the pool before the
        # consumer holds peer rows for any sample of the new pool (a peer's publication counted as "after
        # the push" was made on its old pool, or the consumer had not fetched the rows yet), and every
        # draw then fell back to unanswerable samples. The runner now draws from the pool it left until
        # the new one is answerable (test_live_pool_switch_keeps_drawing_answerable_samples); with steps
        # slowed 0.1 s (pool pushes paced by publications) that took 4-9 skips per run to none. 98 %
        # leaves room for a rare double race (neither pool answerable until the next fetch, ~0.5 s).
        assert first <= steps // 2 and terms >= 0.98 * (steps - first + 1), (first, terms, st["relation_skips"])
    shards = sorted((tmp_path / "mediator").glob("*.h5"))
    assert len(shards) >= 3  # the sim kept writing (retired shards beyond the pool are unlinked)
    # the live stream is not the dataset's: no test (or train) sequence is regenerated, no sample id shared
    assert shards and not {p.stem for p in shards} & {p.stem for p in sim_root.glob("*.h5")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lidar_tasks_train_as_actors_on_a_live_lidar_pool(lidar_root: Path, tmp_path: Path) -> None:
    """Detection and tracking as Dask actors with a SimActor writing LiDAR shards: the live pool's samples carry the
    BEV grid every actor prepares, both actors publish their predictions on it, and box_tracking is evaluated on
    every step that has a peer row."""
    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed

    steps = 30
    cfg = load_config(None, [
        f"data.root={lidar_root}", "data.test_sequences=1", "data.val_sequences=0", "data.mediator_fraction=0.4",
        f"train.steps={steps}", "train.mediator_batch_size=2", "train.log_every=10", "train.eval_every=0",
        "train.device=cpu", "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0]",
        "train.consistency_start_step=0", "train.consistency_ramp_steps=1",
        "tasks={detection: {width: 4, batch_size: 2}, tracking: {width: 4, batch_size: 2}}",
        "relations={box_tracking: {weight: 1.0, options: {confidence: 0.05}}}",
        "exchange.publish_every_steps=5", "exchange.refresh_every_s=0.5", "exchange.mediator_pool_shards=2",
        "exchange.live_mediator=true", "exchange.pool_refresh_s=0.3", "sim.frames=3", "sim.camera=32x96",
        "sim.lidar_beams=32"])
    summary = run_distributed(cfg, tmp_path, resume=False, with_sim=True, live=False, timeout_s=240)["0"]
    for task in ("detection", "tracking"):
        st = summary["actors"][task]["status"]
        assert st["state"] == "done" and st["step"] == steps
        assert st["mediator_pools_applied"] >= 1 and st["published_step"] >= 5, st
        # every step either ran the relation or skipped it for want of a peer row (how many ran depends on when
        # the first publication lands: a fresh clone compiles the LiDAR kernels first)
        relation = st["relation_terms"].get("box_tracking", 0) + st["relation_skips"].get("box_tracking", 0)
        assert relation == steps, (st["relation_terms"], st["relation_skips"])
    assert len(sorted((tmp_path / "mediator").glob("*.h5"))) >= 2


def test_the_client_records_of_a_lost_scheduler_are_left_to_the_supervisor() -> None:
    """Under load the client logs its cancelled reconnect as an error with a CancelledError traceback and an
    empty message (seen in the lost-scheduler test): dropped, like "Failed to reconnect"; other errors pass."""
    import asyncio
    import logging
    import sys

    from taskology.engine.distributed import _ReportedByTheSupervisor

    def record(message: str, error: BaseException | None) -> logging.LogRecord:
        exc_info = None
        if error is not None:
            try:
                raise error
            except BaseException:  # noqa: BLE001 - building a record as logger.exception would
                exc_info = sys.exc_info()
        return logging.LogRecord("distributed.client", logging.ERROR, __file__, 1, message, None, exc_info)

    keep = _ReportedByTheSupervisor().filter
    assert not keep(record("Failed to reconnect to scheduler after 10.00 seconds, closing client", None))
    assert not keep(record("", asyncio.CancelledError()))
    assert keep(record("", RuntimeError("a real failure"))) and keep(record("something else", None))
