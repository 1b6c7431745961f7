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
from taskology.engine.protocol import PeerVersion  # noqa: E402
from taskology.engine.runner import TaskRunner, load_checkpoint  # noqa: E402
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
    assert runners["normals"].mediator_stream is None


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

    direct = runner.predict(collate([runner.data.mediator[3]]))["depth"].numpy()
    np.testing.assert_allclose(pred.outputs["depth"][0].astype(np.float32), direct[0], rtol=2e-3)
    with pytest.raises(KeyError):
        runner.predict_mediator(["nope:0"])


def test_set_mediator_pool_replaces_samples(tmp_path: Path) -> None:
    _, _, runners = make_runners(tmp_path)
    runner = runners["normals"]
    runner.set_mediator_pool([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert list(runner.data.mediator.sample_ids) == [f"pool:{i}" for i in range(4)]
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
    assert depth.mediator_stream.state_dict() == {"epoch": 0, "offset": 4}  # two mediator batches of 2 used


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

    from taskology.engine.store_data import ShardPoolDataset

    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    paths = [Path(shutil.copy(p, pool_dir)) for p in sorted(sim_root.glob("*.h5"))[:n_shards]]
    cfg = tiny_config()
    view = InProcessPeerView()
    runners = {}
    for t in ("depth", "normals"):
        data = synthetic_task_data()
        data.open_mediator = lambda ps: ShardPoolDataset(ps)
        runners[t] = TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view,
                                seed=0, data=data)
        view.register(t, runners[t])
    return runners, paths


def test_live_pool_survives_shards_deleted_mid_training(tmp_path: Path, sim_root: Path) -> None:
    runners, paths = _pool_runners(tmp_path, sim_root)
    for runner in runners.values():
        assert runner.set_mediator_pool(paths)
    frames = len(runners["depth"].data.mediator)
    paths[0].unlink()                         # retired while the runners train on it: open handles keep it
    for _ in range(3):
        for runner in runners.values():
            scalars = runner.train_step()
            assert "consistency/depth_normals" in scalars and np.isfinite(scalars["loss/total"])
    assert len(runners["depth"].predict_mediator().sample_ids) == frames
    # a new listing that still names the deleted shard (listed, then retired before reading): skipped
    for runner in runners.values():
        assert runner.set_mediator_pool(paths)
        assert runner.data.mediator.paths == paths[1:] and str(paths[0]) in runner.data.mediator.skipped[0]
        assert len(runner.data.mediator) == frames * 2 // 3
        runner.train_step()
    # nothing readable offered: the current pool is kept
    for p in paths[1:]:
        p.unlink()
    assert not runners["depth"].set_mediator_pool(paths)
    assert runners["depth"].data.mediator.paths == paths[1:]
    assert np.isfinite(runners["depth"].train_step()["loss/total"])


def test_pool_serves_live_shards_when_a_reopen_fails(tmp_path: Path, sim_root: Path) -> None:
    import pickle

    from taskology.engine.store_data import ShardPoolDataset

    runners, paths = _pool_runners(tmp_path, sim_root, n_shards=2)
    pool = ShardPoolDataset(paths)
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
    from taskology.engine.store_data import ShardPoolDataset

    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    s = [Path(shutil.copy(p, pool_dir)) for p in sorted(sim_root.glob("*.h5"))[:4]]
    seq = {p: p.stem for p in s}
    cfg = tiny_config("tasks.segmentation.enabled=false", "tasks.motion.enabled=false")
    recording = _RecordingDistributedView()

    def runner(task: str, view):
        data = synthetic_task_data()
        data.open_mediator = lambda ps: ShardPoolDataset(ps)
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
    assert depth._previous_mediator is not None and depth._previous_mediator.paths == [s[0], s[1]]
    publish([s[2], s[3]])                     # rows for the current pool arrived: it is used, the old one closed
    assert used_sequences(depth.train_step()) <= {seq[s[2]], seq[s[3]]}
    assert depth._previous_mediator is None
    assert depth.set_mediator_pool([s[3]])    # a switch with rows for the pool left keeps it only while needed
    assert used_sequences(depth.train_step()) == {seq[s[3]]}
    assert depth._previous_mediator is None


def test_in_process_view_reuses_a_peer_answer_only_while_the_peer_has_not_stepped(tmp_path: Path) -> None:
    _, view, runners = make_runners(tmp_path)
    batch = runners["depth"].mediator_stream.next_batch()
    first = view.peer_outputs("normals", batch)
    again = view.peer_outputs("normals", batch)
    assert (view.forward_passes, view.cache_hits) == (1, 1)
    for name, value in first.outputs.items():
        assert again.outputs[name] is value  # the same tensors, not recomputed
        assert torch.equal(value, runners["normals"].predict(batch)[name].float())  # and what predict gives
    runners["normals"].train_step()  # new weights: the cached answer is void
    after = view.peer_outputs("normals", batch)
    assert view.forward_passes >= 2 and not torch.equal(after.outputs["normals"], first.outputs["normals"])
    other = runners["depth"].mediator_stream.next_batch()  # other samples: computed, not reused
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


class _AgedView(InProcessPeerView):
    """In-process answers reported as ``age`` publisher steps old."""

    def __init__(self, age: int) -> None:
        super().__init__()
        self.age = age

    def peer_outputs(self, task, batch):
        out = super().peer_outputs(task, batch)
        return None if out is None else type(out)(outputs=out.outputs, staleness_steps=[self.age] * len(batch["sample_id"]),
                                                  staleness_s=list(out.staleness_s))


def test_staleness_halflife_scales_a_relation_term_by_the_age_of_its_peer_predictions(tmp_path: Path) -> None:
    totals = {}
    for halflife, age in ((0.0, 100), (50.0, 0), (50.0, 100)):
        cfg = tiny_config(f"exchange.staleness_halflife_steps={halflife}")
        view = _AgedView(age)
        runners = {t: TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view, seed=0,
                                 data=synthetic_task_data()) for t in ("depth", "normals")}
        for t, r in runners.items():
            view.register(t, r)
        seen = runners["depth"].train_step()
        totals[(halflife, age)] = seen
        relation = seen["loss/total"] - seen["loss/depth_log_l1"]
        factor = 0.5 ** (age / halflife) if halflife else 1.0
        assert relation == pytest.approx(factor * seen["consistency/depth_normals"], rel=1e-5)
        assert ("staleness_weight/depth_normals" in seen) == (halflife > 0)
    assert totals[(50.0, 100)]["staleness_weight/depth_normals"] == pytest.approx(0.25)
    assert totals[(50.0, 0)]["staleness_weight/depth_normals"] == 1.0
    # same step, same data: only the weight differs, so the relation value itself is the same
    assert totals[(50.0, 100)]["consistency/depth_normals"] == pytest.approx(totals[(0.0, 100)]["consistency/depth_normals"])


