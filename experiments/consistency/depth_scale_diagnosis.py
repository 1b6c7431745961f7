"""Depth scale diagnostic of a kept run: raw AbsRel, per-frame median-scaled AbsRel and mean |log scale ratio| on validation.
Run: python experiments/consistency/depth_scale_diagnosis.py RUN_DIR DATA_ROOT [KEY=VALUE ...] [--config consistency]

RUN_DIR is a run with a depth checkpoint (e.g. OUT/<variant>-<seed> of ``depth_feeds_10pct.py``), DATA_ROOT
the world it trained on (e.g. data/consistency/seed1-27x40-32x96); KEY=VALUE overrides of the preset (the
run's own, e.g. the variant's) set the depth network. The scale ratio of a frame is
median(ground truth) / median(prediction) over its valid pixels. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch


def scale_figures(prediction: torch.Tensor, truth: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """Per frame of (B, 1, H, W) depth maps (0 = no ground truth): AbsRel, AbsRel after scaling the prediction
    by median(truth) / median(prediction), and |log| of that ratio.

    Example:
        >>> truth = torch.tensor([[[[2.0, 4.0], [0.0, 8.0]]]])
        >>> raw, scaled, logs = scale_figures(2 * truth, truth)     # right shape, twice too far
        >>> [round(x, 4) for x in raw + scaled + logs]
        [1.0, 0.0, 0.6931]
    """
    raw, scaled, logs = [], [], []
    for p, g in zip(prediction.double(), truth.double()):
        valid = g > 0
        p, g = p[valid], g[valid]
        s = g.median() / p.median()
        raw.append(((p - g).abs() / g).mean().item())
        scaled.append(((p * s - g).abs() / g).mean().item())
        logs.append(abs(torch.log(s)).item())
    return raw, scaled, logs


def diagnose(run_dir: Path, root: Path, overrides: Sequence[str] = (), preset: str = "consistency",
             split: str = "val") -> dict[str, Any]:
    """The module docstring's figures for ``run_dir``'s newest depth checkpoint on ``split`` of ``root``."""
    from taskology.engine.batches import collate
    from taskology.engine.checkpoints import (
        checkpoint_path,
        checkpoint_steps,
        load_checkpoint,
    )
    from taskology.engine.registry import Registry
    from taskology.engine.task_data import open_task_data
    from taskology.errors import TaskologyError
    from taskology.experiment import arm_config

    config = arm_config(preset, 0.1, "collective", data_root=Path(root), overrides=overrides)
    steps = checkpoint_steps(run_dir, "depth")
    if not steps:
        raise TaskologyError(f"{run_dir}: no checkpoint of task 'depth'")
    task = Registry.current().build_task("depth", config)
    model = task.build_model()
    model.load_state_dict(load_checkpoint(checkpoint_path(run_dir, "depth", steps[-1]))["model"])
    model.eval()
    dataset = open_task_data(task, data_root=Path(root), config=config, with_mediator=False).evaluation(split)
    raw: list[float] = []
    scaled: list[float] = []
    logs: list[float] = []
    with torch.no_grad():
        for lo in range(0, len(dataset), 8):
            batch = collate([dataset[i] for i in range(lo, min(lo + 8, len(dataset)))])
            figures = scale_figures(task.forward(model, batch)["depth"], batch["depth"])
            for out, values in zip((raw, scaled, logs), figures):
                out.extend(values)
    n = len(raw)
    return {"run": str(run_dir), "abs_rel": sum(raw) / n, "abs_rel_median_scaled": sum(scaled) / n,
            "mean_abs_log_scale": sum(logs) / n, "frames": n}


def main(argv: list[str] | None = None) -> int:
    from taskology.errors import TaskologyError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("root", type=Path, help="the data root the run trained on")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the run's overrides of the preset")
    parser.add_argument("--config", default="consistency", help="the preset the run was trained from")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(diagnose(args.run_dir, args.root, args.overrides, args.config)))
    except TaskologyError as exc:
        print(f"depth_scale_diagnosis: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
