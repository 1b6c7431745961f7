"""Fixtures of the studies' tests: a tiny simulated world and a tiny trained run, both reached through the
shipped ``consistency`` preset with :func:`tiny_overrides`, so the study scripts run on them unchanged.

- ``tiny_world``: ``(overrides, data_root)``; 5 sequences x 8 frames at 32x96 (seed 0), 1 test and 1
  validation sequence, simulated once per session by :func:`taskology.experiment.ensure_world`.
- ``tiny_run``: a collective run of that world at 10 % labels (6 steps, width-4 networks), seed 0, evaluated on
  validation; its folder holds every task's final checkpoint and ``metrics.json``.

Nothing here is a result: the sizes only make the code paths run (a few seconds in all).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

TASKS = ("depth", "normals", "segmentation", "motion")


def tiny_overrides(data_root: Path) -> list[str]:
    """Overrides of the ``consistency`` preset for the tiny world and tiny runs (test sizes, not a result)."""
    return ([f"data.root={data_root}", "sim.sequences=5", "sim.frames=8", "sim.seed=0", "sim.camera=32x96",
             "data.camera=32x96", "data.test_sequences=1", "data.val_sequences=1", "train.steps=6",
             "train.mediator_batch_size=2", "train.consistency_start_step=2", "train.consistency_ramp_steps=2",
             "train.device=cpu", "train.seeds=[0]"]
            + [f"tasks.{t}.{k}" for t in TASKS for k in ("width=4", "batch_size=2")])


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny world: ``.overrides`` (for the ``consistency`` preset) and ``.root`` (its shards)."""
    from taskology.config import load_config
    from taskology.experiment import ensure_world

    overrides = tiny_overrides(tmp_path_factory.mktemp("experiments-data"))
    root = ensure_world(load_config("consistency", overrides), say=lambda line: None)
    return SimpleNamespace(overrides=overrides, root=root)


@pytest.fixture(scope="session")
def tiny_run(tiny_world: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny collective run at 10 % labels on the tiny world (checkpoints of every task)."""
    from taskology.experiment import run_arm

    run_dir = tmp_path_factory.mktemp("experiments-runs") / "0.1-collective-0"
    run_arm("consistency", 0.1, "collective", seed=0, run_dir=run_dir, data_root=tiny_world.root,
            overrides=tiny_world.overrides, split="val")
    return run_dir
