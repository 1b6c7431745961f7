"""Reports of training runs: what is read from run directories (:mod:`~taskology.report.runs`), the
metric table (:mod:`~taskology.report.tables`), loss and staleness plots (:mod:`~taskology.report.plots`),
and the prediction gallery (:mod:`~taskology.report.gallery`, :mod:`~taskology.report.predictions`).
The command itself is :func:`taskology.engine.report.report_command`.
"""
from __future__ import annotations
