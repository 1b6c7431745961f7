"""Relations: ~zero on simulator ground truth, clearly positive when perturbed, gradients only to the
receiving task, float64 gradchecks, hand-worked cases."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from taskology.data.datasets import FrameDataset
from taskology.data.splits import make_splits
from taskology.engine.batches import collate
from taskology.engine.task_data import PreparedDataset
from taskology.geometry.rigid import so3_log
from taskology.losses import RELATIONS, evaluate_for_receiver
from taskology.losses.photometric import photometric_terms
from taskology.losses.segmentation_geometry import segmentation_geometry_terms
from taskology.tasks import build_task

TASK_NAMES = ("depth", "normals", "segmentation", "motion")
#: the relations among the camera tasks (the LiDAR ones: tests/losses/test_lidar_relations.py)
CAMERA_RELATIONS = sorted(name for name, r in RELATIONS.items() if set(r.tasks) <= set(TASK_NAMES))


@pytest.fixture(scope="module")
def gt(sim_root: Path):
    """Ground-truth 'outputs' of every task on the test pairs of the tiny simulator set."""
    # 4 of the 5 sequences as "test" so that independently moving objects are in view.
    manifest = make_splits(sim_root, {"depth": 1.0}, test_sequences=4, mediator_fraction=0.5, seed=0, write=False)
    tasks = {n: build_task(n, width=4) for n in TASK_NAMES}
    layers = sorted({layer for task in tasks.values() for layer in task.input_layers + task.label_layers})
    data = PreparedDataset(FrameDataset(manifest, "test", None, layers=layers, pairs=True), tasks["motion"])
    batch = collate([data[i] for i in range(len(data))])
    moving = batch["object_translation"].norm(dim=1) > 0.05
    assert int(moving.sum()) > 20, "the fixture should show independently moving objects"
    seg = tasks["segmentation"]
    labels = seg.contiguous_labels(batch["semantic"]).clamp_min(0)
    logits = 30.0 * F.one_hot(labels, seg.num_classes).permute(0, 3, 1, 2).float()
    labels_next = seg.contiguous_labels(batch["semantic_next"]).clamp_min(0)
    logits_next = 30.0 * F.one_hot(labels_next, seg.num_classes).permute(0, 3, 1, 2).float()
    # The depth task predicts its far limit where the simulator has no depth (sky).
    depth = torch.where(batch["depth"] > 0, batch["depth"], torch.full_like(batch["depth"], tasks["depth"].max_depth))
    pose = batch["cam_next_from_cam"].double().numpy()
    outputs = {"depth": {"depth": depth}, "normals": {"normals": batch["normals"]}, "segmentation": {"logits": logits, "logits_next": logits_next},
               "motion": {"rotation": torch.from_numpy(so3_log(pose[:, :3, :3])).float(),
                          "translation": torch.from_numpy(pose[:, :3, 3]).float(),
                          "object_translation": batch["object_translation"]}}
    return outputs, batch, tasks


def perturbed(outputs):
    g = torch.Generator().manual_seed(0)
    out = {k: dict(v) for k, v in outputs.items()}
    depth = outputs["depth"]["depth"]
    out["depth"]["depth"] = depth * (1 + 0.5 * torch.rand(depth.shape, generator=g))
    normals = outputs["normals"]["normals"]
    out["normals"]["normals"] = F.normalize(normals + 0.7 * torch.randn(normals.shape, generator=g), dim=1)
    logits = outputs["segmentation"]["logits"]
    out["segmentation"]["logits"] = 3 * torch.randn(logits.shape, generator=g)
    motion = outputs["motion"]
    out["motion"]["translation"] = motion["translation"] + 0.5 * torch.randn(motion["translation"].shape, generator=g)
    ot = motion["object_translation"]
    out["motion"]["object_translation"] = ot + 0.3 * torch.randn(ot.shape, generator=g)
    return out


# Ground truth is rendered at 32x96: depth-derived normals differ at object edges (a few pixels),
# sidewalk kerbs are vertical faces labelled sidewalk, and warping aliased textures with bilinear
# sampling leaves a photometric floor. Bounds are absolute where the relation is exactly zero in
# principle, relative (GT much lower than perturbed) where the rendering leaves a floor.
# segmentation_temporal: where the true geometry carries a pixel onto an occluder of the same colour, the
# classes differ (0.1 % of the trusted pixels, each costing the 30-logit margin).
BOUNDS = {"depth_normals": 0.05, "segmentation_motion": 1e-3, "segmentation_geometry": 0.05,
          "photometric": None, "segmentation_temporal": 0.1}


@pytest.mark.parametrize("name", CAMERA_RELATIONS)
def test_relation_is_near_zero_on_ground_truth_and_positive_when_perturbed(gt, name: str) -> None:
    outputs, batch, tasks = gt
    relation = RELATIONS[name]
    on_gt = float(relation.fn(outputs, batch, tasks))
    off = float(relation.fn(perturbed(outputs), batch, tasks))
    assert on_gt >= 0
    if BOUNDS[name] is not None:
        assert on_gt < BOUNDS[name], (name, on_gt)
    assert off > 2.0 * on_gt and off > 0.05, (name, on_gt, off)


def test_photometric_with_ground_truth_beats_wrong_motions(gt) -> None:
    outputs, batch, tasks = gt
    right = float(photometric_terms(outputs, batch)["reconstruction"])
    for wrong in (torch.zeros_like, lambda t: -t):
        out = {k: dict(v) for k, v in outputs.items()}
        out["motion"]["translation"] = wrong(outputs["motion"]["translation"])
        # compare on the same pixels: masks differ, so use the unmasked-by-automask error via the loss
        assert float(photometric_terms(out, batch)["reconstruction"]) > 1.2 * right


def test_photometric_identity_motion_on_identical_frames_is_zero() -> None:
    K = torch.tensor([[[40.0, 0, 11.5], [0, 40.0, 7.5], [0, 0, 1]]])
    rgb = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    outputs = {"depth": {"depth": torch.full((1, 1, 16, 24), 5.0)},
               "motion": {"rotation": torch.zeros(1, 3), "translation": torch.zeros(1, 3),
                          "object_translation": torch.zeros(1, 3, 16, 24)}}
    terms = photometric_terms(outputs, {"rgb": rgb, "rgb_next": rgb.clone(), "K": K})
    # identical frames: warped error equals the identity error, so the auto-mask drops every pixel.
    assert float(terms["reconstruction"]) == 0.0


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_photometric_depth_scale_gradient_removes_only_the_scale_component(gt, share: float) -> None:
    """``depth_scale_gradient``: same loss; the gradient w.r.t. log depth loses ``(1 - share)`` of its
    per-map mean (the scale direction) and nothing else; motion's gradient is unchanged."""
    outputs, batch, tasks = gt
    small = {k: v[:3] for k, v in batch.items()}
    base = perturbed(outputs)

    def grads(option: float | None):
        log_depth = base["depth"]["depth"][:3].log().clone().requires_grad_(True)
        translation = base["motion"]["translation"][:3].clone().requires_grad_(True)
        motion = {k: v[:3] for k, v in base["motion"].items()} | {"translation": translation}
        opts = {} if option is None else {"depth_scale_gradient": option}
        loss = RELATIONS["photometric"].fn({"depth": {"depth": log_depth.exp()}, "motion": motion}, small, tasks, **opts)
        loss.backward()
        return float(loss.detach()), log_depth.grad, translation.grad

    full_loss, full, full_t = grads(None)
    loss, partial, partial_t = grads(share)
    assert loss == pytest.approx(full_loss, rel=1e-6)
    mean = full.mean(dim=(1, 2, 3), keepdim=True)
    assert float(mean.abs().max()) > 1e-3 * float(full.abs().max())  # the scale direction is really there
    torch.testing.assert_close(partial, full - (1 - share) * mean, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(partial_t, full_t)
    assert grads(1.0)[1].equal(full)
    with pytest.raises(ValueError, match=r"depth_scale_gradient': must be in \[0, 1\], got 1.5"):
        evaluate_for_receiver(RELATIONS["photometric"], "depth", outputs["depth"], {"motion": outputs["motion"]},
                              small, tasks, {"depth_scale_gradient": 1.5})


def test_segmentation_geometry_ground_term_hand_case() -> None:
    seg = build_task("segmentation", width=4, class_ids=(1, 11))
    depth_task = build_task("depth", width=4)
    cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
    road = torch.tensor([20.0, -20.0]).view(1, 2, 1, 1)
    level = torch.tensor([0.0, -1.0, 0.0]).view(1, 3, 1, 1)        # up in this camera = -y
    wall = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1)
    far = torch.full((1, 1, 1, 1), depth_task.max_depth)
    args = {"segmentation": seg, "depth": depth_task}
    ok = segmentation_geometry_terms({"segmentation": {"logits": road}, "normals": {"normals": level},
                                      "depth": {"depth": far}}, {"cam_from_ego": cam_from_ego}, args)
    bad = segmentation_geometry_terms({"segmentation": {"logits": road}, "normals": {"normals": wall},
                                       "depth": {"depth": far}}, {"cam_from_ego": cam_from_ego}, args)
    assert float(ok["ground"]) == pytest.approx(0.0, abs=1e-6)
    assert float(bad["ground"]) == pytest.approx(1.0, abs=1e-6)           # 1 - cos 90 deg
    sky = torch.tensor([-20.0, 20.0]).view(1, 2, 1, 1)
    near = segmentation_geometry_terms({"segmentation": {"logits": sky}, "normals": {"normals": level},
                                        "depth": {"depth": torch.full((1, 1, 1, 1), depth_task.min_depth)}},
                                       {"cam_from_ego": cam_from_ego}, args)
    assert float(near["sky"]) == pytest.approx(1.0, abs=1e-6)


