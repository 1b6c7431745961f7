"""Predictions of the arms' trained tasks on held-out test samples, for the gallery.

Each task's newest checkpoint (``checkpoints/<task>/step_XXXXXXXX.pt`` of the arm's first seed, the
layout both engines write) is loaded with ``weights_only=True`` into a fresh model of the task and run
with the task's own ``forward`` in eval mode, on CPU, one sample at a time.

Example:
    >>> # rows = gallery_rows(arms, samples_per_task=3)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from taskology.report.gallery import GALLERY_TASKS, pick_indices
from taskology.report.runs import Arm


@dataclass
class GalleryInputs:
    """What the gallery draws, and why parts are missing.

    Attributes:
        rows: (row label, task, unbatched sample, arm -> unbatched outputs or None) per row.
        notes: one line per missing piece (no checkpoint, no data root, ...).
    """

    rows: list[tuple[str, Any, dict[str, Any], dict[str, dict[str, torch.Tensor] | None]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_trained_model(arm: Arm, task_name: str) -> tuple[Any, torch.nn.Module, int] | None:
    """(task object, eval-mode model on CPU, step) of ``arm``'s newest checkpoint of ``task_name``; None if none."""
    from taskology.engine.checkpoints import checkpoint_path, checkpoint_steps, load_checkpoint
    from taskology.engine.registry import Registry

    seed_dir = arm.seed_dirs()[0]
    steps = checkpoint_steps(seed_dir, task_name)
    if not steps:
        return None
    state = load_checkpoint(checkpoint_path(seed_dir, task_name, steps[-1]))
    task = Registry.current().build_task(task_name, arm.config)
    model = task.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    return task, model, steps[-1]


def _unbatched(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[0].detach().float().cpu() for k, v in outputs.items()}


def _batched(sample: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v]) for k, v in sample.items()}


def gallery_rows(arms: Mapping[str, Arm], samples_per_task: int = 3) -> GalleryInputs:
    """Rows ``(label, task, sample, {arm: outputs})`` for ``samples_per_task`` test samples per task.

    The samples are the same frames for every task (spread evenly over the test frames every task has);
    rows are grouped by sample. The test split is read from the data root of the collective arm (else
    the only arm). Only the camera tasks (:data:`~taskology.report.gallery.GALLERY_TASKS`) are drawn.
    """
    from taskology.engine.registry import Registry
    from taskology.engine.task_data import open_task_data

    result = GalleryInputs()
    reference = arms.get("collective") or next(iter(arms.values()))
    data_root = Path(reference.config.data.root)
    if not data_root.is_dir() or not any(data_root.glob("*.h5")):
        result.notes.append(f"gallery skipped: data.root {data_root} of {reference.run_dir} holds no shards "
                            "(run the report from the directory the run was started in)")
        return result
    roots = {a.name: Path(a.config.data.root).resolve() for a in arms.values()}
    if len(set(roots.values())) > 1:
        result.notes.append("gallery: the arms were trained on different data roots "
                            f"({', '.join(f'{k}: {v}' for k, v in roots.items())}); showing the test split of "
                            f"{data_root}")
    models: dict[str, dict[str, tuple[Any, torch.nn.Module, int] | None]] = {}
    for arm in arms.values():
        models[arm.name] = {}
        for task_name in [t for t in arm.tasks if t in GALLERY_TASKS]:
            loaded = load_trained_model(arm, task_name)
            models[arm.name][task_name] = loaded
            if loaded is None:
                result.notes.append(f"gallery: {arm.name} arm has no checkpoint of {task_name} "
                                    f"under {arm.seed_dirs()[0] / 'checkpoints' / task_name}")
    registry = Registry.current()
    tests: dict[str, Any] = {}
    for task_name in [t for t in reference.tasks if t in GALLERY_TASKS]:
        task = registry.build_task(task_name, reference.config)
        data = open_task_data(task, data_root=data_root, config=reference.config, with_mediator=False,
                              registry=registry)
        tests[task_name] = (task, data.evaluation("test"))
    common = None
    for _, dataset in tests.values():
        ids = list(dataset.sample_ids)
        common = ids if common is None else [s for s in common if s in set(ids)]
    common = common or []
    if not tests:
        result.notes.append(f"gallery skipped: {reference.name} arm trains no camera task")
        return result
    if not common:
        result.notes.append(f"gallery skipped: no test sample shared by all tasks in {data_root}")
        return result
    chosen = [common[i] for i in pick_indices(len(common), samples_per_task)]
    with torch.no_grad():
        for sample_id in chosen:
            for task_name, (task, dataset) in tests.items():
                sample = dataset[list(dataset.sample_ids).index(sample_id)]
                predictions: dict[str, dict[str, torch.Tensor] | None] = {}
                for arm_name in ("alone", "collective"):
                    loaded = models.get(arm_name, {}).get(task_name)
                    if loaded is None:
                        predictions[arm_name] = None
                        continue
                    arm_task, model, _ = loaded
                    predictions[arm_name] = _unbatched(arm_task.forward(model, _batched(sample)))
                result.rows.append((f"{sample_id}\n{task_name}", task, sample, predictions))
    return result
