"""How good is what each relation asks of a task? Measured against ground truth on the validation split.
Run: python experiments/segmentation/diagnose_relation_targets.py --config consistency RUN_DIR [--split val] [--set KEY=VALUE ...]

For a trained run (``checkpoints/<task>/step_*.pt`` of depth, normals and segmentation) this compares,
on the frames of ``--split`` (default ``val``; never use it on test to make choices):

- the normals network's own error with the error of the normals *derived from the depth network*
  (what ``depth_normals`` pulls the normals towards), overall and per semantic class;
- on pixels the segmentation network calls ground, the error of the ground up-vector (what
  ``segmentation_geometry`` pulls normals towards) with the normals network's own there;
- on pixels it calls vertical structures, the normals network's error before and after removing the
  normal's vertical component (what the vertical term asks for);
- the evidence the dropped ``segmentation_ground`` relation gave segmentation (level surface at ground
  height, from the depth and normals networks; ``ground_evidence.py``, copied from commit 05b8e3d): its share of pixels, its precision against the labels (which classes the false
  evidence falls on), and how often the segmentation network already calls those pixels ground; and the
  evidence pixels it calls vegetation (never level ground, by the class definitions): what they are by the
  labels, and how much of the terrain (lawns) the evidence covers;
- on the facade pixels (building, wall, fence; by the labels), which way the normals face: the error of the
  normals network and of the depth network's normals, how far the network's normals are from the nearer of
  the vehicle's two camera-facing horizontal axes (what the dropped ``manhattan_weight`` pulled towards;
  ../normals/facades.py), the error
  after snapping them to that axis, and the share nearer the wrong axis (snapped error above 45 degrees);
  the ground truth's own distance to the nearer axis says how well the street-grid prior holds;
- the pseudo-labels ``segmentation_temporal`` gives segmentation (its own confident frame-t+1 classes
  carried to frame t by the depth and motion networks, where the warped colour agrees; needs a motion
  checkpoint): their share of pixels and precision, and the balance that decides whether they can help,
  pixels they would correct (segmentation wrong at t, pseudo-label right) against pixels they would
  corrupt (segmentation right, pseudo-label wrong).

A relation can only help a receiver where its target is better than the receiver's own prediction.
``--config`` is the preset the run was trained from (a shipped preset's name or a YAML file) and ``--set``
its overrides; the world is the preset's (simulated under ``data.root`` if it is not there yet).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

STUDY = Path(__file__).resolve().parent
sys.path.insert(0, str(STUDY))
sys.path.insert(0, str(STUDY.parent / "normals"))  # the facade axes are the normals study's module

from facades import facade_axes, snap_to_axes
from ground_evidence import LEVEL_GROUND_CLASS_IDS, ground_evidence_mask

from taskology.config import load_config
from taskology.data.datasets import FrameDataset
from taskology.data.schema import (FACADE_CLASS_IDS, GROUND_CLASS_IDS, SEMANTIC_CLASSES, TERRAIN_CLASS_ID,
                                   VEGETATION_CLASS_ID, VERTICAL_CLASS_IDS)
from taskology.engine.batches import collate
from taskology.engine.checkpoints import checkpoint_path, checkpoint_steps, load_checkpoint
from taskology.engine.registry import Registry
from taskology.engine.task_data import manifest_for
from taskology.errors import TaskologyError
from taskology.experiment import ensure_world
from taskology.geometry.camera import normals_from_depth_torch
from taskology.losses.depth_normals import far_mask
from taskology.losses.segmentation_geometry import up_in_camera
from taskology.losses.segmentation_temporal import temporal_targets


def angle_deg(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean angle (degrees) between unit fields ``a`` and ``b`` (B, 3, H, W) on ``mask`` (B, 1, H, W)."""
    cos = (a * b).sum(1, keepdim=True).clamp(-1, 1)
    return float(torch.rad2deg(torch.acos(cos))[mask].mean()) if bool(mask.any()) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", required=True, help="the preset the run was trained from (name or YAML file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the run's overrides of the preset (repeatable)")
    parser.add_argument("--split", default="val", choices=("val", "test"))  # mediator frames carry no labels
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, list(args.overrides))
        root = ensure_world(config)
        manifest = manifest_for(root, config)
        layers = ("camera/rgb", "camera/K", "camera/cam_from_ego", "camera/depth", "camera/normals", "camera/semantic")
        dataset = FrameDataset(manifest, args.split, layers=layers)
        if len(dataset) == 0:
            raise TaskologyError(f"{root}: the {args.split} split has no frames (set data.val_sequences)")
        batch = collate([dataset[i] for i in range(len(dataset))])
        tasks, out, models = {}, {}, {}
        registry = Registry.current()
        for name in ("depth", "normals", "segmentation", "motion"):
            steps = checkpoint_steps(args.run_dir, name)
            if not steps and name == "motion":
                break                             # the temporal report is skipped without a motion network
            if not steps:
                raise TaskologyError(f"{args.run_dir}: no checkpoint of task {name!r}")
            task = tasks[name] = registry.build_task(name, config)
            model = models[name] = task.build_model()
            model.load_state_dict(load_checkpoint(checkpoint_path(args.run_dir, name, steps[-1]))["model"])
            model.eval()
            if name != "motion":
                with torch.no_grad():
                    out[name] = task.forward(model, batch)
        pairs = None
        if "motion" in models:
            pair_set = FrameDataset(manifest, args.split, layers=layers, pairs=True)
            pairs = collate([pair_set[i] for i in range(len(pair_set))])
    except TaskologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gt = batch["normals"]
    valid = gt.norm(dim=1, keepdim=True) > 0.5
    semantic = batch["semantic"].unsqueeze(1)
    own = out["normals"]["normals"]
    depth = out["depth"]["depth"]
    derived, derived_valid = normals_from_depth_torch(depth, batch["K"])
    mask = valid & derived_valid & ~far_mask(depth, tasks)
    up = up_in_camera(batch["cam_from_ego"]).expand_as(gt)
    print(f"{len(dataset)} {args.split} frames of {root}")
    print(f"normals network: {angle_deg(own, gt, valid):.1f} deg on all valid pixels")
    print(f"depth_normals target (normals derived from the depth network): {angle_deg(derived, gt, mask):.1f} deg; "
          f"normals network on the same pixels {angle_deg(own, gt, mask):.1f} deg")
    print("per class (share of valid pixels): normals network / depth-derived, deg")
    for class_id in torch.unique(semantic).tolist():
        on = (semantic == class_id) & valid
        if int(on.sum()) >= 100:
            print(f"  {SEMANTIC_CLASSES.get(class_id, class_id):>14} ({float(on.sum() / valid.sum()):.2f}): "
                  f"{angle_deg(own, gt, on):5.1f} / {angle_deg(derived, gt, on & mask):5.1f}")
    seg = tasks["segmentation"]
    logits = out["segmentation"]["logits"]
    ground = (seg.class_probability(logits, GROUND_CLASS_IDS) > 0.5) & valid
    print(f"predicted ground ({float(ground.sum() / valid.sum()):.2f} of pixels): up-vector target "
          f"{angle_deg(up, gt, ground):.1f} deg, normals network {angle_deg(own, gt, ground):.1f} deg")
    vertical = (seg.class_probability(logits, VERTICAL_CLASS_IDS) > 0.5) & valid
    level = own - (own * up).sum(1, keepdim=True) * up
    level = level / level.norm(dim=1, keepdim=True).clamp_min(1e-6)
    print(f"predicted vertical structures ({float(vertical.sum() / valid.sum()):.2f}): normals network "
          f"{angle_deg(own, gt, vertical):.1f} deg, made horizontal {angle_deg(level, gt, vertical):.1f} deg")
    report_facade_axes(batch, own, derived, derived_valid & valid)
    report_ground_evidence(batch, depth, own, logits, tasks)
    if pairs is None:
        print("temporal pseudo-labels: no motion checkpoint in the run, skipped")
    else:
        report_temporal_pseudo_labels(pairs, models, tasks)
    return 0


