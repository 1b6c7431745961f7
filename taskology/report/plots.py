"""Report figures from logged scalars: loss curves per task and the staleness histogram (matplotlib Agg).

Example:
    >>> # plot_loss_curves("depth", {"collective": read_task_scalars(run, "depth")}, Path("loss_depth.png"))
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from taskology.report.runs import Series

#: line style per arm.
ARM_STYLE: dict[str, str] = {"alone": "--", "collective": "-"}


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_tags(scalars: Mapping[str, Series]) -> tuple[list[str], list[str]]:
    """(supervised ``loss/<term>`` tags except ``loss/total``, ``consistency/<relation>`` tags), sorted."""
    supervised = sorted(t for t in scalars if t.startswith("loss/") and t != "loss/total")
    consistency = sorted(t for t in scalars if t.startswith("consistency/") and t != "consistency/scale")
    return supervised, consistency


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists).

    Example:
        >>> smooth(np.array([1.0, 3.0, 5.0]), 2).tolist()
        [1.0, 2.0, 4.0]
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def _plot_series(ax, steps: np.ndarray, values: np.ndarray, label: str, style: str, colour: str) -> None:  # type: ignore[no-untyped-def]
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if steps.size == 0:
        return
    window = max(1, steps.size // 20)
    ax.plot(steps, values, style, color=colour, alpha=0.25, linewidth=0.8)
    ax.plot(steps, smooth(values, window), style, color=colour, linewidth=1.6, label=label)


def plot_loss_curves(task: str, arms: Mapping[str, Mapping[str, Series]], out_png: Path) -> Path:
    """Loss curves of ``task``: supervised terms (every arm) and consistency terms (collective arm).

    Args:
        task: task name (the title).
        arms: arm name -> that arm's scalars of ``task`` (tag -> (steps, values)).
        out_png: where the PNG goes.

    Raw values are drawn faintly, a trailing moving average boldly; y is logarithmic when every
    plotted value is positive.
    """
    plt = pyplot()
    fig, (ax_sup, ax_con) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    supervised_tags = sorted({t for s in arms.values() for t in loss_tags(s)[0]})
    consistency_tags = sorted({t for s in arms.values() for t in loss_tags(s)[1]})
    positive = {"sup": True, "con": True}
    for arm, scalars in arms.items():
        style = ARM_STYLE.get(arm, "-")
        for k, tag in enumerate(supervised_tags):
            if tag in scalars:
                _plot_series(ax_sup, *scalars[tag], f"{tag[5:]} ({arm})", style, colours[k % len(colours)])
                positive["sup"] &= bool(np.all(scalars[tag][1][np.isfinite(scalars[tag][1])] > 0))
        for k, tag in enumerate(consistency_tags):
            if tag in scalars:
                _plot_series(ax_con, *scalars[tag], f"{tag[12:]} ({arm})", style, colours[k % len(colours)])
                positive["con"] &= bool(np.all(scalars[tag][1][np.isfinite(scalars[tag][1])] > 0))
    for ax, key, title, tags in ((ax_sup, "sup", "supervised loss terms", supervised_tags),
                                 (ax_con, "con", "consistency/<relation> terms", consistency_tags)):
        ax.set_title(f"{task}: {title}")
        ax.set_xlabel("step")
        if tags:
            if positive[key]:
                ax.set_yscale("log")
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "none logged" + (" (no relation feeds this task in either arm)" if key == "con" else ""),
                    ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_staleness_histogram(samples: Mapping[str, tuple[np.ndarray, np.ndarray]], out_png: Path) -> Path:
    """Histograms of peer-prediction staleness, in steps and in seconds, one colour per consumer task.

    Args:
        samples: consumer task -> (steps behind (N,), seconds old (N,)) at its logged steps.
        out_png: where the PNG goes.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    for ax, k, unit in ((axes[0], 0, "steps behind the publisher"), (axes[1], 1, "seconds old")):
        values = [np.asarray(v[k], dtype=np.float64) for v in samples.values()]
        everything = np.concatenate(values) if values else np.zeros(0)
        if everything.size == 0:
            ax.text(0.5, 0.5, "no staleness logged", ha="center", va="center", transform=ax.transAxes)
        else:
            hi = float(everything.max())
            bins = np.linspace(0.0, hi if hi > 0 else 1.0, 25)
            ax.hist([v for v in values], bins=bins, stacked=True, label=list(samples), alpha=0.85)
            ax.legend(fontsize=8, title="consumer")
        ax.set_xlabel(f"mean staleness per logged step ({unit})")
        ax.set_ylabel("logged steps")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle("staleness of the peer predictions each task trained on")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
