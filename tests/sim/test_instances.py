"""Dynamic instances: candidate rays are a superset of the brute-force sphere hits; instance hits
agree with a world-space scene of the posed meshes."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.sim import meshes, sensors
from taskology.sim.instances import (DynamicInstances, box_corners, camera_candidates, lidar_candidates,
                                     parallel_candidates, rays_hitting_box, rays_hitting_sphere)
from taskology.sim.renderer import _embree_scene
from taskology.sim.world import pose_matrix


def _spheres(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-30, 30, (n, 3))
    centres[:4] = [[0, 0, 0.5], [0, 0.3, 3.0], [5, 0, 0], [0, 0, -2]]  # around / on the axis / beside / behind
    return centres, rng.uniform(0.3, 4.0, n)


def _boxes(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level boxes (object frame lo/hi, world_from_object) around, beside, behind and far from the sensor."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(0.3, 8.0, (n, 3))
    lo = -size / 2 + rng.uniform(-0.5, 0.5, (n, 3))
    hi = lo + size
    poses = np.stack([pose_matrix(*rng.uniform(-30, 30, 2), rng.uniform(-3, 3), rng.uniform(-np.pi, np.pi))
                      for _ in range(n)])
    poses[0, :3, 3] = [0.0, 0.0, 0.0]  # around the sensor
    poses[1, :3, 3] = [0.0, 0.1, 2.0]  # on the axis, straddling the camera plane
    poses[2, :3, 3] = [1.0, 3.0, 0.0]
    poses[3, :3, 3] = [0.0, 0.0, -6.0]  # behind the camera / below the LiDAR
    return lo, hi, poses


@pytest.mark.parametrize("seed", [0, 1])
def test_camera_candidates_contain_every_ray_that_hits_the_box(seed: int) -> None:
    K = sensors.camera_intrinsics(24, 60)
    dirs, _ = sensors.camera_rays(K, 24, 60)
    lo, hi, poses = _boxes(seed)
    cands = camera_candidates(box_corners(lo, hi, poses), K, 24, 60)
    hits = 0
    for k, cand in enumerate(cands):
        # the sensor never sees closer than the near plane: shift rays' start by 5 cm along z
        truth = rays_hitting_box(dirs * 0.05 / dirs[:, 2:], dirs, lo[k], hi[k], poses[k])
        assert set(truth.tolist()) <= set(cand.tolist()), k
        assert len(cand) == len(set(cand.tolist()))
        hits += len(truth)
    assert hits > 100 and sum(len(c) for c in cands) < 40 * 24 * 60  # culled, not everything


@pytest.mark.parametrize("seed", [0, 1])
def test_lidar_candidates_contain_every_ray_that_hits_the_box(seed: int) -> None:
    dirs = sensors.lidar_rays(16, 90)
    elevations = np.radians(np.linspace(*sensors.LIDAR_VFOV_DEG, 16))
    lo, hi, poses = _boxes(seed)
    cands = lidar_candidates(lo, hi, poses, elevations, 90)
    hits = 0
    for k, cand in enumerate(cands):
        truth = rays_hitting_box(np.zeros_like(dirs), dirs, lo[k], hi[k], poses[k])
        assert set(truth.tolist()) <= set(cand.tolist()), k
        hits += len(truth)
    assert hits > 100 and sum(len(c) for c in cands) < 0.5 * 40 * 16 * 90
    far = lidar_candidates(lo[:1], hi[:1], pose_matrix(100.0, 0, 0, 0.3)[None], elevations, 90, max_range=80.0)
    assert len(far[0]) == 0


def test_parallel_candidates_contain_every_ray_that_hits_the_sphere() -> None:
    rng = np.random.default_rng(0)
    origins = rng.uniform(-20, 20, (3000, 3))
    sun = np.array([0.3, -0.5, 0.8])
    sun /= np.linalg.norm(sun)
    centres, radii = _spheres(2)
    dirs = np.broadcast_to(sun, origins.shape)
    for c, r, cand in zip(centres, radii, parallel_candidates(origins, sun, centres, radii)):
        truth = rays_hitting_sphere(origins, dirs, c, r)
        assert set(truth.tolist()) <= set(cand.tolist())
        assert len(cand) < len(origins)


def test_instance_hits_match_a_world_space_scene() -> None:
    rng = np.random.default_rng(3)
    assets = [meshes.build_vehicle(rng, "sedan"), meshes.build_pedestrian(rng), meshes.build_vehicle(rng, "bus")]
    poses = np.stack([pose_matrix(8, 1, 0, 0.3), pose_matrix(6, -2, 0.15, 2.0), pose_matrix(20, 3, 0, -1.2)])
    objects = DynamicInstances(assets, np.arange(3))
    dirs = sensors.lidar_rays(32, 512)
    origins = np.tile([0.0, 0.0, 1.9], (len(dirs), 1))
    t = np.full(len(dirs), 1e4)
    everything = [np.arange(len(dirs))] * 3
    hit = objects.intersect(poses, origins, dirs, t, everything)
    world = np.concatenate([np.einsum("ij,tvj->tvi", p[:3, :3], a.triangles) + p[:3, 3] for p, a in zip(poses, assets)])
    ref = _embree_scene(world).run(origins.astype(np.float32), dirs.astype(np.float32), output=1)
    agree = (hit["triangle"] >= 0) == (ref["primID"] >= 0)
    assert agree.mean() > 0.999 and (hit["triangle"] >= 0).sum() > 200
    both = (hit["triangle"] >= 0) & (ref["primID"] >= 0)
    np.testing.assert_allclose(t[both], ref["tfar"][both], atol=1e-3)
    # same object everywhere; the same triangle except where overlapping parts tie in distance
    np.testing.assert_array_equal(objects.object_of_triangle[hit["triangle"][both]],
                                  objects.object_of_triangle[ref["primID"][both]])
    assert np.mean(hit["triangle"][both] == ref["primID"][both]) > 0.98
    # the candidate path gives the same answer as casting every ray at every object
    t2 = np.full(len(dirs), 1e4)
    lidar_from_object = poses.copy()
    lidar_from_object[:, 2, 3] -= 1.9
    cand = lidar_candidates(objects.box_lo, objects.box_hi, lidar_from_object,
                            np.radians(np.linspace(*sensors.LIDAR_VFOV_DEG, 32)), 512)
    hit2 = objects.intersect(poses, origins, dirs, t2, cand)
    np.testing.assert_array_equal(hit2["triangle"], hit["triangle"])
    # shadows: a ray from under the bus towards the sky is blocked, one beside it is not
    blocked = objects.occluded(poses, np.array([[20.0, 3.0, 0.05], [20.0, 30.0, 0.05]]), np.array([0, 0, 1.0]))
    assert blocked.tolist() == [True, False]


@pytest.mark.parametrize("seed", [0, 1])
def test_local_rays_kernel_matches_reference(seed: int) -> None:
    """Object-frame rays through a posed box: same kept rays and values as the NumPy reference, on
    random rays plus degenerate ones (axis-parallel directions, origins inside the box, t_max 0)."""
    from taskology.sim.instances import local_rays_through_box, local_rays_through_box_reference

    rng = np.random.default_rng(seed)
    n = 3000
    origins = rng.uniform(-15, 15, (n, 3))
    dirs = rng.normal(size=(n, 3))
    dirs[:300] = np.eye(3)[rng.integers(0, 3, 300)] * rng.choice([-1.0, 1.0], (300, 1))  # axis-parallel
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pose = pose_matrix(1.0, -2.0, 0.5, rng.uniform(-np.pi, np.pi))
    origins[300:400] = pose[:3, 3] + rng.uniform(-0.5, 0.5, (100, 3))  # inside the box
    lo, hi = np.array([-2.0, -1.0, 0.0]), np.array([2.0, 1.0, 1.5])
    t_max = rng.uniform(0, 40, n)
    t_max[400:450] = 0.0
    idx = np.sort(rng.choice(n, 2000, replace=False)).astype(np.int64)
    fast = local_rays_through_box(origins, dirs, idx, pose, lo, hi, t_max)
    ref = local_rays_through_box_reference(origins, dirs, idx, pose, lo, hi, t_max)
    np.testing.assert_array_equal(fast[0], ref[0])
    assert 30 < len(fast[0]) < len(idx)  # some kept, some culled
    for a, b in zip(fast[1:], ref[1:]):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # every kept ray really crosses the box: brute force with the world-frame slab test
    assert set(fast[0].tolist()) <= set(rays_hitting_box(origins, dirs, lo, hi, pose).tolist())
    empty = local_rays_through_box(origins, dirs, np.zeros(0, np.int64), pose, lo, hi, t_max)
    assert [len(a) for a in empty] == [0, 0, 0, 0]


def test_merge_object_hits_kernel_matches_reference() -> None:
    """Folding one object's hits into the batch: only nearer hits replace, misses (-1) never do."""
    from taskology.sim.instances import merge_object_hits, merge_object_hits_reference

    rng = np.random.default_rng(3)
    n, m = 500, 200
    idx = np.sort(rng.choice(n, m, replace=False)).astype(np.int64)
    hit = {"primID": np.where(rng.random(m) < 0.3, -1, rng.integers(0, 50, m)).astype(np.int32),
           "tfar": rng.uniform(0, 60, m).astype(np.float32), "u": rng.random(m).astype(np.float32),
           "v": rng.random(m).astype(np.float32), "Ng": rng.normal(size=(m, 3)).astype(np.float32)}
    pose = pose_matrix(3.0, -1.0, 0.2, 0.7)
    t0 = rng.uniform(0, 60, n)
    records = [(t0.copy(), np.full(n, -1, np.int64), np.zeros(n), np.zeros(n), np.zeros((n, 3))) for _ in range(2)]
    merge_object_hits(idx, hit, pose, 1000, *records[0])
    merge_object_hits_reference(idx, hit, pose, 1000, *records[1])
    for fast, ref in zip(*records):
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    changed = records[0][1] >= 0
    assert 20 < changed.sum() < m  # some replaced, some kept
    assert np.all(records[0][0][changed] < t0[changed]) and np.all(records[0][0][~changed] == t0[~changed])
    np.testing.assert_allclose(np.linalg.norm(records[0][4][changed], axis=1),
                               np.linalg.norm(hit["Ng"][np.isin(idx, np.flatnonzero(changed))], axis=1), rtol=1e-6)