class _VersionedView(InProcessPeerView):
    """In-process answers that also carry one older publication, predicted at peer step ``older_step``:
    depth doubled, normals with their channels rolled. ``merged``: no older publication, but the answer
    is already the mean of the two (normals normalized again), computed here independently."""

    def __init__(self, older_step: int, merged: bool = False) -> None:
        super().__init__()
        self.older_step, self.merged = older_step, merged

    def peer_outputs(self, task, batch):
        out = super().peer_outputs(task, batch)
        if out is None:  # a peer of another relation, not registered here
            return None
        older = {"depth": 2.0 * out.outputs["depth"]} if task == "depth" else \
            {"normals": torch.roll(out.outputs["normals"], 1, dims=1)}
        if self.merged:
            mean = {k: (out.outputs[k] + older[k]) / 2 for k in older}
            if task == "normals":
                mean["normals"] = torch.nn.functional.normalize(mean["normals"], dim=1, eps=1e-6)
            return type(out)(outputs=mean, staleness_steps=out.staleness_steps, staleness_s=out.staleness_s)
        rows = len(batch["sample_id"])
        return type(out)(outputs=out.outputs, staleness_steps=out.staleness_steps, staleness_s=out.staleness_s,
                         previous=[PeerVersion(older, [self.older_step] * rows)])


