"""A task and a relation are one module and one registry line each.

This module is such a module: it defines a toy task (the mean depth of a frame, from its image) and a toy
relation tying it to the depth task, registers both in a temporary registry (``monkeypatch`` on
``TASKS`` and ``RELATIONS``; nothing else in the package is touched), and trains them alone and
collectively, in-process and as actors on a local Dask cluster (whose worker processes get the registry
with the actors, not by importing a changed package).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pytest
import torch
from torch import nn

from taskology.losses.relation import Relation
from taskology.tasks.base import MetricState, Task, mean_state


class MeanDepthTask(Task):
    """The mean planar depth of a frame's valid pixels (metres), from its image: (B, 1)."""

    name: ClassVar[str] = "mean_depth"
    label_layers: ClassVar[tuple[str, ...]] = ("camera/depth",)

    def __init__(self, *, width: int = 4) -> None:
        self.width = width

    def prepare(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(sample)
        depth = sample["depth"]
        valid = depth > 0
        out["mean_depth"] = depth[valid].mean().reshape(1) if bool(valid.any()) else torch.ones(1)
        return out

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, self.width, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(self.width, 1))

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mean_depth": torch.exp(model(batch["rgb"]) + math.log(10.0))}  # (B, 1) metres

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mean_depth_log_l1": (outputs["mean_depth"].log() - batch["mean_depth"].log()).abs().mean()}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        error = (outputs["mean_depth"] - batch["mean_depth"]).abs() / batch["mean_depth"]
        return mean_state("abs_rel", error.double())


def mean_depth_agreement(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                         tasks: Mapping[str, Task]) -> torch.Tensor:
    """The toy relation: the mean of the depth map (where below the depth task's far limit) is the mean depth."""
    depth = outputs["depth"]["depth"]                                        # (B, 1, H, W) metres
    near = (depth < 0.95 * tasks["depth"].max_depth).to(depth.dtype)
    mean = (depth * near).sum(dim=(1, 2, 3)) / near.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return (outputs["mean_depth"]["mean_depth"][:, 0].log() - mean.clamp_min(1e-3).log()).abs().mean()


TOY_RELATION = Relation("mean_depth_agreement", mean_depth_agreement, ("depth", "mean_depth"))


@pytest.fixture
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.losses import RELATIONS
    from taskology.tasks import TASKS

    monkeypatch.setitem(TASKS, "mean_depth", MeanDepthTask)
    monkeypatch.setitem(RELATIONS, "mean_depth_agreement", TOY_RELATION)


def toy_config(root: Path, mode: str, *extra: str) -> Any:
    from taskology.config import load_config

    return load_config(None, [
        f"data.root={root}", "data.test_sequences=1", "data.mediator_fraction=0.4", "train.steps=6",
        f"train.mode={mode}", "train.mediator_batch_size=2", "train.log_every=1", "train.eval_every=0",
        "train.device=cpu", "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0]",
        "tasks.normals.enabled=false", "tasks.segmentation.enabled=false", "tasks.motion.enabled=false",
        "relations.mean_depth_agreement.weight=1", "exchange.publish_every_steps=1", "exchange.refresh_every_s=0.2",
        *[f"tasks.{t}.{k}" for t in ("depth", "mean_depth") for k in ("width=4", "batch_size=2", "label_fraction=0.5")],
        *extra])


def test_the_toy_task_trains_alone_and_collectively_in_process(toy_registry: None, sim_root: Path,
                                                               tmp_path: Path) -> None:
    from taskology.engine.collective import build_runners, run_collective

    records = {mode: run_collective(toy_config(sim_root, mode), tmp_path / mode, seed=0, tensorboard=False)
               for mode in ("alone", "collective")}
    for mode, record in records.items():
        assert set(record["tasks"]) == {"depth", "mean_depth"}, mode
        assert 0 < record["tasks"]["mean_depth"]["abs_rel"] < 10, mode
    assert records["collective"]["tasks"] != records["alone"]["tasks"]  # the relation changed what was learnt
    runners, _ = build_runners(toy_config(sim_root, "collective"), tmp_path / "look", seed=0, device="cpu",
                               collective=True)
    for task in ("depth", "mean_depth"):  # it teaches both tasks, and each one's step logs it
        assert [r.name for r, _ in runners[task].relations] == ["mean_depth_agreement"]
        scalars = runners[task].train_step()
        assert scalars["consistency/mean_depth_agreement"] > 0
    # the toy task's labels reach its batches (its prepare ran), none of depth's other labels do
    assert set(runners["mean_depth"].train_stream.next_batch()) == {"sample_id", "rgb", "K", "cam_from_ego", "depth",
                                                                    "mean_depth"}


def test_a_wrong_receiver_of_the_toy_relation_is_refused(toy_registry: None) -> None:
    from taskology.config import load_config
    from taskology.errors import ConfigError

    with pytest.raises(ConfigError, match="relations.mean_depth_agreement.receivers.normals: not a task this "
                                          "relation teaches; it teaches depth, mean_depth"):
        load_config(None, ["relations.mean_depth_agreement.receivers.normals=0"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_toy_task_trains_as_dask_actors_on_a_local_cluster(toy_registry: None, sim_root: Path,
                                                               tmp_path: Path) -> None:
    from taskology.engine.distributed import run_distributed

    # lockstep (every step waits for the peer's publication of its own step): the relation runs on every step
    # whatever the two processes' speeds, so the count below is exact
    summary = run_distributed(toy_config(sim_root, "collective", "cluster.address=local", "cluster.dashboard=false",
                                         "exchange.lockstep_lag_steps=0"),
                              tmp_path, resume=False, with_sim=False, live=False, timeout_s=180,
                              spare_workers=0)["0"]
    for task in ("depth", "mean_depth"):
        status = summary["actors"][task]["status"]
        assert status["state"] == "done" and status["step"] == 6, status
        assert status["relation_terms"].get("mean_depth_agreement", 0) == 6, status
