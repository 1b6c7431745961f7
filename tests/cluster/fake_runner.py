"""A tiny trainable with the TaskRunner API (used until/besides the real runner in cluster tests).

Linear regression ``y = x @ W`` on random data from a seeded generator, plus, when peers are given, a
consistency term pulling its mediator outputs towards each peer's published outputs. Workers import
it by name like any trainable: LocalCluster worker processes inherit the test's ``sys.path``;
command-line workers get ``tests/cluster`` on ``PYTHONPATH``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskology.engine.protocol import Predictions

N_MEDIATOR = 8
IN, OUT = 6, 3


class FakeRunner:
    def __init__(self, *, task_name: str, config: Any = None, data_root: Path | None = None,
                 run_dir: Path | None = None, peer_view: Any = None, seed: int = 0, device: str = "cpu",
                 collective: bool = True, peers: tuple[str, ...] = (), step_sleep_s: float = 0.0) -> None:
        self.task_name, self.peer_view, self.collective = task_name, peer_view, collective
        self.peers, self.step_sleep_s = tuple(peers), step_sleep_s
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(IN, OUT)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.w_true = torch.linspace(-1, 1, IN * OUT).reshape(IN, OUT)
        self.mediator_x = torch.linspace(-1, 1, N_MEDIATOR * IN).reshape(N_MEDIATOR, IN)
        self.mediator_ids = [f"seq0:{i}" for i in range(N_MEDIATOR)]
        self.pool: list[str] = []
        self.step = 0
        self.peer_rows_used = 0

    def train_step(self) -> dict[str, float]:
        if self.step_sleep_s:
            time.sleep(self.step_sleep_s)
        x = torch.randn(16, IN, generator=self.generator)
        loss = torch.nn.functional.mse_loss(self.model(x), x @ self.w_true)
        scalars = {"loss/total": 0.0, "loss/mse": float(loss.detach())}
        if self.collective:
            for peer in self.peers:
                got = self.peer_view.peer_outputs(peer, {"sample_id": self.mediator_ids[:4]})
                if got is None:
                    continue
                self.peer_rows_used += len(got.staleness_steps)
                term = torch.nn.functional.mse_loss(self.model(self.mediator_x[:4]), got.outputs["y"])
                loss = loss + 0.1 * term
                scalars[f"consistency/{peer}"] = float(term.detach())
                scalars[f"staleness/{peer}/steps"] = float(np.mean(got.staleness_steps))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1
        scalars["loss/total"] = float(loss.detach())
        return scalars

    def predict(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"y": self.model(batch["x"])}

    def predict_mediator(self, sample_ids: list[str] | None = None) -> Predictions:
        with torch.no_grad():
            y = self.model(self.mediator_x).numpy()
        return Predictions(self.task_name, self.step, time.time(), list(self.mediator_ids), {"y": y})

    def set_mediator_pool(self, shard_paths: list[str]) -> None:
        self.pool = list(shard_paths)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        x = torch.linspace(-2, 2, 32 * IN).reshape(32, IN)
        with torch.no_grad():
            return {"mse": float(torch.nn.functional.mse_loss(self.model(x), x @ self.w_true))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["rng"])

    def save_checkpoint(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def restore(cls, path: Path, **init_kwargs: Any) -> "FakeRunner":
        runner = cls(**init_kwargs)
        runner.load_state_dict(torch.load(path, weights_only=True))
        return runner
