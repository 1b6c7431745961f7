"""Shared pytest fixtures and hardware gating (STYLE.md #12)."""
from __future__ import annotations

import os

import pytest

# Keep tests reproducible and light on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing means no GPU either
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_carla = pytest.mark.skip(reason="needs a CARLA server (set TASKOLOGY_CARLA_HOST=host:port)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "carla" in item.keywords and not os.environ.get("TASKOLOGY_CARLA_HOST"):
            item.add_marker(skip_carla)