@torch.no_grad()
def report_temporal_pseudo_labels(pairs, models, tasks) -> None:
    """Precision of ``segmentation_temporal``'s pseudo-labels from the networks, and the pixels they would
    correct vs corrupt (segmentation's own frame-t prediction as the reference), on frame pairs."""
    seg = tasks["segmentation"]
    outputs = {name: tasks[name].forward(models[name], pairs) for name in ("depth", "motion")}
    outputs["segmentation"] = {"logits": seg.forward(models["segmentation"], pairs)["logits"],
                               "logits_next": seg.forward(models["segmentation"], {**pairs, "rgb": pairs["rgb_next"]})["logits"]}
    truth = seg.contiguous_labels(pairs["semantic"])
    labelled = truth >= 0
    own = outputs["segmentation"]["logits"].argmax(1)
    for tolerance in (0.1, float("inf")):
        labels, mask, _ = temporal_targets(outputs, pairs, photometric_tolerance=tolerance)
        mask = mask[:, 0] & labelled
        count = int(mask.sum())
        name = "colour check 0.1" if tolerance == 0.1 else "no colour check"
        if count == 0:
            print(f"temporal pseudo-labels ({name}): no pixel")
            continue
        right, own_right = labels == truth, own == truth
        print(f"temporal pseudo-labels ({name}): {count / mask.numel():.3f} of pixels, precision "
              f"{float((mask & right).sum()) / count:.3f}; agree with segmentation at t on "
              f"{float((mask & (labels == own)).sum()) / count:.3f}; would correct "
              f"{float((mask & right & ~own_right).sum()) / count:.4f} and corrupt "
              f"{float((mask & ~right & own_right).sum()) / count:.4f} of them")