def test_average_publications_ties_relations_to_the_mean_of_publications_from_the_relations_start(
        tmp_path: Path) -> None:
    """exchange.average_publications=2: each consumer's relation value is the one computed on the mean of
    the newest and the older publication, when the older one is from step >= the relations' start
    (train.consistency_start_step); otherwise, and with 1, the newest alone."""
    def relation_values(average: int, view: InProcessPeerView) -> dict[str, float]:
        cfg = tiny_config(f"exchange.average_publications={average}", "train.consistency_start_step=5",
                          "train.consistency_ramp_steps=0")
        runners = {t: TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view, seed=0,
                                 data=synthetic_task_data()) for t in ("depth", "normals")}
        for t, r in runners.items():
            view.register(t, r)
            r.step = 10
        return {t: runners[t].train_step()["consistency/depth_normals"] for t in list(runners)}

    merged = relation_values(1, _VersionedView(0, merged=True))
    plain = relation_values(1, _VersionedView(7))
    assert relation_values(2, _VersionedView(7)) == pytest.approx(merged, rel=1e-5)
    assert relation_values(2, _VersionedView(3)) == pytest.approx(plain, rel=1e-5)   # older one from the warm-up
    assert relation_values(1, _VersionedView(7)) == pytest.approx(plain, rel=1e-5)
    assert all(abs(merged[t] - plain[t]) > 1e-3 for t in merged)  # the older publication really changes the value


def _depth_normals_runners(tmp_path: Path, *extra: str, refresh: int = 1) -> dict[str, TaskRunner]:
    """Depth and normals in-process; ``refresh``: the view's refresh_every_steps (what peers hold of a task)."""
    cfg = tiny_config("exchange.staggered_publication=false", *extra)  # an in-process view: no phase either way
    view = InProcessPeerView()
    view.refresh_every_steps = refresh
    runners = {t: TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view, seed=0,
                             data=synthetic_task_data()) for t in ("depth", "normals")}
    for t, r in runners.items():
        view.register(t, r)
    return runners


def test_anchor_pulls_toward_the_own_model_of_the_last_publication_and_is_inert_when_it_is_current(
        tmp_path: Path) -> None:
    """exchange.anchor_weight: the copy is retaken every refresh_every_steps steps of the peer view (distance 0
    on those steps, > 0 between them, the term weight * distance in the total), a checkpoint keeps it, and
    with peers that see the current model (in-process) the run is the run without the anchor (zero gradient
    at equality). A distributed view refreshes on the publication schedule, the bench's on its interval."""
    from taskology.bench.staleness import StalePeerView
    from taskology.engine.exchange import DistributedPeerView, ExchangePolicy, PredictionCache

    assert DistributedPeerView(PredictionCache(ExchangePolicy(publish_every_steps=7))).refresh_every_steps == 7
    assert StalePeerView({}, 40).refresh_every_steps == 40 and InProcessPeerView().refresh_every_steps == 1
    runners = _depth_normals_runners(tmp_path, "exchange.anchor_weight=0.5", "exchange.publish_every_steps=50",
                                     refresh=3)
    depth = runners["depth"]
    seen = []
    for _ in range(5):
        seen.append(depth.train_step())
        runners["normals"].train_step()
    assert [s["anchor/distance"] == 0.0 for s in seen] == [True, False, False, True, False]
    assert depth._anchor[1] == 3
    for s in seen:  # the anchor term is part of the total, at its weight
        assert s["loss/total"] == pytest.approx(
            s["loss/depth_log_l1"] + s["consistency/depth_normals"] + 0.5 * s["anchor/distance"], rel=1e-5)
    path = tmp_path / "ckpt" / "depth.pt"
    depth.save_checkpoint(path)
    expected = [depth.train_step()["anchor/distance"] for _ in range(2)]
    restored = TaskRunner.restore(path, task_name="depth", config=depth.config, data_root=tmp_path,
                                  run_dir=tmp_path, peer_view=depth.peer_view, seed=0, data=synthetic_task_data())
    assert restored._anchor[1] == 3
    assert [restored.train_step()["anchor/distance"] for _ in range(2)] == pytest.approx(expected, rel=1e-6)

    def trained(*extra: str, refresh: int = 1) -> list[torch.Tensor]:
        pair = _depth_normals_runners(tmp_path, *extra, refresh=refresh)
        for _ in range(3):
            for r in pair.values():
                r.train_step()
        return [p.detach().clone() for r in pair.values() for p in r.model.parameters()]

    plain, anchored = trained(), trained("exchange.anchor_weight=1")
    assert all(torch.equal(a, b) for a, b in zip(plain, anchored))
    loose = trained("exchange.anchor_weight=1", refresh=2)
    assert not all(torch.equal(a, b) for a, b in zip(plain, loose))


