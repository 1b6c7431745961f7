"""``SegmentationTask.augment``: mirrored images keep their labels under the same pixels, photometric
changes leave the labels alone, and the draws are a function of the generator."""
from __future__ import annotations

import numpy as np
import torch

from taskology.tasks.segmentation import PHOTOMETRIC_RANGE, SegmentationTask, mirror_frames, photometric


def _batch(n: int = 64) -> dict[str, torch.Tensor]:
    """Images whose red channel encodes the label of the same pixel (label / 20), green and blue noise."""
    gen = torch.Generator().manual_seed(0)
    semantic = torch.randint(1, 20, (n, 6, 10), generator=gen)
    rgb = torch.rand(n, 3, 6, 10, generator=gen) * 0.5 + 0.25
    rgb[:, 0] = semantic.float() / 20
    return {"rgb": rgb, "semantic": semantic}


def test_mirror_flips_image_and_labels_of_the_chosen_samples_only() -> None:
    batch = _batch(4)
    flip = torch.tensor([True, False, True, False])
    out = mirror_frames(batch, ("rgb", "semantic"), flip)
    for i in range(4):
        for key in ("rgb", "semantic"):
            expected = batch[key][i].flip(-1) if flip[i] else batch[key][i]
            assert torch.equal(out[key][i], expected)
    twice = mirror_frames(out, ("rgb", "semantic"), flip)
    assert all(torch.equal(twice[k], batch[k]) for k in batch)


def test_every_augmented_label_still_sits_under_its_own_pixel() -> None:
    """The red channel encoded each pixel's label before augmentation. After it, photometric factors have
    changed the values but not their order along a row; so each sample's red channel must correlate
    with its (possibly mirrored) labels, and far better than with the labels mirrored the other way."""
    batch = _batch()
    out = SegmentationTask(width=4).augment(batch, np.random.default_rng(3))
    flipped = 0
    for i in range(out["rgb"].shape[0]):
        red, labels = out["rgb"][i, 0].flatten(), out["semantic"][i].float()
        same = torch.corrcoef(torch.stack([red, labels.flatten()]))[0, 1]
        other = torch.corrcoef(torch.stack([red, labels.flip(-1).flatten()]))[0, 1]
        assert same > 0.9 and same > other + 0.5, (i, same, other)
        flipped += int(torch.equal(out["semantic"][i], batch["semantic"][i].flip(-1)))
    assert 16 <= flipped <= 48  # about half of 64 were mirrored


def test_photometric_is_the_identity_at_one_scales_brightness_and_stays_in_range() -> None:
    rgb = _batch(3)["rgb"]
    one = torch.ones(3)
    assert torch.allclose(photometric(rgb, one, one, one), rgb)
    brighter = photometric(rgb, one, one, torch.tensor([1.1, 1.0, 0.8]))
    assert torch.allclose(brighter[1], rgb[1])
    assert torch.allclose(brighter[2], rgb[2] * 0.8)
    assert torch.allclose(brighter[0], (rgb[0] * 1.1).clamp(0, 1))
    grey = photometric(rgb, torch.zeros(3), one, one)  # no saturation: every channel equals the grey
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    low, high = PHOTOMETRIC_RANGE
    wild = photometric(torch.rand(50, 3, 4, 4), torch.full((50,), high), torch.full((50,), high), torch.full((50,), high))
    assert float(wild.min()) >= 0.0 and float(wild.max()) <= 1.0


def test_augment_never_changes_which_labels_a_sample_has_and_is_a_function_of_the_generator() -> None:
    task, batch = SegmentationTask(width=4), _batch(16)
    a = task.augment(batch, np.random.default_rng([7, 100, 2]))
    b = task.augment(batch, np.random.default_rng([7, 100, 2]))
    c = task.augment(batch, np.random.default_rng([7, 101, 2]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["rgb"], c["rgb"])
    for i in range(16):
        assert torch.equal(torch.bincount(a["semantic"][i].flatten(), minlength=20),
                           torch.bincount(batch["semantic"][i].flatten(), minlength=20))
    assert not torch.equal(a["rgb"], batch["rgb"])  # the images did change


def test_segmentation_augment_is_accepted_by_the_config() -> None:
    from taskology.config import load_config

    assert load_config(None, ["tasks.segmentation.augment=true"]).tasks["segmentation"].augment
