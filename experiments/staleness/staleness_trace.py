"""How each model's predictions move during a staleness-benchmark run: a probe recorded every few steps, drift matrices.
Run: python experiments/staleness/staleness_oscillation.py (this module is its library; see that script).

One run of an arm of :mod:`taskology.bench.staleness` (same world, config and seed, peers on the default
schedule: publications in turn), with a fixed probe of mediator samples predicted by both live models every
``every`` steps. The *drift matrix* of a task holds, for every pair of recorded steps, how far apart its
predictions at the two steps are (normals: mean angle in degrees; depth: mean absolute log ratio). Smooth
training gives a matrix that grows away from the diagonal; a model that swaps between two states at every
refresh of its peer gives a checkerboard (steps two refreshes apart agree, one refresh apart disagree).

Formerly ``taskology.bench.staleness_trace`` (last there in commit 05b8e3d, where it also traced the dropped
mitigations); the script writes ``experiments/staleness/results/staleness-oscillation-in-turn*.{md,png,json}``.

Example:
    >>> a = np.zeros((1, 3, 1, 2), np.float32); a[:, 2] = 1            # facing +z
    >>> b = np.zeros((1, 3, 1, 2), np.float32); b[:, 0] = 1            # facing +x
    >>> round(normals_drift(a, b), 6), round(normals_drift(a, a), 6)
    (90.0, 0.0)
    >>> round(depth_drift(np.full((1, 1, 2, 2), 2.0), np.full((1, 1, 2, 2), 4.0)), 6)   # log 2
    0.693147
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

#: how far apart two predictions of a task are, per output it is judged on.
DRIFT_OUTPUT = {"normals": "normals", "depth": "depth"}


def normals_drift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean angle in degrees between two (N, 3, H, W) normal fields (``atan2(|a x b|, a . b)`` in float64:
    exact near 0, where ``arccos`` of a rounded dot product is not)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cross = np.linalg.norm(np.cross(a, b, axis=1), axis=1)
    return float(np.degrees(np.arctan2(cross, (a * b).sum(axis=1))).mean())


def depth_drift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean ``|log a - log b|`` of two depth maps (metres, clipped at 1 mm)."""
    return float(np.abs(np.log(np.clip(a, 1e-3, None)) - np.log(np.clip(b, 1e-3, None))).mean())


DRIFT: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"normals": normals_drift, "depth": depth_drift}


def drift_matrix(trace: Mapping[int, np.ndarray], task: str) -> tuple[list[int], list[list[float]]]:
    """(recorded steps, matrix of drifts between every two of them) for ``task``'s predictions.

    Example:
        >>> d = {0: np.full((1, 1, 1, 1), 1.0), 10: np.full((1, 1, 1, 1), np.e), 20: np.full((1, 1, 1, 1), 1.0)}
        >>> drift_matrix(d, "depth")
        ([0, 10, 20], [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    """
    steps = sorted(trace)
    fn = DRIFT[task]
    return steps, [[round(fn(trace[a], trace[b]), 4) for b in steps] for a in steps]


def refresh_swing(steps: list[int], matrix: list[list[float]], interval: int, start: int) -> dict[str, float]:
    """How much of the movement is a swap: the mean drift between recorded steps one refresh interval
    apart (``one``) and two apart (``two``), from every recorded step at or after the relations' start.
    Smooth training gives ``two`` >= ``one``; a period-two swap gives ``two`` < ``one``.

    Example:
        >>> m = [[0, 9, 1, 9], [9, 0, 9, 1], [1, 9, 0, 9], [9, 1, 9, 0]]     # swaps every 10 steps
        >>> refresh_swing([0, 10, 20, 30], m, 10, 0)
        {'one': 9.0, 'two': 1.0}
    """
    index = {s: i for i, s in enumerate(steps)}
    one, two = [], []
    for s in steps:
        if s < start:
            continue
        if s + interval in index:
            one.append(matrix[index[s]][index[s + interval]])
        if s + 2 * interval in index:
            two.append(matrix[index[s]][index[s + 2 * interval]])
    return {"one": float(np.mean(one)) if one else float("nan"), "two": float(np.mean(two)) if two else float("nan")}


