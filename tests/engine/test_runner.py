"""TaskRunner mechanics: steps, gradients only into the receiving task, checkpoint round trips."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import synthetic_task_data  # noqa: E402

from taskology.config import load_config  # noqa: E402
from taskology.engine.peers import InProcessPeerView  # noqa: E402
from taskology.engine.checkpoints import load_checkpoint  # noqa: E402
from taskology.engine.runner import TaskRunner  # noqa: E402
from taskology.errors import DataError  # noqa: E402

TASKS = ("depth", "normals", "segmentation", "motion")


def tiny_config(*extra: str):
    overrides = ["train.mediator_batch_size=2"]
    for t in TASKS:
        overrides += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.lr=0.003"]
    return load_config(None, overrides + list(extra))


def make_runners(tmp_path: Path, collective: bool = True, seed: int = 0):
    cfg = tiny_config()
    view = InProcessPeerView()
    runners = {}
    for t in TASKS:
        runners[t] = TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view,
                                seed=seed, collective=collective, data=synthetic_task_data(seed=seed))
        view.register(t, runners[t])
    return cfg, view, runners


def test_collective_step_logs_every_relation_and_no_peer_gets_gradient(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    scalars = runners["depth"].train_step()
    assert {"consistency/depth_normals", "consistency/photometric", "consistency/segmentation_geometry"} <= set(scalars)
    assert scalars["staleness/steps_mean"] == 0.0
    assert runners["depth"].step == 1
    assert 0 < scalars["time/step_s"] < 60  # the step's own wall time (a shadowed name once logged ~uptime)
    # Peers were only run for predictions: no parameter of any peer received a gradient.
    for name in ("normals", "segmentation", "motion"):
        assert all(p.grad is None for p in runners[name].model.parameters()), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in runners["depth"].model.parameters())


def test_alone_mode_has_no_relations(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path, collective=False)
    scalars = runners["normals"].train_step()
    assert not [k for k in scalars if k.startswith("consistency/")]
    assert runners["normals"].mediator is None or runners["normals"].mediator.stream is None


def test_checkpoint_round_trip_gives_identical_next_losses(tmp_path: Path) -> None:
    cfg, view, runners = make_runners(tmp_path)
    runner = runners["motion"]
    for _ in range(2):
        runner.train_step()
    path = tmp_path / "ckpt" / "motion.pt"
    runner.save_checkpoint(path)
    expected = [runner.train_step() for _ in range(2)]
    restored = TaskRunner.restore(path, task_name="motion", config=cfg, data_root=tmp_path, run_dir=tmp_path,
                                  peer_view=view, seed=0, data=synthetic_task_data())
    assert restored.step == 2
    got = [restored.train_step() for _ in range(2)]
    for e, g in zip(expected, got):
        for key in e:
            if key.startswith(("loss/", "consistency/")):
                assert g[key] == pytest.approx(e[key], rel=1e-6, abs=1e-7), key


def test_state_dict_restores_rng_states(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    runner = runners["depth"]
    state = runner.state_dict()
    a = (torch.rand(3), np.random.rand(3))
    runner.load_state_dict(state)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_corrupt_checkpoint_is_a_data_error(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    path = tmp_path / "depth.pt"
    runners["depth"].save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="depth.pt"):
        load_checkpoint(path)
    assert not list(tmp_path.glob(".*.tmp*"))


def test_predict_mediator_is_compact_and_matches_predict(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    runner = runners["depth"]
    pred = runner.predict_mediator(["med:3", "med:1"])
    assert pred.sample_ids == ["med:3", "med:1"] and pred.task == "depth" and pred.step == 0
    assert pred.outputs["depth"].dtype == np.float16 and pred.outputs["depth"].shape == (2, 1, 32, 96)
    from taskology.engine.batches import collate

    direct = runner.predict(collate([runner.mediator.pool[3]]))["depth"].numpy()
    np.testing.assert_allclose(pred.outputs["depth"][0].astype(np.float32), direct[0], rtol=2e-3)
    with pytest.raises(KeyError):
        runner.predict_mediator(["nope:0"])


def test_set_mediator_pool_replaces_samples(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    runner = runners["normals"]
    runner.set_mediator_pool([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert list(runner.mediator.pool.sample_ids) == [f"pool:{i}" for i in range(4)]
    runner.train_step()
    assert runner.predict_mediator().sample_ids == [f"pool:{i}" for i in range(4)]


def test_consistency_warm_up_schedule(tmp_path: Path) -> None:
    cfg = tiny_config("train.consistency_start_step=2", "train.consistency_ramp_steps=2")
    view = InProcessPeerView()
    runners = {t: TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view, seed=0,
                             data=synthetic_task_data()) for t in ("depth", "normals")}
    for t, r in runners.items():
        view.register(t, r)
    depth = runners["depth"]
    seen = [depth.train_step() for _ in range(4)]
    assert [s["consistency/scale"] for s in seen] == [0.0, 0.0, 0.5, 1.0]
    assert "consistency/depth_normals" not in seen[0] and "consistency/depth_normals" in seen[2]
    # during warm-up the total is the supervised loss alone; afterwards the weighted relation is added
    assert seen[0]["loss/total"] == pytest.approx(seen[0]["loss/depth_log_l1"])
    expected = seen[2]["loss/depth_log_l1"] + 0.5 * seen[2]["consistency/depth_normals"]
    assert seen[2]["loss/total"] == pytest.approx(expected, rel=1e-5)
    assert depth.mediator.stream.state_dict() == {"epoch": 0, "offset": 4}  # two mediator batches of 2 used


def test_cosine_learning_rate_reaches_the_final_factor_and_resumes_on_schedule(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=5", "train.lr_schedule=cosine", "train.lr_final_factor=0.1")
    runner = TaskRunner(task_name="depth", config=cfg, data_root=tmp_path, run_dir=tmp_path, seed=0,
                        peer_view=InProcessPeerView(), collective=False, data=synthetic_task_data())
    seen = [runner.train_step()["train/lr"] for _ in range(3)]
    path = tmp_path / "depth.pt"
    runner.save_checkpoint(path)
    restored = TaskRunner.restore(path, task_name="depth", config=cfg, data_root=tmp_path, run_dir=tmp_path,
                                  peer_view=InProcessPeerView(), seed=0, collective=False, data=synthetic_task_data())
    seen += [restored.train_step()["train/lr"] for _ in range(2)]
    # half a cosine from 0.003 to 0.1 * 0.003 over steps 0..4, by hand
    expected = [0.003 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * s / 4))) for s in range(5)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert seen[-1] == pytest.approx(0.0003)
    assert [g["lr"] for g in restored.optimizer.param_groups] == pytest.approx([0.0003])
    # the constant schedule (default) leaves the configured rate alone
    plain = TaskRunner(task_name="depth", config=tiny_config(), data_root=tmp_path, run_dir=tmp_path, seed=0,
                       peer_view=InProcessPeerView(), collective=False, data=synthetic_task_data())
    assert {plain.train_step()["train/lr"] for _ in range(2)} == {0.003}


def _pool_runners(tmp_path: Path, sim_root: Path, n_shards: int = 3):
    """depth + normals runners whose mediator pools are real shards copied into ``tmp_path/pool``."""
    import shutil

    from taskology.engine.task_data import ShardPoolDataset
    from taskology.tasks.base import CAMERA_INPUTS

    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    paths = [Path(shutil.copy(p, pool_dir)) for p in sorted(sim_root.glob("*.h5"))[:n_shards]]
    cfg = tiny_config()
    view = InProcessPeerView()
    runners = {}
    for t in ("depth", "normals"):
        data = synthetic_task_data()
        data.open_mediator = lambda ps: ShardPoolDataset(ps, CAMERA_INPUTS)
        runners[t] = TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view,
                                seed=0, data=data)
        view.register(t, runners[t])
    return runners, paths


def test_live_pool_survives_shards_deleted_mid_training(tmp_path: Path, sim_root: Path) -> None:
    runners, paths = _pool_runners(tmp_path, sim_root)
    for runner in runners.values():
        assert runner.set_mediator_pool(paths)
    frames = len(runners["depth"].mediator.pool)
    paths[0].unlink()                         # retired while the runners train on it: open handles keep it
    for _ in range(3):
        for runner in runners.values():
            scalars = runner.train_step()
            assert "consistency/depth_normals" in scalars and np.isfinite(scalars["loss/total"])
    assert len(runners["depth"].predict_mediator().sample_ids) == frames
    # a new listing that still names the deleted shard (listed, then retired before reading): skipped
    for runner in runners.values():
        assert runner.set_mediator_pool(paths)
        assert runner.mediator.pool.paths == paths[1:] and str(paths[0]) in runner.mediator.pool.skipped[0]
        assert len(runner.mediator.pool) == frames * 2 // 3
        runner.train_step()
    # nothing readable offered: the current pool is kept
    for p in paths[1:]:
        p.unlink()
    assert not runners["depth"].set_mediator_pool(paths)
    assert runners["depth"].mediator.pool.paths == paths[1:]
    assert np.isfinite(runners["depth"].train_step()["loss/total"])


def test_pool_serves_live_shards_when_a_reopen_fails(tmp_path: Path, sim_root: Path) -> None:
    import pickle

    from taskology.engine.task_data import ShardPoolDataset
    from taskology.tasks.base import CAMERA_INPUTS

    runners, paths = _pool_runners(tmp_path, sim_root, n_shards=2)
    pool = ShardPoolDataset(paths, CAMERA_INPUTS)
    per_shard = len(pool) // 2
    copy = pickle.loads(pickle.dumps(pool))   # handles are not pickled: the copy reopens lazily
    paths[0].unlink()
    sample = copy[0]                          # shard 0 is gone: the first sample of shard 1 instead
    assert sample["sample_id"] == copy.sample_ids[per_shard]
    torch.testing.assert_close(sample["rgb"], pool[per_shard]["rgb"])
    torch.testing.assert_close(pool[0]["rgb"], pool[0]["rgb"])  # the original still reads shard 0
    paths[1].unlink()
    copy2 = pickle.loads(pickle.dumps(pool))
    with pytest.raises(DataError, match="all 2 shard"):
        copy2[0]
    pool.close()


class _RecordingDistributedView:
    """The distributed peer view (a real :class:`PredictionCache`) recording the sample ids asked."""

    def __init__(self) -> None:
        from taskology.engine.exchange import DistributedPeerView, ExchangePolicy, PredictionCache

        self.cache = PredictionCache(ExchangePolicy(max_staleness_steps=None))
        self.view = DistributedPeerView(self.cache)
        self.asked: list[list[str]] = []

    def usable_ids(self, task: str) -> set[str]:
        return self.view.usable_ids(task)

    def peer_outputs(self, task, batch):
        self.asked.append(list(batch["sample_id"]))
        return self.view.peer_outputs(task, batch)


def test_live_pool_switch_keeps_drawing_answerable_samples(tmp_path: Path, sim_root: Path) -> None:
    """The pool advances while the consumer's cache holds peer rows only for samples of the pool it left
    (the peer published on its older pool, or its rows on the new shards are not fetched yet; a
    distributed run with slow steps hit this at 2-3 of ~20 switches): the step draws among the left
    pool's answerable samples (through its still open handles) instead of a batch no peer can answer,
    so the relation term is not skipped; once peer rows for the new pool arrive, the old pool is closed."""
    import shutil

    from taskology.engine.exchange import compact_predictions
    from taskology.engine.task_data import ShardPoolDataset
    from taskology.tasks.base import CAMERA_INPUTS

    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    s = [Path(shutil.copy(p, pool_dir)) for p in sorted(sim_root.glob("*.h5"))[:4]]
    seq = {p: p.stem for p in s}
    cfg = tiny_config("tasks.segmentation.enabled=false", "tasks.motion.enabled=false")
    recording = _RecordingDistributedView()

    def runner(task: str, view):
        data = synthetic_task_data()
        data.open_mediator = lambda ps: ShardPoolDataset(ps, CAMERA_INPUTS)
        return TaskRunner(task_name=task, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view, seed=0,
                          data=data)

    depth, normals = runner("depth", recording), runner("normals", InProcessPeerView())
    assert depth.peers_needed == ["normals"]

    def publish(paths):  # the peer on pool ``paths`` publishes, and the consumer has fetched it
        assert normals.set_mediator_pool(paths)
        recording.cache.add(compact_predictions(normals.predict_mediator()))

    def used_sequences(scalars) -> set[str]:
        assert "consistency/depth_normals" in scalars and "skipped/depth_normals" not in scalars, scalars
        return {sid.rsplit(":", 1)[0] for sid in recording.asked[-1]}

    publish([s[0]])                           # peer rows: s0 only
    assert depth.set_mediator_pool([s[0], s[1]])
    assert used_sequences(depth.train_step()) == {seq[s[0]]}
    assert depth.set_mediator_pool([s[1], s[2]])  # advanced before the peer's rows on s1/s2 arrived
    s[0].unlink()                             # and the sim retired s0: the left pool's handle still reads it
    for _ in range(2):
        assert used_sequences(depth.train_step()) == {seq[s[0]]}
    assert depth.set_mediator_pool([s[2], s[3]])  # advanced again: the answerable [s0, s1] pool is the one kept
    assert used_sequences(depth.train_step()) == {seq[s[0]]}
    assert depth.mediator.previous is not None and depth.mediator.previous.paths == [s[0], s[1]]
    publish([s[2], s[3]])                     # rows for the current pool arrived: it is used, the old one closed
    assert used_sequences(depth.train_step()) <= {seq[s[2]], seq[s[3]]}
    assert depth.mediator.previous is None
    assert depth.set_mediator_pool([s[3]])    # a switch with rows for the pool left keeps it only while needed
    assert used_sequences(depth.train_step()) == {seq[s[3]]}
    assert depth.mediator.previous is None


def test_in_process_view_reuses_a_peer_answer_only_while_the_peer_has_not_stepped(tmp_path: Path) -> None:
    _, view, runners = make_runners(tmp_path)
    batch = runners["depth"].mediator.stream.next_batch()
    first = view.peer_outputs("normals", batch)
    again = view.peer_outputs("normals", batch)
    assert (view.forward_passes, view.cache_hits) == (1, 1)
    for name, value in first.outputs.items():
        assert again.outputs[name] is value  # the same tensors, not recomputed
        assert torch.equal(value, runners["normals"].predict(batch)[name].float())  # and what predict gives
    runners["normals"].train_step()  # new weights: the cached answer is void
    after = view.peer_outputs("normals", batch)
    assert view.forward_passes >= 2 and not torch.equal(after.outputs["normals"], first.outputs["normals"])
    other = runners["depth"].mediator.stream.next_batch()  # other samples: computed, not reused
    passes = view.forward_passes
    view.peer_outputs("normals", other)
    assert view.forward_passes == passes + 1


def test_collective_round_shares_peer_forward_passes(tmp_path: Path) -> None:
    _, view, runners = make_runners(tmp_path)
    for _ in range(2):
        for t in TASKS:
            runners[t].train_step()
    # every consumer draws the same mediator batch in a round, so most peer answers are reused
    assert view.cache_hits >= view.forward_passes / 2


class _AnsweringView(InProcessPeerView):
    """In-process answers, but only for the sample ids in ``answerable`` (as a distributed cache would)."""

    def __init__(self, answerable: set[str] | None) -> None:
        super().__init__()
        self.answerable = answerable
        self.asked: list[list[str]] = []

    def usable_ids(self, task: str) -> set[str]:
        return set(self.answerable) if self.answerable is not None else set()

    def peer_outputs(self, task, batch):
        self.asked.append(list(batch["sample_id"]))
        return super().peer_outputs(task, batch)


@pytest.mark.parametrize("mode", ["subset", "all", "none"])
def test_mediator_batches_come_from_samples_peers_can_answer(tmp_path: Path, mode: str) -> None:
    cfg = tiny_config()
    data = synthetic_task_data(seed=0)
    reference = TaskRunner(task_name="depth", config=cfg, data_root=tmp_path, run_dir=tmp_path,
                           peer_view=InProcessPeerView(), seed=0, collective=True, data=data)
    pool_ids = list(reference.mediator.pool.sample_ids)
    answerable = {"subset": set(pool_ids[:3]), "all": set(pool_ids), "none": None}[mode]
    view = _AnsweringView(answerable)
    runner = TaskRunner(task_name="depth", config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view,
                        seed=0, collective=True, data=synthetic_task_data(seed=0))
    for t in ("normals", "segmentation", "motion"):
        view.register(t, TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path,
                                    peer_view=InProcessPeerView(), seed=0, collective=True,
                                    data=synthetic_task_data(seed=0)))
    streamed = [list(reference.mediator.stream.next_batch()["sample_id"]) for _ in range(4)]
    for _ in range(4):
        runner.train_step()
    used = [view.asked[i] for i in range(0, len(view.asked), 3)]  # three peers asked per step, same batch
    assert len(used) == 4
    if mode == "subset":
        assert all(set(b) <= answerable and len(b) == 2 for b in used)  # never a sample no peer published
        assert used != streamed
    else:  # all answerable: exactly the stream's (in-process) batches; none: nothing better, the stream
        assert used == streamed