def test_anchor_is_retaken_on_the_staggered_schedule_of_its_task(tmp_path: Path) -> None:
    """With staggered publication (the default) a task's anchor is retaken when its peers' copy of it is: the
    staleness bench's view with phases (depth 0, normals 2 of every 4 steps) and a distributed view answering
    its own policy's phase. The peers' copy of the first task is taken one step later (its peer first asks
    after its step 0), as without staggering."""
    from taskology.bench.staleness import StalePeerView
    from taskology.engine.exchange import DistributedPeerView, ExchangePolicy, PredictionCache

    policy = ExchangePolicy(publish_every_steps=8, publish_phase_steps=4)
    assert DistributedPeerView(PredictionCache(policy)).refresh_phase_steps("normals") == 4
    assert InProcessPeerView().refresh_phase_steps("normals") == 0
    cfg = tiny_config("exchange.anchor_weight=0.5", "exchange.publish_every_steps=4")  # staggered: the default
    assert cfg.exchange.staggered_publication
    runners = {t: TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path,
                             peer_view=InProcessPeerView(), seed=0, data=synthetic_task_data())
               for t in ("depth", "normals")}
    view = StalePeerView(runners, 4, phases={"depth": 0, "normals": 2})
    anchors: dict[str, list[int]] = {t: [] for t in runners}
    copies: dict[str, list[int]] = {t: [] for t in runners}
    for r in runners.values():
        r.peer_view = view
    for _ in range(11):
        for t, r in runners.items():
            assert "anchor/distance" in r.train_step()
            if r._anchor[1] not in anchors[t]:
                anchors[t].append(r._anchor[1])
            for peer in runners:
                if peer in view._snapshots and view._snapshots[peer][1] not in copies[peer]:
                    copies[peer].append(view._snapshots[peer][1])
    assert anchors == {"depth": [0, 4, 8], "normals": [0, 2, 6, 10]}
    assert copies["normals"] == anchors["normals"]  # depth asks before normals steps: the same steps
    assert copies["depth"] == [s + 1 for s in anchors["depth"]]  # normals first asks after depth's step 0


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
    pool_ids = list(reference.data.mediator.sample_ids)
    answerable = {"subset": set(pool_ids[:3]), "all": set(pool_ids), "none": None}[mode]
    view = _AnsweringView(answerable)
    runner = TaskRunner(task_name="depth", config=cfg, data_root=tmp_path, run_dir=tmp_path, peer_view=view,
                        seed=0, collective=True, data=synthetic_task_data(seed=0))
    for t in ("normals", "segmentation", "motion"):
        view.register(t, TaskRunner(task_name=t, config=cfg, data_root=tmp_path, run_dir=tmp_path,
                                    peer_view=InProcessPeerView(), seed=0, collective=True,
                                    data=synthetic_task_data(seed=0)))
    streamed = [list(reference.mediator_stream.next_batch()["sample_id"]) for _ in range(4)]
    for _ in range(4):
        runner.train_step()
    used = [view.asked[i] for i in range(0, len(view.asked), 3)]  # three peers asked per step, same batch
    assert len(used) == 4
    if mode == "subset":
        assert all(set(b) <= answerable and len(b) == 2 for b in used)  # never a sample no peer published
        assert used != streamed
    else:  # all answerable: exactly the stream's (in-process) batches; none: nothing better, the stream
        assert used == streamed


def test_augment_transforms_labelled_batches_keyed_on_seed_and_step(tmp_path: Path, monkeypatch) -> None:
    """tasks.motion.augment: the task's augment sees every labelled batch with a generator drawn from (seed,
    step) alone, so a restored runner repeats the draws; off (the default), it is never called."""
    from taskology.tasks.motion import MotionTask

    seen: list[float] = []  # the generator's next draw after each call: a fingerprint of its seed
    original = MotionTask.augment

    def spy(self, batch, rng):
        out = original(self, batch, rng)
        seen.append(float(rng.random()))
        return out

    monkeypatch.setattr(MotionTask, "augment", spy)
    cfg = tiny_config("tasks.motion.augment=true")
    runner = TaskRunner(task_name="motion", config=cfg, data_root=tmp_path, run_dir=tmp_path, seed=3,
                        peer_view=InProcessPeerView(), collective=False, data=synthetic_task_data())
    losses = [runner.train_step()["loss/total"] for _ in range(2)]
    runner.save_checkpoint(tmp_path / "motion.pt")
    losses.append(runner.train_step()["loss/total"])
    first = list(seen)
    restored = TaskRunner.restore(tmp_path / "motion.pt", task_name="motion", config=cfg, data_root=tmp_path,
                                  run_dir=tmp_path, peer_view=InProcessPeerView(), seed=3, collective=False,
                                  data=synthetic_task_data())
    assert restored.train_step()["loss/total"] == pytest.approx(losses[2], rel=1e-6)
    assert seen[3] == first[2] and len(set(first)) == 3  # keyed on the step: repeated after restore, new per step
    plain = TaskRunner(task_name="motion", config=tiny_config(), data_root=tmp_path, run_dir=tmp_path, seed=3,
                       peer_view=InProcessPeerView(), collective=False, data=synthetic_task_data())
    plain.train_step()
    assert len(seen) == 4


