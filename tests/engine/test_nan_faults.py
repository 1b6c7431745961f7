"""NaN / inf faults on real components: peer publications holding them are dropped on receipt; a task whose own
loss or gradient turns non-finite rolls back once at half the learning rate, then stops with one clear line."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import synthetic_task_data  # noqa: E402

from taskology.config import load_config  # noqa: E402
from taskology.engine.actor import TaskActor  # noqa: E402
from taskology.engine.checkpoints import CheckpointDir, load_checkpoint  # noqa: E402
from taskology.engine.exchange import (DistributedPeerView, ExchangePolicy, PredictionCache,  # noqa: E402
                                       PublicationBox, compact_predictions)
from taskology.engine.faults import DivergencePolicy, NonFiniteLoss, describe_nonfinite, nonfinite_counts  # noqa: E402
from taskology.engine.peers import InProcessPeerView  # noqa: E402
from taskology.engine.protocol import Predictions  # noqa: E402
from taskology.engine.runner import TaskRunner  # noqa: E402
from taskology.errors import TaskologyError, TrainingDiverged  # noqa: E402

LR = 0.003


def tiny_config(*extra: str):
    overrides = ["train.mediator_batch_size=2", "tasks.segmentation.enabled=false", "tasks.motion.enabled=false"]
    for t in ("depth", "normals", "segmentation", "motion"):
        overrides += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.lr={LR}"]
    return load_config(None, overrides + list(extra))


def runner_kwargs(tmp_path: Path, task: str, cfg, collective: bool) -> dict:
    return dict(task_name=task, config=cfg, data_root=tmp_path, run_dir=tmp_path, seed=0, collective=collective,
                data=synthetic_task_data())


def make_actor(tmp_path: Path, task: str, cfg, *, collective: bool, policy: ExchangePolicy | None = None,
               every: int | None = None) -> TaskActor:
    return TaskActor(task_name=task, runner_cls=TaskRunner,
                     runner_kwargs=runner_kwargs(tmp_path, task, cfg, collective), run_dir=str(tmp_path / "run"),
                     policy=policy or ExchangePolicy(max_staleness_steps=None),
                     checkpoint_every_steps=every, checkpoint_every_s=None, keep_checkpoints=10, log_every=0)


def train_to(actor: TaskActor, target: int, states: frozenset[str] = frozenset({"done"})) -> dict:
    actor.start(target)
    actor.join(timeout_s=60)
    status = actor.status()
    assert status["state"] in states, status["error"]
    return status


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _normalises_each_channel(module: torch.nn.Module) -> bool:
    return (isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm))
            or isinstance(module, torch.nn.GroupNorm) and module.num_groups == module.num_channels)


def bias_before_batch_norm(model: torch.nn.Module) -> set[str]:
    """Names of conv biases right before a norm that subtracts each channel's mean (BatchNorm, or a GroupNorm of
    one channel a group): their true gradient is 0, so what AdamW does with them is rounding noise, scaled up to
    a learning-rate step, and differs between processes that sum in another order."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            for i in range(len(module) - 1):
                if (isinstance(module[i], torch.nn.Conv2d) and module[i].bias is not None
                        and _normalises_each_channel(module[i + 1])):
                    names.add(f"{prefix}.{i}.bias" if prefix else f"{i}.bias")
    return names


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], noise: set[str]) -> None:
    """Equal up to float32 rounding (a runner built separately, in a process where other tests ran, may sum in
    another order; one learning-rate step moves weights by about 1e-3), the gradient-free ``noise`` aside."""
    assert a.keys() == b.keys()
    for k in a.keys() - noise:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---- pure parts ----------------------------------------------------------------------------------------------
def test_nonfinite_counts_by_hand() -> None:
    assert nonfinite_counts({"a": np.ones((2, 3), np.float16), "ids": np.array([1, 2])}) == {}
    with np.errstate(over="ignore"):
        f16 = np.array([1.0, 70000.0, -np.inf, np.nan], np.float32).astype(np.float16)  # 70000 overflows to inf
    bad = nonfinite_counts({"x": f16, "t": torch.tensor([[0.0, float("nan")], [float("nan"), 1.0]]),
                            "ok": torch.zeros(3), "labels": torch.tensor([1, 2])})
    assert bad == {"x": (1, 2), "t": (2, 0)}
    assert describe_nonfinite(bad) == "output 'x' (1 NaN, 2 inf), output 't' (2 NaN, 0 inf)"