def test_segmentation_geometry_vertical_term_hand_case() -> None:
    seg = build_task("segmentation", width=4, class_ids=(1, 3))              # road, building
    depth_task = build_task("depth", width=4)
    cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
    building = torch.tensor([-20.0, 20.0]).view(1, 2, 1, 1)
    far = {"depth": torch.full((1, 1, 1, 1), depth_task.max_depth)}
    args = {"segmentation": seg, "depth": depth_task}

    def vertical(normal: list[float]) -> float:
        n = torch.nn.functional.normalize(torch.tensor(normal).view(1, 3, 1, 1), dim=1)
        return float(segmentation_geometry_terms({"segmentation": {"logits": building}, "normals": {"normals": n},
                                                  "depth": far}, {"cam_from_ego": cam_from_ego}, args)["vertical"])

    assert vertical([0.0, 0.0, -1.0]) == pytest.approx(0.0, abs=1e-6)      # facade facing the camera
    assert vertical([1.0, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-6)       # side facade
    assert vertical([0.0, -1.0, -1.0]) == pytest.approx(2 ** -0.5, abs=1e-6)  # tilted 45 deg towards up
    assert vertical([0.0, 1.0, 0.0]) == pytest.approx(1.0, abs=1e-6)       # facing down


def test_segmentation_tolerance_hinges_only_what_segmentation_receives() -> None:
    seg = build_task("segmentation", width=4, class_ids=(1, 3))              # road, building
    tasks = {"segmentation": seg, "depth": build_task("depth", width=4), "normals": build_task("normals", width=4)}
    cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])  # up = -y
    far = {"depth": torch.full((1, 1, 1, 1), tasks["depth"].max_depth)}
    relation, option = RELATIONS["segmentation_geometry"], {"segmentation_tolerance_deg": 30.0}

    def taught(receiver: str, logits: list[float], tilt_deg: float) -> tuple[float, float]:
        """(loss, |gradient| on the receiver's output) for a normal tilted from up by ``tilt_deg``."""
        t = torch.deg2rad(torch.tensor(tilt_deg))
        normal = torch.stack([torch.zeros(()), -torch.cos(t), -torch.sin(t)]).view(1, 3, 1, 1)
        outs = {"segmentation": {"logits": torch.tensor(logits).view(1, 2, 1, 1)}, "normals": {"normals": normal},
                "depth": dict(far)}
        own = {k: v.clone().requires_grad_(True) for k, v in outs[receiver].items()}
        loss = evaluate_for_receiver(relation, receiver, own, {k: v for k, v in outs.items() if k != receiver},
                                     {"cam_from_ego": cam_from_ego}, tasks, option)
        loss.backward()
        return float(loss.detach()), float(sum(v.grad.abs().sum() for v in own.values()))

    road, building = [20.0, -20.0], [-20.0, 20.0]
    cos30, sin30 = 3 ** 0.5 / 2, 0.5
    # segmentation: within 30 deg of what the class implies teaches nothing; beyond, the hinge.
    nothing = (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))   # e^-40 of the other class
    assert taught("segmentation", road, 20.0) == nothing
    assert taught("segmentation", road, 60.0)[0] == pytest.approx(cos30 - 0.5, abs=1e-5)
    assert taught("segmentation", road, 60.0)[1] > 0
    assert taught("segmentation", building, 80.0) == nothing                # elevation 10 deg
    assert taught("segmentation", building, 0.0)[0] == pytest.approx(1.0 - sin30, abs=1e-5)  # a "wall" facing up
    # normals keep the full term: a 20 deg tilt on road still teaches them 1 - cos 20.
    loss, grad = taught("normals", road, 20.0)
    assert loss == pytest.approx(1 - float(torch.cos(torch.deg2rad(torch.tensor(20.0)))), abs=1e-5) and grad > 0
    # tolerance 0 is the plain relation.
    plain = {"segmentation": {"logits": torch.tensor(road).view(1, 2, 1, 1)},
             "normals": {"normals": F.normalize(torch.tensor([0.0, -1.0, -0.7]).view(1, 3, 1, 1), dim=1)},
             "depth": dict(far)}
    pose = {"cam_from_ego": cam_from_ego}
    hinged_at_0 = relation.fn(plain, pose, tasks, receiver="segmentation", segmentation_tolerance_deg=0.0)
    assert float(hinged_at_0) == float(relation.fn(plain, pose, tasks))
    with pytest.raises(ValueError, match=r"segmentation_tolerance_deg.*\[0, 90\), got 95"):
        evaluate_for_receiver(relation, "segmentation", plain["segmentation"], plain, {"cam_from_ego": cam_from_ego},
                              tasks, {"segmentation_tolerance_deg": 95.0})
    with pytest.raises(ValueError, match="unknown option; this relation takes segmentation_tolerance_deg"):
        evaluate_for_receiver(relation, "segmentation", plain["segmentation"], plain, {"cam_from_ego": cam_from_ego},
                              tasks, {"tolerance": 1.0})


