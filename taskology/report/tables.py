"""The metric table of a report: held-out test metrics alone vs collective per task, with the change.

Example:
    >>> rows = metric_rows({"depth": {"abs_rel": 0.2}}, {"depth": {"abs_rel": 0.15}})
    >>> round(rows[0].change_pct, 6), rows[0].verdict
    (-25.0, 'better')
    >>> metric_table_markdown(rows).splitlines()[2]
    '| depth | abs_rel ↓ | 0.2 | 0.15 | -25.0% | better |'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

#: metrics where a larger value is better; every other metric is an error (smaller is better). Per-class metrics
#: (``<class>/<name>``, the LiDAR tasks') are judged by ``<name>``; ``ap_*`` (average precision) is higher-better.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"delta1", "miou", "pixel_acc", "within_11_25_pct", "mota", "idf1"})
#: counts that say how much was evaluated, not how well (no better or worse): ``<class>/<name>`` of the LiDAR
#: tasks' figures.
COUNTS: frozenset[str] = frozenset({"num_gt", "num_pred", "num_objects", "num_predictions", "motion_pairs"})
#: bookkeeping keys of a metrics record that are not metrics.
NOT_METRICS: frozenset[str] = frozenset({"step"})


def _base_name(metric: str) -> str:
    """``vehicle/ap_bev@0.7`` -> ``ap_bev``; ``abs_rel`` -> ``abs_rel``."""
    return metric.rsplit("/", 1)[-1].split("@", 1)[0]


@dataclass(frozen=True)
class MetricRow:
    """One line of the table; ``None`` where an arm lacks the value."""

    task: str
    metric: str
    alone: float | None
    collective: float | None

    @property
    def higher_is_better(self) -> bool:
        name = _base_name(self.metric)
        return name in HIGHER_IS_BETTER or name.startswith(("ap_", "iou_"))

    @property
    def is_count(self) -> bool:
        """A count of what was evaluated (no direction, no verdict)."""
        return _base_name(self.metric) in COUNTS

    @property
    def change_pct(self) -> float | None:
        """``(collective - alone) / |alone| * 100``; None if either is missing/non-finite or alone is 0."""
        a, c = self.alone, self.collective
        if a is None or c is None or not (math.isfinite(a) and math.isfinite(c)) or a == 0:
            return None
        return (c - a) / abs(a) * 100.0

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` / ``same`` for the collective arm; ``""`` when there is no change."""
        change = self.change_pct
        if change is None or self.is_count:
            return ""
        if change == 0:
            return "same"
        return "better" if (change > 0) == self.higher_is_better else "worse"


def metric_rows(alone: Mapping[str, Mapping[str, float]] | None,
                collective: Mapping[str, Mapping[str, float]] | None) -> list[MetricRow]:
    """Rows for every (task, metric) either arm has, tasks and metrics in sorted order."""
    alone = alone or {}
    collective = collective or {}
    rows = []
    for task in sorted(set(alone) | set(collective)):
        names = sorted((set(alone.get(task, {})) | set(collective.get(task, {}))) - NOT_METRICS)
        for name in names:
            a = alone.get(task, {}).get(name)
            c = collective.get(task, {}).get(name)
            rows.append(MetricRow(task, name, None if a is None else float(a), None if c is None else float(c)))
    return rows


def format_value(value: float | None) -> str:
    """4 significant digits; ``—`` for missing, ``nan`` for non-finite.

    Example:
        >>> format_value(0.123456), format_value(1234.5), format_value(None)
        ('0.1235', '1234', '—')
    """
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "nan"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def metric_table_markdown(rows: list[MetricRow]) -> str:
    """A Markdown table: task | metric (↑/↓, # for a count) | alone | collective | change | verdict."""
    lines = ["| task | metric | alone | collective | change | collective is |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in rows:
        arrow = "#" if row.is_count else "↑" if row.higher_is_better else "↓"
        change = row.change_pct
        lines.append(f"| {row.task} | {row.metric} {arrow} | {format_value(row.alone)} | "
                     f"{format_value(row.collective)} | {'—' if change is None else f'{change:+.1f}%'} | "
                     f"{row.verdict or '—'} |")
    return "\n".join(lines)
