"""``taskology bench geometry``: the Numba geometry kernels against their named references.

Combines three measurement sets run in the same process, one after the other:

- boxes (:mod:`taskology.bench.geometry_boxes`): rotated BEV IoU vs shapely 2 + STRtree,
  points-in-boxes vs vectorised NumPy, JIT compile and cache times;
- camera (:mod:`taskology.bench.geometry_camera`): unprojection and normals vs kornia, batched
  Kabsch vs batched NumPy SVD, JIT compile and cache times;
- pillars (:mod:`taskology.bench.geometry_pillars`): the BEV pillar encoding of a simulator LiDAR sweep
  vs its NumPy and torch twins, JIT compile and cache times.
"""
from __future__ import annotations

from taskology.bench import BenchResult


def run(quick: bool) -> BenchResult:
    from taskology.bench import geometry_boxes, geometry_camera, geometry_pillars

    figures: dict = {}
    targets: dict = {}
    tables: list[str] = []
    for name, part in (("boxes", geometry_boxes), ("camera", geometry_camera), ("pillars", geometry_pillars)):
        part_figures, part_table, part_targets = part.measure(quick)
        figures[name] = part_figures
        targets.update(part_targets)
        tables.append(f"## {name}\n\n{part_table.rstrip()}\n")
    notes = ("Times are medians of repeated runs after a warm-up call (JIT compiled and cached). "
             "Ratios are reference time / taskology time, both measured in this run.")
    return BenchResult(figures=figures, table="\n".join(tables), targets=targets, notes=notes)
