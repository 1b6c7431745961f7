"""taskology: collective training of separate perception networks tied by consistency relations.

Implements and extends "Taskology: Utilizing Task Relations at Scale" (Lu et al., CVPR 2021).
See README.md and docs/ for the tour; the conventions (frames, units, signs, contracts) are in docs/conventions.md.
"""
from __future__ import annotations

__version__ = "0.1.0"
