"""Does a motion network read the frame pair? Ego-translation figures against ground truth, from the shards.
Run: python experiments/motion/diagnose_motion.py baselines|oracle DATA_ROOT [--config consistency]  |  ... frames DATA_ROOT CHECKPOINT

For a data root (shards + ``splits.json``, e.g. the folder ``taskology bench consistency`` simulates under
``data.root``) and the split settings of ``--config``:

- ``baselines``: what needs no pair at all. The error on the validation sequences of a constant (the
  mean step of the labelled training frames, and of every pair of the training sequences); on the unlabelled (mediator) frames of the training
  sequences, the error of each sequence's own mean labelled step (a lookup a network can learn from a
  sequence's look); the spread of the step within a validation sequence.
- ``oracle``: is the motion visible in a pair at this camera size? With the ground-truth depth of frame t
  and the ground-truth rotation and direction of travel, the step length (0..1.6 m) whose warp of frame
  t+1 best explains frame t (the photometric error of :mod:`taskology.losses.photometric`), against the
  true length, on the validation pairs.
- ``frames CKPT``: a motion checkpoint's error on its labelled training frames, on the unlabelled frames
  of the same sequences, and on the validation sequences (memorised frames vs motion read from pairs).

Errors are Euclidean (m), as the engine's ``ego_translation_err_m``. Choices are made on validation;
never point this at the test split to make them.

Usage (``--config``: a shipped preset's name or a YAML file, default ``consistency``; ``--set``: its overrides):
    python experiments/motion/diagnose_motion.py baselines DATA_ROOT [--config consistency] [--set KEY=VALUE ...]
    python experiments/motion/diagnose_motion.py oracle DATA_ROOT
    python experiments/motion/diagnose_motion.py frames DATA_ROOT RUN_DIR/checkpoints/motion/step_00001200.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import torch


def ego_steps(root: Path, sequence: str) -> np.ndarray:
    """(F-1, 3) translation of ``cam_{t+1}_from_cam_t`` for every pair of a sequence, metres."""
    with h5py.File(root / f"{sequence}.h5", "r") as h:
        world_from_ego, cam_from_ego = h["ego/world_from_ego"][:], h["camera/cam_from_ego"][:]
    ego_from_cam = np.linalg.inv(cam_from_ego)
    return np.stack([(cam_from_ego @ np.linalg.inv(world_from_ego[f + 1]) @ world_from_ego[f] @ ego_from_cam)[:3, 3]
                     for f in range(len(world_from_ego) - 1)])


def pair_starts(frames: list[int], n_pairs: int) -> list[int]:
    """The frames that start a pair (frame t with a frame t+1 in the sequence)."""
    return [f for f in frames if f < n_pairs]


def baselines(root: Path, manifest) -> None:  # type: ignore[no-untyped-def]
    labelled = np.concatenate([v[pair_starts(manifest.train[s], len(v))] for s in manifest.train
                               for v in [ego_steps(root, s)]])
    mean = labelled.mean(0)
    val = np.concatenate([ego_steps(root, s) for s in manifest.val])
    print(f"constant (mean labelled step) on the validation pairs: {np.linalg.norm(val - mean, axis=1).mean():.3f} m")
    every = np.concatenate([ego_steps(root, s) for s in sorted(set(manifest.train) | set(manifest.mediator))])
    print(f"constant (mean step of every pair of the training sequences) on the validation pairs: "
          f"{np.linalg.norm(val - every.mean(0), axis=1).mean():.3f} m")
    lookup = []
    for s in manifest.mediator:
        v = ego_steps(root, s)
        own, unlabelled = pair_starts(manifest.train.get(s, []), len(v)), pair_starts(manifest.mediator[s], len(v))
        if own and unlabelled:
            lookup += list(np.linalg.norm(v[unlabelled] - v[own].mean(0), axis=1))
    print(f"each sequence's mean labelled step, on its unlabelled pairs: {np.mean(lookup):.3f} m ({len(lookup)} pairs)")
    within = [np.linalg.norm(v - v.mean(0), axis=1).mean() for s in manifest.val for v in [ego_steps(root, s)]]
    print(f"spread within a validation sequence (mean |step - its mean|): {np.mean(within):.3f} m; "
          f"mean step length {np.linalg.norm(val, axis=1).mean():.3f} m")


def oracle(root: Path, manifest) -> None:  # type: ignore[no-untyped-def]
    from taskology.geometry.warp import warp_frame
    from taskology.losses.photometric import photometric_error

    lengths = np.linspace(0.0, 1.6, 33)
    errors = []
    for s in manifest.val:
        with h5py.File(root / f"{s}.h5", "r") as h:
            rgb = torch.from_numpy(h["camera/rgb"][:]).permute(0, 3, 1, 2).float() / 255
            depth = torch.from_numpy(h["camera/depth"][:]).float()[:, None]
            world_from_ego, cam_from_ego = h["ego/world_from_ego"][:], h["camera/cam_from_ego"][:]
            K = torch.from_numpy(np.asarray(h["camera/K"][:], np.float32))[None]
        for f in range(len(world_from_ego) - 1):
            pose = cam_from_ego @ np.linalg.inv(world_from_ego[f + 1]) @ world_from_ego[f] @ np.linalg.inv(cam_from_ego)
            true = float(np.linalg.norm(pose[:3, 3]))
            direction = pose[:3, 3] / max(true, 1e-9)
            scores = []
            for length in lengths:
                trial = pose.copy()
                trial[:3, 3] = direction * length
                warp = warp_frame(rgb[f + 1:f + 2], depth[f:f + 1], K, torch.tensor(trial, dtype=torch.float32)[None])
                valid = warp.valid.float()
                error = photometric_error(rgb[f:f + 1], warp.image)
                scores.append(float((error * valid).sum() / valid.sum().clamp_min(1.0)))
            errors.append(abs(lengths[int(np.argmin(scores))] - true))
    print(f"photometric step-length oracle on the validation pairs: mean {np.mean(errors):.3f} m, median "
          f"{np.median(errors):.3f} m ({len(errors)} pairs)")


def frames(root: Path, manifest, checkpoint: Path, width: int) -> None:  # type: ignore[no-untyped-def]
    from taskology.engine.checkpoints import load_checkpoint
    from taskology.tasks.motion import MotionTask

    state = load_checkpoint(checkpoint)
    model = MotionTask(width=width).build_model()
    model.load_state_dict(state["model"])
    model.eval()

    def error(which: dict[str, list[int]]) -> tuple[float, int]:
        errs: list[float] = []
        for s, chosen in which.items():
            with h5py.File(root / f"{s}.h5", "r") as h:
                rgb = torch.from_numpy(h["camera/rgb"][:]).permute(0, 3, 1, 2).float() / 255
            truth = ego_steps(root, s)
            pairs = pair_starts(chosen, len(truth))
            if not pairs:
                continue
            with torch.no_grad():
                out = model(rgb[pairs], rgb[[f + 1 for f in pairs]])
            errs += list(np.linalg.norm(out["translation"].numpy() - truth[pairs], axis=1))
        return float(np.mean(errs)), len(errs)

    print("labelled training pairs: %.3f m (%d)" % error(manifest.train))
    print("unlabelled pairs of the training sequences: %.3f m (%d)" % error(manifest.mediator))
    print("validation pairs: %.3f m (%d)" % error({s: list(range(10 ** 6)) for s in manifest.val}))


def main(argv: list[str] | None = None) -> int:
    from taskology.config import load_config
    from taskology.engine.task_data import manifest_for
    from taskology.errors import TaskologyError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["baselines", "oracle", "frames"])
    parser.add_argument("root", type=Path, help="data root: shards and splits.json")
    parser.add_argument("checkpoint", type=Path, nargs="?", help="motion checkpoint (frames)")
    parser.add_argument("--config", default="consistency",
                        help="preset (name or YAML file) whose data.* split settings (and motion width) apply")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        cfg = load_config(args.config, [*args.overrides, f"data.root={args.root}", "tasks.motion.label_fraction=1.0"])
        manifest = manifest_for(args.root, cfg)
        if args.what == "baselines":
            baselines(args.root, manifest)
        elif args.what == "oracle":
            oracle(args.root, manifest)
        else:
            if args.checkpoint is None:
                parser.error("frames needs a motion CHECKPOINT")
            frames(args.root, manifest, args.checkpoint, int(cfg.tasks["motion"].width))
    except (TaskologyError, OSError, KeyError) as exc:
        print(f"diagnose_motion: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
