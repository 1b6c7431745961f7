"""Synthetic in-memory TaskData for runner mechanics tests (no files, random but well-formed)."""
from __future__ import annotations


import torch

from taskology.engine.task_data import TaskData


class SyntheticSamples:
    """Deterministic random samples with every key any camera task or relation reads."""

    def __init__(self, n: int, hw: tuple[int, int] = (32, 96), seed: int = 0, prefix: str = "syn") -> None:
        self.n, self.hw, self.seed = n, hw, seed
        self.sample_ids = [f"{prefix}:{i}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        h, w = self.hw
        rgb = torch.rand(3, h, w, generator=g)
        depth = 2.0 + 20.0 * rgb[:1].mean(0, keepdim=True)          # learnable from the image
        normals = torch.nn.functional.normalize(torch.stack([rgb[0] - 0.5, rgb[1] - 0.5, -torch.ones(h, w)]), dim=0)
        semantic = torch.tensor([1, 11, 14])[(rgb[2] * 2.999).long()]
        K = torch.tensor([[40.0, 0, (w - 1) / 2], [0, 40.0, (h - 1) / 2], [0, 0, 1]])
        pose = torch.eye(4)
        pose[2, 3] = -0.5 * float(rgb.mean())
        cam_from_ego = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])
        return {"rgb": rgb, "rgb_next": torch.roll(rgb, 1, dims=2), "K": K, "cam_from_ego": cam_from_ego,
                "depth": depth, "normals": normals, "semantic": semantic, "cam_next_from_cam": pose,
                "object_translation": torch.zeros(3, h, w), "object_translation_valid": torch.ones(1, h, w, dtype=torch.bool),
                "movable": (semantic == 14)[None], "sample_id": self.sample_ids[index]}


def synthetic_task_data(n_train: int = 6, n_mediator: int = 6, n_test: int = 4, seed: int = 0) -> TaskData:
    return TaskData(train=SyntheticSamples(n_train, seed=seed, prefix="train"),
                    mediator=SyntheticSamples(n_mediator, seed=seed + 1, prefix="med"),
                    splits={"test": SyntheticSamples(n_test, seed=seed + 2, prefix="test")},
                    open_mediator=lambda paths: SyntheticSamples(len(paths) * 2, seed=len(paths), prefix="pool"))
