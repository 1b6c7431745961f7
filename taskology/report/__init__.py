"""Reports of training runs: what is read from run directories (:mod:`~taskology.report.runs`), the
metric table (:mod:`~taskology.report.tables`), loss and staleness plots (:mod:`~taskology.report.plots`),
and the prediction gallery (:mod:`~taskology.report.gallery`, :mod:`~taskology.report.predictions`).
The command itself is :func:`taskology.report.command.report_command`. Reports read what the engine
wrote (``taskology.engine``); the engine never imports this package.
"""
from __future__ import annotations
