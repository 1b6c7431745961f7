"""Fused layer kernels: the Numba passes equal the NumPy references (hit resolution + shading + labels)
on random, degenerate and real rendered batches, and a hand-worked frame."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.sim import layers as L
from taskology.sim import materials as mat
from taskology.sim.renderer import EmbeddedRenderer
from taskology.sim.world import World, WorldConfig


def _batch(n: int, seed: int, n_static: int = 60, n_dyn: int = 40, n_obj: int = 5,
           miss: float = 0.2) -> tuple[L.RayHits, L.SurfaceTables, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    static_prim = np.where(rng.random(n) >= miss, rng.integers(0, n_static, n), -1).astype(np.int32)
    dyn_tri = np.where(rng.random(n) < 0.3, rng.integers(0, max(n_dyn, 1), n), -1).astype(np.int64) if n_dyn \
        else np.full(n, -1, np.int64)
    hits = L.RayHits(rng.uniform(0.5, 90, n), static_prim, rng.normal(size=(n, 3)).astype(np.float32), dyn_tri,
                     rng.random(n) * 0.5, rng.random(n) * 0.5, rng.normal(size=(n, 3)))
    tables = L.SurfaceTables.build(
        rng.integers(0, 25, n_static), rng.integers(0, mat.NUM_MATERIALS, n_static), rng.random((n_static, 3)),
        *((rng.integers(0, 25, n_dyn), rng.integers(0, mat.NUM_MATERIALS, n_dyn), rng.random((n_dyn, 3)),
           rng.normal(size=(n_dyn, 3, 3)) * 2, rng.integers(0, n_obj, n_dyn), rng.integers(0, 100, n_obj))
          if n_dyn else ()))
    return hits, tables, rng.normal(size=3) * 10, dirs


def _compare_camera(hits: L.RayHits, tables: L.SurfaceTables, origin: np.ndarray, dirs: np.ndarray,
                    shadowed: np.ndarray | None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cam_z = rng.uniform(0.5, 1.0, len(dirs))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    sun = np.array([0.3, -0.4, 0.8])
    sun /= np.linalg.norm(sun)
    args = (hits, tables, origin, dirs, cam_z, q, 120.0, sun, shadowed)
    fast, ref = L.camera_layers(*args), L.camera_layers_reference(*args)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key].dtype == ref[key].dtype and fast[key].shape == ref[key].shape, key
    for key in ("depth", "semantic", "instance"):
        np.testing.assert_array_equal(fast[key], ref[key], err_msg=key)
    np.testing.assert_allclose(fast["normals"], ref["normals"], atol=1e-6, err_msg="normals")
    # textures: equal formulas; a value on a .5 rounding boundary may land one level apart
    diff = np.abs(fast["rgb"].astype(int) - ref["rgb"].astype(int))
    assert diff.max(initial=0) <= 1 and (diff > 0).sum() <= 1e-3 * diff.size


def _compare_lidar(hits: L.RayHits, tables: L.SurfaceTables, origin: np.ndarray, dirs: np.ndarray,
                   dropped: np.ndarray | None, noise: np.ndarray | None, max_range: float = 60.0) -> None:
    sensor = np.roll(dirs, 1, axis=1)  # any fixed rotation of the rays
    args = (hits, tables, origin, dirs, sensor, max_range, dropped, noise)
    fast, ref = L.lidar_layers(*args), L.lidar_layers_reference(*args)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key].dtype == ref[key].dtype, key
        np.testing.assert_array_equal(fast[key], ref[key], err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
def test_camera_kernel_matches_reference_on_random_batches(seed: int) -> None:
    hits, tables, origin, dirs = _batch(4000, seed)
    _compare_camera(hits, tables, origin, dirs, None, seed)
    _compare_camera(hits, tables, origin, dirs, np.random.default_rng(seed).random(4000) < 0.4, seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_lidar_kernel_matches_reference_on_random_batches(seed: int) -> None:
    hits, tables, origin, dirs = _batch(4000, seed)
    rng = np.random.default_rng(seed + 10)
    _compare_lidar(hits, tables, origin, dirs, None, None)
    _compare_lidar(hits, tables, origin, dirs, rng.random(4000) < 0.2, rng.normal(0, 3.0, 4000))  # some clamp at 0


def test_kernels_on_degenerate_batches() -> None:
    hits, tables, origin, dirs = _batch(600, 3, n_dyn=0, n_obj=0)  # no moving objects at all
    hits.static_ng[:80] = 0.0  # zero normals stay zero (no division)
    _compare_camera(hits, tables, origin, dirs, None)
    _compare_lidar(hits, tables, origin, dirs, None, None)
    for batch in (_batch(300, 4, miss=1.0, n_dyn=0), _batch(0, 5)):  # all sky / empty
        _compare_camera(*batch, None)
        _compare_lidar(*batch, None, None)
    out = L.lidar_layers(*_batch(300, 4, miss=1.0, n_dyn=0), np.zeros((300, 3)), 80.0)
    assert out["points"].shape == (0, 4) and out["semantic"].shape == (0,)


def test_camera_layers_by_hand() -> None:
    """Ray 0 hits a static floor at 2 m (normal given upside down: flipped), ray 1 hits a moving
    object at 4 m (instance = its track id, texture point in the object frame), ray 2 is sky."""
    hits = L.RayHits(t=np.array([2.0, 4.0, 1e5]), static_prim=np.array([0, 0, -1], np.int32),
                     static_ng=np.array([[0, 0, -3.0], [0, 0, 1], [0, 0, 0]], np.float32),
                     dyn_tri=np.array([-1, 0, -1]), dyn_u=np.array([0, 0.5, 0]), dyn_v=np.array([0, 0.25, 0]),
                     dyn_ng=np.array([[0, 0, 0], [2.0, 0, 0], [0, 0, 0]]))
    tables = L.SurfaceTables.build(np.array([1]), np.array([mat.ASPHALT]), np.full((1, 3), 0.5),
                                   np.array([14]), np.array([mat.CAR_PAINT]), np.full((1, 3), 0.2),
                                   np.arange(9.0).reshape(1, 3, 3), np.array([0]), np.array([7]))
    dirs = np.array([[0, 0, -1.0], [1.0, 0, 0], [0, 0, 1.0]])
    out = L.camera_layers(hits, tables, np.zeros(3), dirs, np.array([1.0, 0.5, 1.0]), np.eye(3), 100.0,
                          np.array([0, 0, 1.0]))
    assert out["depth"].tolist() == [2.0, 2.0, 0.0]
    assert out["semantic"].tolist() == [1, 14, 11] and out["instance"].tolist() == [-1, 7, -1]
    np.testing.assert_array_equal(out["normals"], [[0, 0, 1], [-1, 0, 0], [0, 0, 0]])
    lidar = L.lidar_layers(hits, tables, np.zeros(3), dirs, dirs, 3.0)  # the object at 4 m is out of range
    np.testing.assert_allclose(lidar["points"][:, :3], [[0, 0, -2.0]])
    np.testing.assert_allclose(lidar["points"][0, 3], min(mat.REFLECTIVITY[mat.ASPHALT] * 1.0, 1.0), rtol=1e-6)


def test_kernels_match_reference_on_a_rendered_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real hits (static + moving objects) captured from the renderer, camera and LiDAR."""
    world = World.generate(2, WorldConfig(blocks=2, cars=10, pedestrians=10))
    renderer = EmbeddedRenderer((24, 64), lidar_beams=8, lidar_azimuth=128, shadows=True, lidar_noise_m=0.05,
                                lidar_dropout=0.1)
    captured: dict[str, tuple] = {}
    real_camera, real_lidar = L.camera_layers, L.lidar_layers
    monkeypatch.setattr(L, "camera_layers", lambda *a: captured.setdefault("camera", a) and real_camera(*a))
    monkeypatch.setattr(L, "lidar_layers", lambda *a: captured.setdefault("lidar", a) and real_lidar(*a))
    layers = renderer.render(world.state(), 0)
    cam_args, lidar_args = captured["camera"], captured["lidar"]
    assert (cam_args[0].dyn_tri >= 0).any() or (lidar_args[0].dyn_tri >= 0).any()  # objects were hit
    ref = L.camera_layers_reference(*cam_args)
    np.testing.assert_array_equal(layers["camera/depth"].ravel(), ref["depth"])
    np.testing.assert_array_equal(layers["camera/instance"].ravel(), ref["instance"])
    assert np.abs(layers["camera/rgb"].reshape(-1, 3).astype(int) - ref["rgb"]).max() <= 1
    lidar_ref = L.lidar_layers_reference(*lidar_args)
    np.testing.assert_array_equal(layers["lidar/points"], lidar_ref["points"])
    np.testing.assert_array_equal(layers["lidar/instance"], lidar_ref["instance"])