def trace_run(root: Path, steps: int, arm: int | str, seed: int, every: int, run_dir: Path,
              probe_samples: int = 32, width: int = 8, batch: int = 4, test_sequences: int = 3) -> dict[str, Any]:
    """One staleness-benchmark run of ``arm`` (an interval, ``taskology.bench.staleness.FLOOR`` or ``ALONE``;
    worker process, one torch thread) recording both models' predictions on a fixed probe of mediator samples
    every ``every`` steps; returns its test metrics and each task's drift matrix. ``width``, ``batch``,
    ``test_sequences``: the full benchmark's by default."""
    from taskology.bench.staleness import (
        LABEL_FRACTION,
        arm_config,
        arm_settings,
        train_with_stale_peers,
    )
    from taskology.engine.batches import BatchStream, to_device

    torch.set_num_threads(1)
    settings = arm_settings(arm)
    config = arm_config(root, steps, width, batch, test_sequences, settings.alone, LABEL_FRACTION)
    traces: dict[str, dict[int, np.ndarray]] = {t: {} for t in DRIFT}
    probe: list[dict[str, Any]] = []

    @torch.no_grad()
    def record(step: int, runners: Mapping[str, Any]) -> None:
        if step % every:
            return
        if not probe:  # its own stream and seed: the runs' mediator draws are untouched
            stream = BatchStream(next(iter(runners.values())).data.mediator, batch_size=8, seed=123,
                                 name="staleness probe")
            probe.extend(stream.next_batch() for _ in range(max(probe_samples // 8, 1)))
        for task, runner in runners.items():
            was_training = runner.model.training
            runner.model.eval()
            outs = [runner.task.forward(runner.model, to_device(b, runner.device))[DRIFT_OUTPUT[task]] for b in probe]
            runner.model.train(was_training)
            traces[task][step] = torch.cat(outs).float().cpu().numpy()

    result = train_with_stale_peers(config, run_dir, seed, settings.every, settings.dtype, on_round=record)
    result["drift"] = {t: dict(zip(("steps", "matrix"), drift_matrix(tr, t))) for t, tr in traces.items()}
    return result


def write_figure(path: Path, runs: Mapping[str, Mapping[str, Any]], title: str, first_step: int = 1) -> None:
    """A PNG of every run's drift matrices from step ``first_step`` on (the random initialisation, step 0,
    is far from everything and would set the colour scale): one column per arm, one row per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(runs)
    fig, axes = plt.subplots(len(DRIFT), len(arms), figsize=(4.2 * len(arms), 3.8 * len(DRIFT)), squeeze=False)
    def shown(arm: str, task: str) -> tuple[list[int], np.ndarray]:
        steps, matrix = runs[arm]["drift"][task]["steps"], np.asarray(runs[arm]["drift"][task]["matrix"])
        keep = [i for i, s in enumerate(steps) if s >= first_step]
        return [steps[i] for i in keep], matrix[np.ix_(keep, keep)]

    for r, task in enumerate(DRIFT):
        top = max(float(shown(a, task)[1].max()) for a in arms)
        for c, arm in enumerate(arms):
            steps, matrix = shown(arm, task)
            ax = axes[r][c]
            im = ax.imshow(matrix, cmap="magma", vmin=0, vmax=top,
                           extent=(steps[0], steps[-1], steps[-1], steps[0]))
            ax.set_title(f"{task}: {arm}", fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel("step")
            fig.colorbar(im, ax=ax, fraction=0.046, label="mean angle (deg)" if task == "normals" else "mean |log ratio|")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    from taskology.atomic import save_figure_atomic

    save_figure_atomic(fig, path, dpi=90)