def test_mean_teacher_is_the_running_then_moving_mean_of_the_weights_and_what_peers_and_checkpoints_see(
        tmp_path: Path) -> None:
    """train.teacher_decay: after step k the teacher is d_k * teacher + (1 - d_k) * weights, d_k = min(decay,
    1 - 1/k) (the plain mean of the weights while 1 - 1/k < decay), recomputed here from the weights after
    each step; peers (in-process view, publications) read it; the model itself still trains and is evaluated;
    a checkpoint keeps it; decay 0 and the alone mode have none."""
    decay = 0.6
    runners = _depth_normals_runners(tmp_path, f"train.teacher_decay={decay}")
    depth = runners["depth"]
    assert depth.teacher is not None and not depth.teacher.training
    expected = None
    for k in range(1, 6):
        depth.train_step()
        runners["normals"].train_step()
        weights = [p.detach().double().numpy().copy() for p in depth.model.parameters()]
        d = min(decay, 1.0 - 1.0 / k)
        expected = weights if expected is None else [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    for mean, want in zip(depth.teacher.parameters(), expected):
        np.testing.assert_allclose(mean.detach().double().numpy(), want, rtol=1e-5, atol=1e-7)
    batch = depth._mediator_batch()
    seen = depth.peer_view.peer_outputs("depth", batch).outputs["depth"]
    from_teacher = depth.task.forward(depth.teacher, batch)["depth"]
    assert torch.allclose(seen, from_teacher, atol=1e-6)
    assert not torch.allclose(seen, depth.predict(batch)["depth"], atol=1e-4)  # the test can tell them apart
    published = depth.predict_mediator(sample_ids=list(batch["sample_id"]))
    np.testing.assert_allclose(published.outputs["depth"].astype(np.float32), from_teacher.numpy(), rtol=2e-3)

    path = tmp_path / "ckpt" / "teacher.pt"
    depth.save_checkpoint(path)
    restored = TaskRunner.restore(path, task_name="depth", config=depth.config, data_root=tmp_path,
                                  run_dir=tmp_path, peer_view=InProcessPeerView(), seed=0, data=synthetic_task_data())
    assert all(torch.equal(a, b) for a, b in zip(restored.teacher.parameters(), depth.teacher.parameters()))

    plain = _depth_normals_runners(tmp_path)["depth"]
    assert plain.teacher is None and plain.shown_model is plain.model
    alone = TaskRunner(task_name="depth", config=depth.config, data_root=tmp_path, run_dir=tmp_path,
                       peer_view=InProcessPeerView(), seed=0, collective=False, data=synthetic_task_data())
    assert alone.teacher is None


def test_mean_teacher_changes_what_peers_teach_from_the_step_it_differs_from_the_model(tmp_path: Path) -> None:
    """After step 1 the teacher is the model (the mean of one set of weights), so the relation terms of steps 1
    and 2 are those of a run without a teacher; from step 3 on the peers read a mean of two or more weight
    sets, so the terms differ."""
    def terms(*extra: str) -> list[float]:
        pair = _depth_normals_runners(tmp_path, "train.consistency_start_step=0", *extra)
        out = []
        for _ in range(4):
            out.append(pair["depth"].train_step()["consistency/depth_normals"])
            pair["normals"].train_step()
        return out

    plain, taught = terms(), terms("train.teacher_decay=0.99")
    assert taught[:2] == pytest.approx(plain[:2], rel=1e-6)
    assert all(abs(a - b) > 1e-6 * abs(a) for a, b in zip(plain[2:], taught[2:]))
