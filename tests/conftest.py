"""Shared pytest fixtures (``sim_root``: tiny simulated shards) and hardware gating (``gpu``, ``carla`` marks)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/simdata.py

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


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of tiny simulated shards per session (32x96), generated once and shared."""
    from simdata import make_sim_root

    return make_sim_root(tmp_path_factory.getbasetemp() / "taskology-sim-32x96")


@pytest.fixture(scope="session")
def lidar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny simulated shards with a 32-beam LiDAR (32x96 camera), generated once per session and shared."""
    from simdata import make_lidar_root

    return make_lidar_root(tmp_path_factory.getbasetemp() / "taskology-sim-lidar")


import torch as _torch  # noqa: E402

_torch.set_num_threads(1)  # 2 shared cores: one intra-op thread avoids oversubscription