def test_segmentation_motion_tolerance_hinges_only_what_segmentation_receives() -> None:
    seg = build_task("segmentation", width=4, class_ids=(1, 14))             # road (static), car
    relation, option = RELATIONS["segmentation_motion"], {"segmentation_tolerance_m": 0.1}
    road = torch.tensor([10.0, -10.0]).view(1, 2, 1, 1)

    def loss(receiver: str, metres: float) -> float:
        moving = torch.tensor([0.0, 0, metres]).view(1, 3, 1, 1)
        outs = {"segmentation": {"logits": road}, "motion": {"object_translation": moving}}
        return float(evaluate_for_receiver(relation, receiver, outs[receiver], outs, {}, {"segmentation": seg}, option))

    p_static = 1 / (1 + float(torch.exp(torch.tensor(-20.0))))
    assert loss("segmentation", 0.08) == 0.0                                  # noise below 10 cm
    assert loss("segmentation", 0.3) == pytest.approx(p_static * float(torch.tanh(torch.tensor(2.0))), abs=1e-5)
    assert loss("motion", 0.08) == pytest.approx(p_static * float(torch.tanh(torch.tensor(0.8))), abs=1e-5)


@pytest.mark.parametrize("name", CAMERA_RELATIONS)
def test_gradient_reaches_only_the_receiver(gt, name: str) -> None:
    outputs, batch, tasks = gt
    relation = RELATIONS[name]
    small = {k: (v[:2] if torch.is_tensor(v) else v[:2]) for k, v in batch.items()}
    for receiver in relation.teaches:
        leaves = {t: {k: v[:2].clone().requires_grad_(True) for k, v in perturbed(outputs)[t].items()}
                  for t in relation.tasks}
        own = leaves[receiver]
        peers = {t: leaves[t] for t in relation.tasks if t != receiver}
        loss = evaluate_for_receiver(relation, receiver, own, peers, small, tasks)
        loss.backward()
        assert any(v.grad is not None and float(v.grad.abs().sum()) > 0 for v in own.values()), (name, receiver)
        for t, outs in peers.items():
            assert all(v.grad is None for v in outs.values()), (name, receiver, t)
    for other in set(relation.tasks) - set(relation.teaches):   # a task it does not teach is refused
        with pytest.raises(ValueError, match="teaches"):
            evaluate_for_receiver(relation, other, outputs[other], outputs, small, tasks)


