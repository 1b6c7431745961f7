from __future__ import annotations

import torch as _torch

_torch.set_num_threads(1)  # 2 shared cores: one intra-op thread avoids oversubscription