@pytest.mark.parametrize("max_rollbacks,done,action", [(1, 0, "rollback"), (1, 1, "stop"), (0, 0, "stop"),
                                                       (2, 1, "rollback"), (2, 2, "stop")])
def test_divergence_policy_decides_rollback_then_stop(max_rollbacks: int, done: int, action: str) -> None:
    policy = DivergencePolicy(max_rollbacks=max_rollbacks, lr_factor=0.5)
    assert policy.decide(done) == action
    assert [policy.lr_scale(k) for k in range(3)] == [1.0, 0.5, 0.25]


def test_cache_drops_a_nonfinite_publication_once_and_keeps_the_rows_held(caplog: pytest.LogCaptureFixture) -> None:
    cache = PredictionCache(ExchangePolicy(max_staleness_steps=None, lockstep_lag_steps=0, lockstep_timeout_s=5.0))
    good = Predictions("normals", 3, time.time(), ["s:0", "s:1"], {"normals": np.full((2, 3, 2, 2), 0.5, np.float16)})
    bad = Predictions("normals", 5, time.time(), ["s:0", "s:1"], {"normals": np.full((2, 3, 2, 2), 0.25, np.float16)})
    bad.outputs["normals"][1, 2, 0, 1] = np.inf
    caplog.set_level(logging.WARNING, logger="taskology.engine.exchange")
    assert cache.add(good) and not cache.add(bad) and not cache.add(bad)  # delivered twice: counted once
    assert cache.log.dropped == {"normals": 1} and cache.log.scalars()["staleness/normals/dropped"] == 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [("dropped the publication of peer normals at its step 5: output 'normals' (0 NaN, 1 inf) not "
                      "finite; its rows are not used")]
    got = cache.lookup("normals", ["s:1"])
    assert got is not None and float(got.outputs["normals"].max()) == 0.5 and got.staleness_steps == [2]
    assert cache.latest_step("normals") == 3 and cache.received_step("normals") == 5
    view = DistributedPeerView(cache)  # lockstep: a consumer at step 5 waits for peer step >= 5; the dropped one did
    view.consumer_step = 5
    start = time.perf_counter()
    assert view.peer_outputs("normals", {"sample_id": ["s:0"]}) is not None
    assert time.perf_counter() - start < 1.0 and view.timeouts == {}


# ---- peers' predictions ----------------------------------------------------------------------------------------
class BoxPeer:
    """A peer answering like a Dask actor proxy from a real :class:`PublicationBox`."""

    def __init__(self) -> None:
        self.box, self.step = PublicationBox(), 0

    def predictions_since(self, step: int) -> list[Predictions]:
        return self.box.since(step)

    def current_step(self) -> int:
        return self.step