def report_facade_axes(batch, own: torch.Tensor, derived: torch.Tensor, derived_valid: torch.Tensor) -> None:
    """Which way facades face (module docstring): the normals network, the depth network's normals, both
    snapped to the nearer of the vehicle's camera-facing horizontal axes, and the ground truth's distance."""
    gt = batch["normals"]
    facade = (batch["semantic"].unsqueeze(1) == torch.tensor(sorted(FACADE_CLASS_IDS)).view(1, -1, 1, 1)).any(1, keepdim=True)
    facade &= gt.norm(dim=1, keepdim=True) > 0.5
    if not bool(facade.any()):
        print("facade pixels: none in these frames")
        return
    axes = facade_axes(batch["cam_from_ego"].to(own.dtype), batch["K"].to(own.dtype), *own.shape[-2:])
    snapped, truth = snap_to_axes(own, axes), snap_to_axes(gt, axes)
    error = torch.rad2deg(torch.acos((snapped * gt).sum(1, keepdim=True).clamp(-1, 1)))
    near = torch.rad2deg(torch.acos((truth * gt).sum(1, keepdim=True).clamp(-1, 1))) < 10
    print(f"facade pixels ({float(facade.float().mean()):.2f} of pixels): ground truth {angle_deg(truth, gt, facade):.1f} deg "
          f"from the nearer axis ({float(near[facade].float().mean()):.2f} within 10 deg); normals network {angle_deg(own, gt, facade):.1f} deg, "
          f"{angle_deg(own, snapped, facade):.1f} deg from the nearer axis, snapped {angle_deg(snapped, gt, facade):.1f} deg, "
          f"nearer the wrong axis {float((error > 45)[facade].float().mean()):.2f}; depth network's normals "
          f"{angle_deg(derived, gt, facade & derived_valid):.1f} deg, snapped "
          f"{angle_deg(snap_to_axes(derived, axes), gt, facade & derived_valid):.1f} deg")


def report_ground_evidence(batch, depth: torch.Tensor, normals: torch.Tensor, logits: torch.Tensor,
                           tasks) -> None:
    """Precision of the dropped ``segmentation_ground``'s evidence from the networks (and, for reference, from the
    simulator's depth and normals) against the semantic labels."""
    semantic = batch["semantic"].unsqueeze(1)
    level = torch.isin(semantic, torch.tensor(sorted(LEVEL_GROUND_CLASS_IDS)))
    seg = tasks["segmentation"]
    called_ground = seg.class_probability(logits, LEVEL_GROUND_CLASS_IDS) > 0.5
    true_depth = torch.where(batch["depth"] > 0, batch["depth"], torch.full_like(batch["depth"],
                                                                                  tasks["depth"].max_depth))
    for source, d, n in (("networks", depth, normals), ("simulator", true_depth, batch["normals"])):
        mask = ground_evidence_mask(d, n, batch["K"], batch["cam_from_ego"], tasks["depth"])
        count = int(mask.sum())
        if count == 0:
            print(f"ground evidence from the {source}: no pixel")
            continue
        wrong = mask & ~level
        print(f"ground evidence from the {source}: {count / mask.numel():.3f} of pixels, precision "
              f"{float((mask & level).sum()) / count:.3f}, recall of level ground "
              f"{float((mask & level).sum() / level.sum().clamp_min(1)):.3f}; segmentation already calls "
              f"{float((mask & called_ground).sum()) / count:.3f} of them ground")
        by_class = {int(c): int((wrong & (semantic == c)).sum()) for c in torch.unique(semantic[wrong]).tolist()}
        for class_id, n_wrong in sorted(by_class.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  false evidence on {SEMANTIC_CLASSES.get(class_id, class_id):>14}: {n_wrong / count:.3f} "
                  f"of the evidence, {n_wrong / max(int((semantic == class_id).sum()), 1):.3f} of that class")
        report_vegetation_on_evidence(mask, semantic, logits, seg)


def report_vegetation_on_evidence(mask: torch.Tensor, semantic: torch.Tensor, logits: torch.Tensor, seg) -> None:
    """Evidence pixels segmentation calls vegetation (trees, hedges: vertical by the Cityscapes definition, so
    never a level surface at ground height), what they are by the labels, and how much of the terrain (lawns)
    the evidence covers."""
    (vegetation,) = seg.class_index([VEGETATION_CLASS_ID]) or (None,)
    if vegetation is None:
        return
    called = mask & (logits.argmax(1, keepdim=True) == vegetation)
    count = int(called.sum())
    terrain = semantic == TERRAIN_CLASS_ID
    shares = ", ".join(f"{SEMANTIC_CLASSES.get(c, c)} {int((called & (semantic == c)).sum()) / max(count, 1):.3f}"
                       for c in torch.unique(semantic[called]).tolist())
    print(f"  evidence called vegetation: {count / max(int(mask.sum()), 1):.4f} of the evidence ({shares or 'none'}); "
          f"evidence covers {float((mask & terrain).sum() / terrain.sum().clamp_min(1)):.3f} of the terrain pixels; "
          f"covered and called vegetation: {float((called & terrain).sum() / terrain.sum().clamp_min(1)):.3f} of them")


if __name__ == "__main__":
    sys.exit(main())
