from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simdata import make_sim_root

    # one fixed folder per session, shared by tests/engine and tests/losses (generated once)
    return make_sim_root(tmp_path_factory.getbasetemp() / "taskology-sim-32x96")

import torch as _torch

_torch.set_num_threads(1)  # 2 shared cores: one intra-op thread avoids oversubscription
