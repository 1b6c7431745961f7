"""On CUDA GPUs (skipped without one): a tiny distributed run on a local cluster puts each task on its
own GPU, at most ``ceil(T/G)`` tasks a GPU, as each task's own process reports it (its
``CUDA_VISIBLE_DEVICES``, the device of its model's parameters, the memory it holds there).
``scripts/gpu_check.sh`` runs this file and prints the table."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from taskology.engine.runner import TaskRunner

pytestmark = pytest.mark.gpu

TASKS = ("depth", "normals", "segmentation", "motion")


class GpuReportingRunner(TaskRunner):
    """The real TaskRunner; each step also reports, from inside the actor's process, where it trains."""

    def train_step(self) -> dict[str, float]:
        scalars = dict(super().train_step())
        device = next(self.model.parameters()).device
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        scalars["gpu/visible"] = float(visible) if visible.isdigit() else -1.0
        scalars["gpu/on_cuda"] = float(device.type == "cuda")
        scalars["gpu/memory_mb"] = torch.cuda.memory_allocated(device) / 1e6 if device.type == "cuda" else 0.0
        return scalars


@pytest.mark.timeout(300)
def test_each_task_trains_on_its_own_gpu(sim_root: Path, tmp_path: Path) -> None:
    from taskology.cluster.session import detect_gpus
    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed

    gpus = detect_gpus()
    cfg = load_config(None, [
        f"data.root={sim_root}", "data.test_sequences=1", "data.mediator_fraction=0.4", "train.steps=4",
        "train.mediator_batch_size=2", "train.log_every=2", "train.eval_every=0", "train.device=auto",
        "train.checkpoint_every_steps=4", "train.checkpoint_every_s=0", "train.seeds=[0]",
        "exchange.publish_every_steps=1", "exchange.refresh_every_s=0.2",
        *[f"tasks.{t}.{k}" for t in TASKS for k in ("width=4", "batch_size=2", "label_fraction=0.5")]])
    summary = run_distributed(cfg, tmp_path, resume=False, with_sim=False, live=False, timeout_s=240,
                              runner_cls=GpuReportingRunner)["0"]
    used: dict[str, str] = {}
    print(f"\n{len(TASKS)} tasks on GPUs {list(gpus)}: task, GPU (CUDA_VISIBLE_DEVICES in its process), "
          "the supervisor's record, MB held on the GPU")
    for task in TASKS:
        actor = summary["actors"][task]
        scalars = actor["status"]["scalars"]
        visible = str(int(scalars["gpu/visible"]))
        used[task] = visible
        print(f"  {task:<13} GPU {visible}   {actor['gpu']}   {scalars['gpu/memory_mb']:.1f} MB")
        assert actor["status"]["state"] == "done" and scalars["gpu/on_cuda"] == 1.0, f"{task} did not train on CUDA"
        assert scalars["gpu/memory_mb"] > 0 and actor["gpu"] == f"127.0.0.1/{visible}"
    per_gpu = {g: sum(v == str(g) for v in used.values()) for g in gpus}
    cap = -(-len(TASKS) // len(gpus))
    print(f"  tasks per GPU {per_gpu} (at most {cap} each)")
    assert set(used.values()) <= {str(g) for g in gpus} and max(per_gpu.values()) <= cap, per_gpu
