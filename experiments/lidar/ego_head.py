"""How well does the tracking task's ego-motion head learn from a few labelled sweep pairs?
Run: python experiments/lidar/ego_head.py DATA_ROOT [--pairs 10] [--steps 300] [--out results/ego-head.json]

Trains only the ``tracking`` task's supervised losses on ``--pairs`` labelled pairs drawn from the first half
of the held-out sequences of a simulated world (``taskology sim``), and reports the ego translation error (m)
on pairs of the other half every 50 steps, next to the error of always predicting the mean translation.
Nothing here is used by the package; it measures the head the package ships.

Example:
    >>> summary_row([(0, 0.5), (50, 0.2), (100, 0.1)], 0.21)
    {'first': 0.5, 'last': 0.1, 'best': 0.1, 'mean_predictor': 0.21}
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from taskology.data.datasets import FrameDataset
from taskology.data.splits import make_splits
from taskology.engine.batches import collate
from taskology.engine.task_data import PreparedDataset
from taskology.geometry.pillars import BevGrid
from taskology.tasks.tracking import TrackingTask


def summary_row(curve: list[tuple[int, float]], mean_predictor: float) -> dict[str, float]:
    """First, last and best test error of a learning curve ``[(step, error)]``, and the mean predictor's."""
    errors = [e for _, e in curve]
    return {"first": errors[0], "last": errors[-1], "best": min(errors), "mean_predictor": mean_predictor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a simulated world's folder (with LiDAR)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    task = TrackingTask(width=8, grid=BevGrid((-32.0, 32.0), (-32.0, 32.0), (-0.5, 4.5), 0.5))
    manifest = make_splits(args.root, {"tracking": 1.0}, test_sequences=12, mediator_fraction=0.5, seed=0,
                           write=False)
    pairs = PreparedDataset(FrameDataset(manifest, "test", None, layers=task.input_layers + task.label_layers,
                                         pairs=True), task)
    sequences = [s for s, _ in pairs.base.samples]
    first = set(sorted(set(sequences))[:6])
    train = [i for i, s in enumerate(sequences) if s in first]
    test = [i for i, s in enumerate(sequences) if s not in first][::3]
    rng = np.random.default_rng(args.seed)
    pool = [pairs[int(i)] for i in rng.choice(train, args.pairs, replace=False)]
    test_batch = collate([pairs[i] for i in test])
    truth = test_batch["lidar_motion"][:, :3, 3]
    mean_predictor = float((truth - truth.mean(0)).norm(dim=1).mean())
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    curve, started = [], time.time()
    for step in range(args.steps + 1):
        if step % 50 == 0:
            model.eval()
            with torch.no_grad():
                error = float((task.forward(model, test_batch)["ego_translation"] - truth).norm(dim=1).mean())
            curve.append((step, error))
            print(f"step {step}: test ego translation error {error:.3f} m ({time.time() - started:.0f} s)")
            model.train()
        batch = collate([pool[int(i)] for i in rng.choice(len(pool), 4)])
        loss = sum(task.supervised_loss(task.forward(model, batch), batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    row = {**summary_row(curve, mean_predictor), "curve": curve, "seconds": time.time() - started,
           "pairs": args.pairs, "steps": args.steps}
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}))
    if args.out is not None:
        args.out.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
