"""``taskology bench --index``: the table of the product benchmarks' current results, written from their JSON.

One row per benchmark of :data:`taskology.bench.BENCHMARKS`: every acceptance target of its current result
(``<results>/<name>.json``, the run with the benchmark's own settings) with the value measured, whether it
was met, the date and commit of the run and the command that reproduces it. Results of other settings
(``--quick``, ``--set``, ``--steps``, ...) have other file names and are not listed, except a run on another
shipped preset with nothing else changed (``<results>/<name>-<preset>.json``, e.g. ``consistency --config
six-tasks``), which gets a row of its own. The table is written
to ``<results>/../README.md`` (``benchmarks/README.md``), never edited by hand.

Example:
    >>> target_line("parallel_speedup", {"value": 1.82, "target": ">= 1.7", "met": True})
    'parallel_speedup: **1.82** (>= 1.7) yes'
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from taskology.atomic import write_text_atomic

HEADER = """# Benchmarks

The current result of each product benchmark, one row each, written by `taskology bench --index` from
`results/<name>.json` (each file holds every figure, the command, date, machine and commit of its run;
`results/<name>.md` is the table a person reads). Speed figures are ratios against a reference measured in
the same run. Studies (why a figure is what it is, options tried) keep their results in
[../experiments](../experiments/README.md).

| benchmark | targets: value (goal) met | date | commit | command |
| --- | --- | --- | --- | --- |
"""


def target_line(name: str, target: Mapping[str, Any]) -> str:
    """One target as ``name: **value** (goal) yes|no``."""
    value = float(target["value"])
    shown = "n/a" if math.isnan(value) else f"{value:.3g}"
    return f"{name}: **{shown}** ({target['target']}) {'yes' if target['met'] else '**no**'}"


def index_row(name: str, record: Mapping[str, Any] | None, label: str | None = None) -> str:
    """The table row of benchmark ``name`` (shown as ``label`` when given) from its result record (``None``: not
    run yet)."""
    if record is None:
        return f"| `{name}` | not run yet (`taskology bench {name}`) | – | – | – |"
    targets = record.get("targets") or {}
    lines = [target_line(k, v) for k, v in targets.items()] or ["no targets: a measurement"]
    met = sum(bool(v["met"]) for v in targets.values())
    summary = f"{met} of {len(targets)} met<br>" if targets else ""
    commit = str(record.get("commit", "unknown")).split()[0][:12]
    return (f"| `{label or name}` | {summary}{'<br>'.join(lines)} | {str(record.get('date', ''))[:10]} | {commit} | "
            f"`{record.get('command', '')}` |")


def write_index(results: Path) -> Path:
    """Write ``results/../README.md`` from the current results; returns its path."""
    from taskology.bench import BENCHMARKS, result_stem
    from taskology.config.loading import preset_names

    results = Path(results)
    presets = preset_names()
    rows = []
    for name in BENCHMARKS:
        path = results / f"{name}.json"
        rows.append(index_row(name, json.loads(path.read_text()) if path.is_file() else None))
        for preset in presets:
            stem = result_stem(name, False, Path(preset))
            if stem != name and (results / f"{stem}.json").is_file():
                rows.append(index_row(name, json.loads((results / f"{stem}.json").read_text()),
                                      label=f"{name} --config {preset}"))
    out = results.parent / "README.md"
    write_text_atomic(out, HEADER + "\n".join(rows) + "\n")
    return out


__all__ = ["index_row", "target_line", "write_index"]