def test_consumer_drops_nan_and_inf_publications_and_uses_a_clean_one_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real depth actor consumes real normals publications through its fetcher; one holds a NaN, a later one
    an inf. Each is dropped on receipt: the NaN one while the rows held before are fresh enough (still used),
    the inf one when they are not (the relation is skipped); a clean publication afterwards is used again."""
    cfg = tiny_config()
    normals = TaskRunner(peer_view=InProcessPeerView(), **runner_kwargs(tmp_path, "normals", cfg, collective=False))
    consumer = make_actor(tmp_path, "depth", cfg, collective=True,
                          policy=ExchangePolicy(publish_every_steps=1000, refresh_every_s=3600, max_staleness_steps=2))
    peer = BoxPeer()
    consumer.set_peers({"normals": peer})
    polls = iter(range(1, 100))
    caplog.set_level(logging.WARNING, logger="taskology.engine.exchange")

    def publish(poison: float | None = None) -> Predictions:
        pub = compact_predictions(normals.predict_mediator())
        if poison is not None:
            pub.outputs["normals"][1, 0, 2, 3] = poison  # one value of one output tensor
        peer.box.publish(pub)
        peer.step = normals.step
        consumer.fetcher.poll_once(now=1e12 + 1e4 * next(polls))  # far ahead: the fetch thread never polls itself
        return pub

    def relation_counts() -> tuple[int, int]:
        st = consumer.status()
        return st["relation_terms"].get("depth_normals", 0), st["relation_skips"].get("depth_normals", 0)

    try:
        publish()                                         # clean, peer step 0
        train_to(consumer, 2)
        assert relation_counts() == (2, 0)
        normals.train_step()
        publish(float("nan"))                             # peer step 1: dropped; the step-0 rows are 1 step old
        st = train_to(consumer, 4)
        assert relation_counts() == (4, 0) and st["scalars"]["staleness/steps_mean"] == 1.0
        for _ in range(2):
            normals.train_step()
        publish(float("inf"))                             # peer step 3: dropped; the step-0 rows are too old now
        consumer.fetcher.poll_once(now=1e12 + 1e4 * next(polls))  # polled again: not fetched, counted, logged
        train_to(consumer, 6)
        assert relation_counts() == (4, 2)
        normals.train_step()
        clean = publish()                                 # peer step 4: used again
        st = train_to(consumer, 8)
        assert relation_counts() == (6, 2) and st["scalars"]["staleness/steps_mean"] == 0.0
        held = consumer.cache.lookup("normals", clean.sample_ids)
        np.testing.assert_array_equal(held.outputs["normals"].numpy(), clean.outputs["normals"].astype(np.float32))
        assert st["dropped_publications"] == 2 and st["staleness"]["staleness/normals/dropped"] == 2.0
        assert st["rollbacks"] == 0 and all_finite(consumer.runner.model)
        lines = [r.getMessage() for r in caplog.records if r.name == "taskology.engine.exchange"]
        assert lines == [f"dropped the publication of peer normals at its step {s}: output 'normals' ({n} NaN, {i} inf)"
                         " not finite; its rows are not used" for s, n, i in ((1, 1, 0), (3, 0, 1))]
    finally:
        consumer.stop()


def test_in_process_view_refuses_a_nonfinite_peer_answer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config()
    view = InProcessPeerView()
    depth = TaskRunner(peer_view=view, **runner_kwargs(tmp_path, "depth", cfg, collective=True))
    normals = TaskRunner(peer_view=view, **runner_kwargs(tmp_path, "normals", cfg, collective=True))
    view.register("normals", normals)
    assert "consistency/depth_normals" in depth.train_step()
    with torch.no_grad():
        next(normals.model.parameters()).fill_(float("nan"))  # the peer's model is broken from here on
    caplog.set_level(logging.WARNING, logger="taskology.engine.peers")
    for _ in range(2):
        scalars = depth.train_step()
        assert scalars["skipped/depth_normals"] == 1.0 and "consistency/depth_normals" not in scalars
    assert view.dropped == {"normals": 1}  # the peer did not step: its one broken "publication", once
    assert len(caplog.records) == 1
    assert "peer normals at its step 0: output 'normals' (" in caplog.records[0].getMessage()
    assert all_finite(depth.model) and np.isfinite(scalars["loss/total"])


# ---- a task's own loss -----------------------------------------------------------------------------------------
def test_nonfinite_gradient_with_a_finite_loss_is_not_applied(tmp_path: Path) -> None:
    runner = TaskRunner(peer_view=InProcessPeerView(), **runner_kwargs(tmp_path, "depth", tiny_config(), False))
    runner.train_step()
    before = weights(runner.model)
    moments = {k: v.clone() for k, v in runner.optimizer.state_dict()["state"][0].items()}
    original = runner.task.supervised_loss

    def sqrt_at_zero(outputs, batch):  # value 0, gradient inf * 0 = NaN
        return {**original(outputs, batch), "sqrt": torch.sqrt(outputs["depth"].sum() * 0.0)}

    runner.task.supervised_loss = sqrt_at_zero
    with pytest.raises(NonFiniteLoss, match=r"^depth: gradient is not finite \(norm nan; loss/total=[0-9.]+\) at "
                                            r"step 1; the step was not applied$") as caught:
        runner.train_step()
    assert isinstance(caught.value, TaskologyError)  # an in-process run stops on it with this one line
    assert runner.step == 1 and all(p.grad is None for p in runner.model.parameters())
    assert_same_weights(weights(runner.model), before)
    for k, v in runner.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, moments[k]), k


def poison_loss_at(runner: TaskRunner, steps: set[int]) -> None:
    """The task's supervised loss becomes NaN once at each runner step in ``steps``."""
    original = runner.task.supervised_loss

    def poisoned(outputs, batch):
        losses = original(outputs, batch)
        if runner.step in steps:
            steps.discard(runner.step)
            return {k: v * float("nan") for k, v in losses.items()}
        return losses

    runner.task.supervised_loss = poisoned


