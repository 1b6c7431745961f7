"""The in-process run on tiny simulator shards: losses go down, commands write a complete run dir,
eval reproduces the run's metrics, resume continues, checkpoints round-trip on real data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from taskology.config import load_config
from taskology.engine.batches import to_device
from taskology.engine.collective import build_runners, checkpoint_steps, run_collective
from taskology.engine.command import eval_command, train_command
from taskology.engine.logbook import read_log
from taskology.engine.runner import TaskRunner
from taskology.errors import DataError
from taskology.losses.relation import evaluate_for_receiver

TASKS = ("depth", "normals", "segmentation", "motion")


def overrides(root: Path, steps: int = 4, *extra: str) -> list[str]:
    out = [f"data.root={root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={steps}",
           "train.mediator_batch_size=2", "train.log_every=1", "train.eval_every=0", "train.device=cpu",
           "train.checkpoint_every_steps=2", "train.checkpoint_every_s=0", "train.seeds=[0]", "cluster.address=none"]
    for t in TASKS:
        out += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.lr=0.005", f"tasks.{t}.label_fraction=0.5"]
    return out + list(extra)


def fixed_losses(runners: dict[str, TaskRunner], labelled: dict, mediator: dict) -> dict[str, float]:
    """Every supervised and consistency loss on fixed batches (eval mode, fresh peers)."""
    values: dict[str, float] = {}
    for name, runner in runners.items():
        runner.model.eval()
        with torch.no_grad():
            batch = labelled[name]
            # the task's supervised total (single components that start at their floor, such as a
            # near-zero ego rotation, may jitter)
            supervised = runner.task.supervised_loss(runner._forward(batch), batch)
            values[f"{name}/supervised"] = float(sum(supervised.values()))
            own = runner._forward(mediator)
            for relation, _ in runner.relations:
                peers = {p: runners[p]._forward(mediator) for p in relation.tasks if p != name}
                values[f"{name}/{relation.name}"] = float(
                    evaluate_for_receiver(relation, name, own, peers, mediator, runner.tasks))
        runner.model.train()
    return values


def test_tiny_collective_run_lowers_every_loss(sim_root: Path, tmp_path: Path) -> None:
    cfg = load_config(None, overrides(sim_root))
    runners, _ = build_runners(cfg, tmp_path, seed=0, device="cpu", collective=True)
    labelled = {n: to_device(r.train_stream.next_batch(), r.device) for n, r in runners.items()}
    mediator = next(iter(runners.values())).mediator.stream.next_batch()
    before = fixed_losses(runners, labelled, mediator)
    assert len(before) == 4 + 9  # supervised per task + every (relation, receiver) pair
    for _ in range(16):
        for runner in runners.values():
            runner.train_step()
    after = fixed_losses(runners, labelled, mediator)
    worse = {k: (before[k], after[k]) for k in before if not after[k] < before[k]}
    assert not worse, worse


def test_train_command_writes_run_dir_and_eval_reproduces_metrics(sim_root: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    records = train_command(None, overrides(sim_root, steps=4), cluster="none", run_dir=run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record == json.loads(json.dumps(records["0"]))
    assert set(record["tasks"]) == set(TASKS) and record["steps"] == 4 and record["mode"] == "collective"
    assert 0 <= record["tasks"]["segmentation"]["miou"] <= 1 and record["tasks"]["depth"]["abs_rel"] > 0
    for t in TASKS:
        assert checkpoint_steps(run_dir, t) == [2, 4]
        log = read_log(run_dir / "logs" / f"{t}.jsonl")
        assert [r["step"] for r in log] == [1, 2, 3, 4] and all("loss/total" in r for r in log)
        assert any(k.startswith("consistency/") for k in log[0])
        assert list((run_dir / "tensorboard" / t).glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file()
    evaluated = eval_command(run_dir)
    for t in TASKS:
        for metric, value in record["tasks"][t].items():
            assert evaluated["0"][t][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (t, metric)
    assert "seed 0 depth: " in capsys.readouterr().out


def test_resume_continues_to_the_step_target_identically(sim_root: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train_command(None, overrides(sim_root, steps=4), cluster="none", run_dir=straight)
    broken = tmp_path / "broken"
    train_command(None, overrides(sim_root, steps=2), cluster="none", run_dir=broken)
    # the "crashed" run resumes with the full step target
    train_command(None, ["train.steps=4"], resume=broken)
    a = json.loads((straight / "metrics.json").read_text())["tasks"]
    b = json.loads((broken / "metrics.json").read_text())["tasks"]
    for t in TASKS:
        for metric in a[t]:
            assert b[t][metric] == pytest.approx(a[t][metric], rel=1e-5, abs=1e-7) or (
                math.isnan(a[t][metric]) and math.isnan(b[t][metric])), (t, metric)


def test_alone_mode_trains_without_mediator_or_relations(sim_root: Path, tmp_path: Path) -> None:
    cfg = load_config(None, overrides(sim_root, 2, "train.mode=alone"))
    record = run_collective(cfg, tmp_path, seed=0, tensorboard=False)
    assert record["mode"] == "alone"
    for t in TASKS:
        log = read_log(tmp_path / "logs" / f"{t}.jsonl")
        assert not [k for k in log[-1] if k.startswith("consistency/")]


def test_store_checkpoint_round_trip_identical_next_losses(sim_root: Path, tmp_path: Path) -> None:
    cfg = load_config(None, overrides(sim_root))
    runners, view = build_runners(cfg, tmp_path, seed=0, device="cpu", collective=True)
    for _ in range(2):
        for r in runners.values():
            r.train_step()
    for t, r in runners.items():
        r.save_checkpoint(tmp_path / f"{t}.pt")
    expected = {t: r.train_step() for t, r in runners.items()}
    restored, _ = build_runners(cfg, tmp_path, seed=0, device="cpu", collective=True)
    for t, r in restored.items():
        r.load_state_dict(torch.load(tmp_path / f"{t}.pt", weights_only=True))
    got = {t: r.train_step() for t, r in restored.items()}
    for t in TASKS:
        for key, value in expected[t].items():
            if key.startswith(("loss/", "consistency/")):
                assert got[t][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (t, key)


def test_train_command_without_shards_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no HDF5 shards"):
        train_command(None, [f"data.root={tmp_path / 'empty'}"], cluster="none", run_dir=tmp_path / "r")


def test_a_task_with_relation_factor_zero_trains_exactly_as_alone_beside_fed_peers(sim_root: Path, tmp_path: Path) -> None:
    """Factor 0 (tasks.<t>.relation_weight_by_labels) is the "alone" choice of bench label-weights: the
    task must then learn bit-for-bit what the alone arm learns, while its peers are still fed."""
    alone = run_collective(load_config(None, overrides(sim_root, 3, "train.mode=alone")), tmp_path / "a",
                           seed=0, tensorboard=False)
    unfed = run_collective(load_config(None, overrides(sim_root, 3, "tasks.depth.relation_weight_by_labels=[[1.0, 0.0]]")),
                           tmp_path / "b", seed=0, tensorboard=False)
    fed = run_collective(load_config(None, overrides(sim_root, 3)), tmp_path / "c", seed=0, tensorboard=False)
    assert unfed["tasks"]["depth"] == alone["tasks"]["depth"]
    assert fed["tasks"]["depth"] != alone["tasks"]["depth"]  # the comparison can tell: fed, depth differs
    assert unfed["tasks"]["normals"] != alone["tasks"]["normals"]  # its peers are still fed


def test_relation_options_from_the_config_reach_the_relation_for_each_receiver(sim_root: Path, tmp_path: Path) -> None:
    # a tolerance of 89.9 deg: segmentation hears (almost) nothing from the ground and vertical terms;
    # normals, as receiver, keep the full relation on the same batch and predictions.
    now = ("train.consistency_start_step=0", "train.consistency_ramp_steps=0")
    plain = load_config(None, overrides(sim_root, 1, *now))
    tolerant = load_config(None, overrides(sim_root, 1, *now,
                                           "relations.segmentation_geometry.options.segmentation_tolerance_deg=89.9"))
    logged = {}
    for name, cfg in (("plain", plain), ("tolerant", tolerant)):
        runners, _ = build_runners(cfg, tmp_path / name, seed=0, device="cpu", collective=True)
        logged[name] = {t: runners[t].train_step()["consistency/segmentation_geometry"]
                        for t in ("normals", "segmentation")}  # normals first: both see the same peers
    assert logged["tolerant"]["normals"] == logged["plain"]["normals"]
    assert logged["tolerant"]["segmentation"] < 0.5 * logged["plain"]["segmentation"]


def test_a_relation_that_teaches_one_task_feeds_only_that_task(sim_root: Path, tmp_path: Path) -> None:
    # segmentation_temporal relates segmentation, depth and motion but teaches segmentation alone:
    # only the segmentation runner evaluates it; a receiver it does not teach is a config error.
    now = ("train.consistency_start_step=0", "train.consistency_ramp_steps=0")
    config = load_config(None, overrides(sim_root, 1, *now, "relations.segmentation_temporal.weight=5"))
    runners, _ = build_runners(config, tmp_path / "g", seed=0, device="cpu", collective=True)
    assert [r.name for r, _ in runners["segmentation"].relations].count("segmentation_temporal") == 1
    assert not any(r.name == "segmentation_temporal" for t in ("depth", "motion") for r, _ in runners[t].relations)
    assert "relations.segmentation_temporal.receivers.depth: not a task this relation teaches; it teaches segmentation" \
        in str(pytest.raises(Exception, load_config, None,
                             ["relations.segmentation_temporal.receivers.depth=1"]).value)


def test_a_relation_with_next_frame_targets_gets_the_receivers_own_frame_t1_outputs(sim_root: Path, tmp_path: Path) -> None:
    # segmentation_temporal needs segmentation's outputs on frame t+1: the runner computes them with its
    # own model on rgb_next, without gradient, and passes them as logits_next; runners that receive no
    # such relation skip that forward.
    now = ("train.consistency_start_step=0", "train.consistency_ramp_steps=0")
    cfg = load_config(None, overrides(sim_root, 1, *now, "relations.segmentation_temporal.weight=5"))
    runners, _ = build_runners(cfg, tmp_path / "t", seed=0, device="cpu", collective=True)
    seg = runners["segmentation"]
    mediator = seg._mediator_batch()
    own = seg._forward(mediator)
    with_next = seg._with_next_frame_targets(own, mediator)
    assert set(with_next) == {"logits", "logits_next"} and with_next["logits"] is own["logits"]
    assert not with_next["logits_next"].requires_grad
    expected = seg._forward({**mediator, "rgb": mediator["rgb_next"]})["logits"]
    assert torch.allclose(with_next["logits_next"], expected, atol=1e-6)
    assert not torch.allclose(with_next["logits_next"], own["logits"], atol=1e-3)   # a different frame
    depth_own = runners["depth"]._forward(mediator)
    assert runners["depth"]._with_next_frame_targets(depth_own, mediator) is depth_own
    logged = {t: runners[t].train_step() for t in ("depth", "motion", "segmentation")}
    assert float(logged["segmentation"]["consistency/segmentation_temporal"]) >= 0.0
    assert not any("segmentation_temporal" in k for t in ("depth", "motion") for k in logged[t])
