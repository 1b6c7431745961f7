"""Live terminal view of a supervised run: one row per actor (rich ``Live`` table).

Columns: task, state, step/target, steps/s, total loss, mean peer staleness (steps and seconds),
exchange bytes/s, restarts. :func:`status_table` is pure (statuses in, table out) and tested.
"""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table


def staleness_summary(staleness: Mapping[str, float]) -> tuple[float | None, float | None]:
    """Mean over peers of ``staleness/<peer>/mean_steps`` and ``.../mean_s`` (None when no peer used).

    Example:
        >>> staleness_summary({"staleness/a/mean_steps": 10.0, "staleness/b/mean_steps": 30.0,
        ...                    "staleness/a/mean_s": 1.0, "staleness/b/mean_s": 2.0})
        (20.0, 1.5)
    """
    steps = [v for k, v in staleness.items() if k.endswith("/mean_steps")]
    secs = [v for k, v in staleness.items() if k.endswith("/mean_s")]
    return (sum(steps) / len(steps) if steps else None, sum(secs) / len(secs) if secs else None)


def status_rows(actors: Mapping[str, Mapping[str, Any]], target_steps: int) -> list[list[str]]:
    """Rows of the table from ``{name: {"kind", "restarts", "status": actor status}}``."""
    rows = []
    for name, info in actors.items():
        st = info.get("status") or {}
        if info.get("kind") == "sim":
            rows.append([name, str(st.get("phase", "?")), f"{st.get('shards_available', 0)} shards", "",
                         f"{st.get('frames_per_s', 0.0):.1f} fr/s", "", "", str(info.get("restarts", 0))])
            continue
        mean_steps, mean_s = staleness_summary(st.get("staleness", {}))
        loss = (st.get("scalars") or {}).get("loss/total")
        rows.append([name, str(st.get("state", "starting")), f"{st.get('step', 0)}/{target_steps}",
                     f"{st.get('steps_per_s', 0.0):.2f}", "" if loss is None else f"{loss:.4g}",
                     "" if mean_steps is None else f"{mean_steps:.0f} st / {mean_s:.1f} s",
                     f"{st.get('exchange_bytes_per_s', 0.0) / 1e3:.1f} kB/s", str(info.get("restarts", 0))])
    return rows


def status_table(actors: Mapping[str, Mapping[str, Any]], target_steps: int) -> Table:
    table = Table(title="taskology run")
    for col in ("actor", "state", "step", "steps/s", "loss", "peer staleness", "exchange", "restarts"):
        table.add_column(col)
    for row in status_rows(actors, target_steps):
        table.add_row(*row)
    return table


def status_line(actors: Mapping[str, Mapping[str, Any]], target_steps: int) -> str:
    """One plain line of every actor's progress (logs, pipes): ``depth 120/300 loss 0.41 | ...``."""
    parts = []
    for info, row in zip(actors.values(), status_rows(actors, target_steps)):
        name, state, step, _rate, loss, staleness = row[:6]
        shown = state if state not in ("training", "generating") else ""
        if info.get("kind") == "sim":
            fields = (name, shown, step, loss)  # "<n> shards", "<r> fr/s"
        else:
            fields = (name, shown, step, f"loss {loss}" if loss else "", f"stale {staleness}" if staleness else "")
        parts.append(" ".join(x for x in fields if x))
    return " | ".join(parts)


class LiveView:
    """Context manager refreshing the table after each supervisor poll (no-op when ``enabled`` is False).

    When the console is not a terminal (a log file, a pipe) a live table cannot redraw, so one plain
    :func:`status_line` is printed every ``plain_every_s`` seconds instead."""

    def __init__(self, enabled: bool = True, console: Console | None = None, plain_every_s: float = 15.0) -> None:
        self.enabled = enabled
        self._live: Live | None = None
        self._console = console
        self.plain_every_s = plain_every_s
        self._plain = False
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if self.enabled:
            console = self._console or Console()
            if not console.is_terminal:
                self._console, self._plain = console, True
                return self
            self._live = Live(Table(), console=self._console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def update(self, supervisor: Any) -> None:
        if self._plain:
            import time

            if time.time() - self._last_plain >= self.plain_every_s:
                self._last_plain = time.time()
                summary = supervisor.summary()
                assert self._console is not None
                self._console.print(status_line(summary["actors"], summary["target_steps"]), highlight=False,
                                    soft_wrap=True)
        if self._live is not None:
            summary = supervisor.summary()
            self._live.update(status_table(summary["actors"], summary["target_steps"]))

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