def test_depth_normals_and_segmentation_motion_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[[8.0, 0, 2.5], [0, 8.0, 2.0], [0, 0, 1]]], dtype=torch.float64)
    depth = (3.0 + torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    normals = F.normalize(torch.randn(1, 3, 5, 6, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    tasks = {"depth": build_task("depth", width=4)}
    fn = RELATIONS["depth_normals"].fn
    assert torch.autograd.gradcheck(
        lambda d, n: fn({"depth": {"depth": d}, "normals": {"normals": n}}, {"K": K}, tasks), (depth, normals))
    seg = build_task("segmentation", width=4, class_ids=(1, 11, 14))
    logits = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    motion = (0.1 * torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    fn2 = RELATIONS["segmentation_motion"].fn
    assert torch.autograd.gradcheck(
        lambda lg, m: fn2({"segmentation": {"logits": lg}, "motion": {"object_translation": m}}, {},
                          {"segmentation": seg}), (logits, motion))


def test_a_plain_three_argument_relation_still_works_and_an_option_it_does_not_declare_is_refused() -> None:
    from taskology.losses.relation import Relation

    def agree(outputs, batch, tasks):
        return (outputs["a"]["x"] - outputs["b"]["x"]).abs().mean()

    relation = Relation("agree", agree, ("a", "b"))
    own = {"x": torch.tensor([1.0, 2.0], requires_grad=True)}
    loss = evaluate_for_receiver(relation, "a", own, {"b": {"x": torch.tensor([1.0, 4.0])}}, {}, {})
    assert float(loss.detach()) == 1.0 and not relation.takes_receiver
    assert RELATIONS["segmentation_geometry"].takes_receiver
    with pytest.raises(ValueError, match="option 'scale': unknown option; this relation takes none"):
        evaluate_for_receiver(relation, "a", own, {"b": {"x": torch.tensor([1.0, 4.0])}}, {}, {}, {"scale": 2.0})


def test_temporal_pseudo_labels_on_ground_truth_geometry_are_right_and_wrong_geometry_is_rejected(gt) -> None:
    from taskology.losses.segmentation_temporal import temporal_targets

    outputs, batch, tasks = gt
    truth = tasks["segmentation"].contiguous_labels(batch["semantic"]).clamp_min(0)
    labels, mask, _ = temporal_targets(outputs, batch)
    mask = mask[:, 0]
    assert float(mask.float().mean()) > 0.4                       # about half of all pixels are taught
    assert float((labels == truth)[mask].float().mean()) > 0.99   # and their frame-t+1 class is frame t's
    # Wrong geometry: depth halved, so points land elsewhere in frame t+1. The colour check must reject
    # most correspondences, and the classes it still carries are much less often right.
    wrong = {**outputs, "depth": {"depth": 0.5 * outputs["depth"]["depth"]}}
    wrong_labels, wrong_mask, _ = temporal_targets(wrong, batch)
    wrong_mask = wrong_mask[:, 0]
    # (measured: 33 % of pixels instead of 51 %; wrong classes 0.3 % of them instead of 2.2 % unchecked)
    assert float(wrong_mask.float().mean()) < 0.75 * float(mask.float().mean())
    unchecked_labels, unchecked, _ = temporal_targets(wrong, batch, photometric_tolerance=float("inf"))
    error_rate = lambda lab, m: float((lab != truth)[m].float().mean())   # noqa: E731
    assert error_rate(wrong_labels, wrong_mask) < 0.5 * error_rate(unchecked_labels, unchecked[:, 0])


def test_temporal_hand_case_confidence_and_identity_motion() -> None:
    from taskology.losses.segmentation_temporal import segmentation_temporal_loss

    seg = build_task("segmentation", width=4, class_ids=(1, 14))
    K = torch.tensor([[[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]]])
    rgb = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = {"rgb": rgb, "rgb_next": rgb, "K": K}

    def loss(now: list[float], following: list[float], **options: float) -> float:
        def field(v: list[float]) -> torch.Tensor:
            return torch.tensor(v).reshape(1, 2, 1, 1).expand(1, 2, 4, 4).contiguous()
        outputs = {"segmentation": {"logits": field(now), "logits_next": field(following)},
                   "depth": {"depth": torch.full((1, 1, 4, 4), 5.0)},
                   "motion": {"rotation": torch.zeros(1, 3), "translation": torch.zeros(1, 3),
                              "object_translation": torch.zeros(1, 3, 4, 4)}}
        return float(segmentation_temporal_loss(outputs, batch, {"segmentation": seg}, **options))

    # frame t+1 says class 0 with p = 0.982 (>= 0.9): frame t is taught -log p_t(class 0)
    assert loss([0.0, 2.0], [4.0, 0.0]) == pytest.approx(float(-torch.log_softmax(torch.tensor([0.0, 2.0]), 0)[0]),
                                                          abs=1e-5)
    assert loss([0.0, 2.0], [1.0, 0.0]) == 0.0                      # p = 0.73 < 0.9: no pseudo-label
    assert loss([0.0, 2.0], [1.0, 0.0], confidence=0.7) > 2.0       # unless the threshold allows it
    assert loss([0.0, 2.0], [4.0, 0.0], photometric_tolerance=0.0) == 0.0   # no pixel passes a zero tolerance
