"""On a CUDA GPU (skipped without one): the engine trains there and computes what the CPU computes.

- one collective round (four camera tasks, the four default relations) gives the same losses on the
  CPU and the GPU, from the same seed (TF32 off: float32 rounding and reduction order only), to 1e-3
  relative; the photometric term to 1e-2 only, because of its auto-mask (a pixel counts when its warped
  error is below the unwarped one: near initialisation the two are almost equal for most pixels, so
  rounding flips some of them); measured on an H200: 3e-3 at 128x416, every other term <= 2e-4;
- on identical inputs the photometric relation's unwarped error map (frame t against frame t+1) agrees
  to 1e-5, its auto-mask (warped error below unwarped) on >= 99 % of pixels, its smoothness term to 1e-5;
- a distributed run with ``train.device=cuda`` trains its actors on the GPU, and its checkpoints load
  on a CPU-only runner (``map_location="cpu"``, ``weights_only=True``) and evaluate as on the GPU.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taskology.bench.device import no_tf32

pytestmark = pytest.mark.gpu


def _config(sim_root: Path, *extra: str):
    from taskology.config import load_config

    return load_config(None, [
        f"data.root={sim_root}", "data.test_sequences=1", "data.mediator_fraction=0.4", "train.steps=4",
        "train.mediator_batch_size=2", "train.log_every=2", "train.eval_every=0",
        "train.checkpoint_every_steps=2", "train.checkpoint_every_s=0", "train.seeds=[0]",
        *[f"tasks.{t}.{k}" for t in ("depth", "normals", "segmentation", "motion")
          for k in ("width=4", "batch_size=2", "label_fraction=0.5")], *extra])


@pytest.mark.timeout(240)
def test_a_collective_round_on_cuda_matches_the_cpu(sim_root: Path, tmp_path: Path) -> None:
    from taskology.engine.collective import build_runners

    cfg = _config(sim_root)
    rounds = {}
    with no_tf32():
        for device in ("cpu", "cuda"):
            runners, _ = build_runners(cfg, tmp_path / device, seed=0, device=device, collective=True)
            assert {next(r.model.parameters()).device.type for r in runners.values()} == {device}
            rounds[device] = {t: r.train_step() for t, r in runners.items()}
    compared = 0
    for task, scalars in rounds["cpu"].items():
        terms = {k for k in scalars if k.startswith(("loss/", "consistency/"))}
        assert any(k.startswith("consistency/") for k in terms), f"{task}: no relation term was computed"
        assert terms == {k for k in rounds["cuda"][task] if k.startswith(("loss/", "consistency/"))}
        for key in terms:
            cpu, gpu = scalars[key], rounds["cuda"][task][key]
            tolerance = 1e-2 if "photometric" in key or key == "loss/total" else 1e-3
            assert abs(gpu - cpu) <= tolerance * max(abs(cpu), 1e-6), f"{task} {key}: cpu {cpu} vs cuda {gpu}"
            compared += 1
    assert compared >= 12


@pytest.mark.timeout(240)
def test_the_photometric_error_on_cuda_matches_the_cpu_on_identical_inputs(sim_root: Path, tmp_path: Path) -> None:
    from taskology.engine.batches import to_device
    from taskology.engine.collective import build_runners
    from taskology.losses.photometric import photometric_error, photometric_terms

    runners, _ = build_runners(_config(sim_root), tmp_path, seed=0, device="cpu", collective=True)
    batch = runners["depth"].mediator.stream.next_batch()
    outputs = {t: runners[t].predict(batch) for t in ("depth", "motion")}
    terms, errors = {}, {}
    with no_tf32():
        for device in ("cpu", "cuda"):
            on = to_device(batch, torch.device(device))
            outs = {t: {k: v.to(device) for k, v in o.items()} for t, o in outputs.items()}
            terms[device] = {k: v.cpu() for k, v in photometric_terms(outs, on).items()}
            errors[device] = photometric_error(on["rgb"].float(), on["rgb_next"].float()).cpu()
    assert torch.allclose(errors["cuda"], errors["cpu"], atol=1e-5, rtol=0)
    flipped = (terms["cuda"]["mask"] != terms["cpu"]["mask"]).float().mean().item()
    assert terms["cpu"]["mask"].mean().item() > 0.05 and flipped <= 0.01, f"mask disagrees on {flipped:.2%}"
    assert abs(terms["cuda"]["smoothness"].item() - terms["cpu"]["smoothness"].item()) <= 1e-5


@pytest.mark.timeout(300)
def test_a_distributed_run_trains_on_the_gpu_and_its_checkpoints_evaluate_the_same_on_the_cpu(
        sim_root: Path, tmp_path: Path) -> None:
    from taskology.engine.actor import CheckpointDir
    from taskology.engine.distributed import run_distributed
    from taskology.engine.peers import InProcessPeerView
    from taskology.engine.runner import TaskRunner

    cfg = _config(sim_root, "train.device=cuda", "tasks.segmentation.enabled=false",
                  "tasks.motion.enabled=false", "exchange.publish_every_steps=1", "exchange.refresh_every_s=0.2")
    summary = run_distributed(cfg, tmp_path, resume=False, with_sim=False, live=False, timeout_s=240)["0"]
    for task in ("depth", "normals"):
        status = summary["actors"][task]["status"]
        assert status["state"] == "done" and status["step"] == 4
        path = CheckpointDir(tmp_path / "checkpoints" / task).latest()
        assert path is not None
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["rng"]["cuda"], f"{task}: the checkpoint holds no CUDA RNG state: it did not train on the GPU"
        metrics = {}
        with no_tf32():
            for device in ("cpu", "cuda"):
                runner = TaskRunner.restore(path, task_name=task, config=cfg, data_root=sim_root,
                                            run_dir=tmp_path / f"eval-{device}", peer_view=InProcessPeerView(),
                                            seed=0, device=device, collective=False)
                assert next(runner.model.parameters()).device.type == device
                metrics[device] = runner.evaluate("test")
        assert metrics["cpu"] and set(metrics["cpu"]) == set(metrics["cuda"])
        for key, cpu in metrics["cpu"].items():
            assert abs(metrics["cuda"][key] - cpu) <= 1e-3 * max(abs(cpu), 1e-3), f"{task} {key}"