def record_weights(runner: TaskRunner) -> tuple[dict[int, dict], list[tuple[int, dict]]]:
    """Weights at each first checkpoint save (by step), and right after each load_state_dict (a rollback)."""
    saved: dict[int, dict] = {}
    loaded: list[tuple[int, dict]] = []
    save, load = runner.save_checkpoint, runner.load_state_dict

    def saving(path: Path) -> None:
        saved.setdefault(runner.step, weights(runner.model))
        save(path)

    def loading(state) -> None:
        load(state)
        loaded.append((runner.step, weights(runner.model)))

    runner.save_checkpoint, runner.load_state_dict = saving, loading
    return saved, loaded


def test_nan_loss_rolls_back_once_at_half_the_rate_then_stops(tmp_path: Path) -> None:
    cfg = tiny_config()
    actor = make_actor(tmp_path, "depth", cfg, collective=False, every=3)
    runner = actor.runner
    saved, loaded = record_weights(runner)
    poison_loss_at(runner, {4})
    st = train_to(actor, 8)
    assert st["step"] == 8 and st["rollbacks"] == 1 and not st["fatal"]
    assert st["last_fault"] == ("depth: loss is not finite (loss/depth_log_l1=nan) at step 4; rolled back to the "
                                "checkpoint of step 3, learning rate x0.5")
    assert [s for s, _ in loaded] == [3]
    assert_same_weights(loaded[0][1], saved[3])  # exactly the checkpoint's weights after the rollback
    assert runner.lr_scale == 0.5 and st["scalars"]["train/lr"] == pytest.approx(0.5 * LR)
    ckpts = CheckpointDir(tmp_path / "run" / "checkpoints" / "depth", keep=10)
    assert load_checkpoint(ckpts.path(3))["lr_scale"] == 0.5  # the rolled-back state written again
    assert json.loads(ckpts.path(3).with_suffix(".exchange.json").read_text())["rollbacks"] == 1

    # The same run by hand, no fault: 3 steps, then 5 at half the rate. The NaN step left no trace at all.
    reference = TaskRunner(peer_view=InProcessPeerView(), **runner_kwargs(tmp_path, "depth", cfg, False))
    for _ in range(3):
        reference.train_step()
    noise = bias_before_batch_norm(reference.model)
    assert noise, "the depth network has conv biases before a per-channel norm"
    assert_close_weights(weights(reference.model), saved[3], noise)
    reference.lr_scale = 0.5
    for _ in range(5):
        reference.train_step()
    assert_close_weights(weights(runner.model), weights(reference.model), noise)

    poison_loss_at(runner, {9})  # again, after the rollback: stop
    st = train_to(actor, 12, frozenset({"failed"}))
    assert st["error"].splitlines()[0] == ("TrainingDiverged: depth: loss is not finite (loss/depth_log_l1=nan) at "
                                           "step 9 after 1 rollback(s) (learning rate x0.5); stopped, newest "
                                           "checkpoint: step 8")
    assert st["fatal"] and st["rollbacks"] == 1 and st["step"] == 9 and runner.step == 9 and all_finite(runner.model)
    assert ckpts.steps() == [3, 6, 8]
    actor.stop()
    # a recreated actor (the supervisor's restart) resumes from step 8 knowing its rollback is spent
    again = make_actor(tmp_path, "depth", cfg, collective=False, every=3)
    assert again.status()["rollbacks"] == 1 and again.runner.lr_scale == 0.5 and again.runner.step == 8
    assert issubclass(TrainingDiverged, TaskologyError)


def test_nan_loss_before_the_first_checkpoint_rolls_back_to_the_start_state(tmp_path: Path) -> None:
    actor = make_actor(tmp_path, "depth", tiny_config(), collective=False, every=None)
    runner = actor.runner
    start = weights(runner.model)
    _, loaded = record_weights(runner)
    poison_loss_at(runner, {2})
    st = train_to(actor, 4)
    assert st["rollbacks"] == 1 and st["step"] == 4 and st["last_fault"].endswith(
        "at step 2; rolled back to the start state, step 0, learning rate x0.5")
    assert [s for s, _ in loaded] == [0]
    assert_same_weights(loaded[0][1], start)
    assert CheckpointDir(tmp_path / "run" / "checkpoints" / "depth").steps() == [0, 4]  # the rollback, the end
    actor.stop()
