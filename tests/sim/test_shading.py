"""Shading: the Numba kernel equals the NumPy reference; hand-worked answers; footprint filtering."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.sim import materials as mat
from taskology.sim import shading


def _random_hits(n: int, seed: int, scale: float = 300.0) -> tuple:
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return (rng.integers(0, mat.NUM_MATERIALS, n).astype(np.uint8), rng.uniform(0, 1, (n, 3)).astype(np.float32),
            rng.uniform(-scale, scale, (n, 3)), normal, rng.random(n) < 0.7, rng.uniform(0, 0.4, n))


@pytest.mark.parametrize("seed, scale", [(0, 300.0), (1, 3.0), (2, 1e5)])
def test_kernel_matches_reference_on_random_hits(seed: int, scale: float) -> None:
    m, c, p, n, lit, fp = _random_hits(5000, seed, scale)
    sun = np.array([0.3, -0.4, 0.866])
    np.testing.assert_array_equal(shading.shade(m, c, p, n, lit, sun, fp), shading.shade_reference(m, c, p, n, lit, sun, fp))


def test_kernel_matches_reference_on_degenerate_hits() -> None:
    # lattice points (noise weights exactly 0/1), negative coordinates, zero footprint, unlit, empty
    grid = np.stack(np.meshgrid(*[np.arange(-3.0, 3.0, 0.75)] * 3, indexing="ij"), -1).reshape(-1, 3)
    n = len(grid)
    m = (np.arange(n) % mat.NUM_MATERIALS).astype(np.uint8)
    c = np.full((n, 3), 0.5, np.float32)
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    for lit in (np.ones(n, bool), np.zeros(n, bool)):
        for fp in (None, np.zeros(n), np.full(n, 10.0)):
            np.testing.assert_array_equal(shading.shade(m, c, grid, normal, lit, np.array([0, 0, 1.0]), fp),
                                          shading.shade_reference(m, c, grid, normal, lit, np.array([0, 0, 1.0]), fp))
    empty = shading.shade(m[:0], c[:0], grid[:0], normal[:0], np.ones(0, bool), np.array([0, 0, 1.0]))
    assert empty.shape == (0, 3) and empty.dtype == np.uint8


def test_untextured_material_follows_lambert_by_hand() -> None:
    colour = np.array([[0.4, 0.5, 0.6]], np.float32)
    normal = np.array([[0.0, 0.0, 1.0]])
    sun = np.array([0.0, 0.6, 0.8])  # cos = 0.8
    lit = shading.shade(np.array([mat.RUBBER], np.uint8), colour, np.zeros((1, 3)), normal, np.ones(1, bool), sun)
    expected = np.clip(colour[0] * (shading.AMBIENT + shading.SUN * 0.8), 0, 1) * 255 + 0.5
    np.testing.assert_array_equal(lit[0], expected.astype(np.uint8))
    shadowed = shading.shade(np.array([mat.RUBBER], np.uint8), colour, np.zeros((1, 3)), normal, np.zeros(1, bool), sun)
    np.testing.assert_array_equal(shadowed[0], (colour[0] * shading.AMBIENT * 255 + 0.5).astype(np.uint8))


def test_textures_vary_over_a_surface_and_fade_with_footprint() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    p = np.column_stack([rng.uniform(0, 20, n), rng.uniform(0, 20, n), np.zeros(n)])
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    m = np.full(n, mat.ASPHALT, np.uint8)
    c = np.full((n, 3), 0.5, np.float32)
    near = shading.shade_reference(m, c, p, normal, np.ones(n, bool), np.array([0, 0, 1.0]), np.zeros(n))
    far = shading.shade_reference(m, c, p, normal, np.ones(n, bool), np.array([0, 0, 1.0]), np.full(n, 1.0))
    assert near[:, 0].std() > 4.0  # grain + stains: photometric signal
    assert far[:, 0].std() < near[:, 0].std() * 0.8  # fine grain filtered out for large pixels
    assert abs(far[:, 0].mean() - near[:, 0].mean()) < 3.0  # filtering keeps the mean


def test_sky_is_brighter_at_the_horizon_than_at_the_zenith() -> None:
    horizon = shading.sky_reference(np.array([[1.0, 0.0, 0.0]]))
    zenith = shading.sky_reference(np.array([[0.0, 0.0, 1.0]]))
    assert horizon.sum() > zenith.sum() and zenith[0, 2] > zenith[0, 0]
