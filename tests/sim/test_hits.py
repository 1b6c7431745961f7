"""Hit resolution: the Numba pass equals the NumPy reference on random and degenerate batches."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.sim.hits import resolve_hits, resolve_hits_reference


def _batch(n: int, seed: int, n_static: int = 50, n_dyn: int = 30, n_obj: int = 4) -> tuple:
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    static_prim = np.where(rng.random(n) < 0.7, rng.integers(0, n_static, n), -1).astype(np.int32)
    dyn_tri = np.where(rng.random(n) < 0.3, rng.integers(0, max(n_dyn, 1), n), -1).astype(np.int64) if n_dyn else \
        np.full(n, -1, np.int64)
    return (rng.normal(size=(n, 3)) * 10, dirs, rng.uniform(0.5, 80, n), static_prim,
            rng.normal(size=(n, 3)).astype(np.float32), dyn_tri, rng.random(n) * 0.5, rng.random(n) * 0.5,
            rng.normal(size=(n, 3)),
            rng.integers(0, 25, n_static).astype(np.uint8), rng.integers(0, 15, n_static).astype(np.uint8),
            rng.random((n_static, 3)).astype(np.float32),
            rng.integers(0, 25, n_dyn).astype(np.uint8), rng.integers(0, 15, n_dyn).astype(np.uint8),
            rng.random((n_dyn, 3)).astype(np.float32), rng.normal(size=(n_dyn, 3, 3)),
            rng.integers(0, n_obj, n_dyn).astype(np.int64), rng.integers(0, 100, n_obj).astype(np.int32))


def _compare(args: tuple) -> None:
    fast, ref = resolve_hits(*args), resolve_hits_reference(*args)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key].dtype == ref[key].dtype, key
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_reference_on_random_batches(seed: int) -> None:
    _compare(_batch(3000, seed))


def test_kernel_matches_reference_without_dynamic_objects_and_on_zero_normals() -> None:
    args = list(_batch(500, 2, n_dyn=0, n_obj=0))
    args[4][:50] = 0.0  # degenerate normals stay zero
    _compare(tuple(args))
    _compare(_batch(0, 3))


def test_hits_by_hand() -> None:
    args = list(_batch(3, 4))
    args[0] = np.zeros((3, 3))
    args[1] = np.array([[1.0, 0, 0]] * 3)
    args[2] = np.array([5.0, 7.0, 9.0])
    args[3] = np.array([2, -1, -1], np.int32)  # static hit, dynamic hit, miss
    args[4] = np.array([[3.0, 0, 0]] * 3, np.float32)  # normal along the ray: must be flipped
    args[5] = np.array([-1, 1, -1])
    args[6], args[7] = np.array([0, 0.25, 0]), np.array([0, 0.5, 0])
    args[15] = np.arange(args[15].size, dtype=np.float64).reshape(args[15].shape)
    out = resolve_hits(*args)
    assert out["hit"].tolist() == [True, True, False]
    assert out["t"].tolist() == [5.0, 7.0, 0.0]
    np.testing.assert_allclose(out["normal"][0], [-1, 0, 0])
    np.testing.assert_allclose(out["point"][0], [5, 0, 0])
    tri = args[15][1]
    np.testing.assert_allclose(out["point"][1], tri[0] * 0.25 + tri[1] * 0.25 + tri[2] * 0.5)  # object frame
    assert out["instance"].tolist() == [-1, int(args[17][args[16][1]]), -1]
    assert out["class_id"][0] == args[9][2] and out["class_id"][1] == args[12][1] and out["class_id"][2] == 0
