"""BEV pillar encoding (Numba kernel vs NumPy reference vs torch, known answers, validation) and the global
sweep augmentation (point-in-box membership preserved, inverses)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskology import geometry
from taskology.geometry import pillars, points_in_boxes
from taskology.geometry.boxes import GeometryInputError
from taskology.geometry.pillars import BevGrid, augment_sweep, bev_pillars, bev_pillars_reference, bev_pillars_torch

random_augmentation, wrap_angle = pillars.random_augmentation, pillars.wrap_angle

GRID = BevGrid()
SMALL = BevGrid(x_range=(-4.0, 6.0), y_range=(-3.0, 5.0), z_range=(-1.0, 3.0), cell_m=0.5)


def random_cloud(rng: np.random.Generator, n: int, grid: BevGrid) -> np.ndarray:
    """Points spilling past every range, a share snapped exactly onto cell borders and range limits."""
    (x0, x1), (y0, y1), (z0, z1) = grid.x_range, grid.y_range, grid.z_range
    pts = np.column_stack([rng.uniform(x0 - 3, x1 + 3, n), rng.uniform(y0 - 3, y1 + 3, n),
                           rng.uniform(z0 - 1, z1 + 1, n), rng.uniform(0, 1, n)])
    snap = rng.random(n) < 0.3
    pts[snap, 0] = x0 + grid.cell_m * rng.integers(-2, grid.shape[0] + 3, snap.sum())
    snap = rng.random(n) < 0.3
    pts[snap, 1] = y0 + grid.cell_m * rng.integers(-2, grid.shape[1] + 3, snap.sum())
    pts[rng.random(n) < 0.05, 2] = z0
    pts[rng.random(n) < 0.05, 2] = z1
    limits = np.array([[x1, 0.0], [x0, 0.0], [0.0, y1], [0.0, y0]] * 10)  # exactly on the outer limits
    pts[:min(n, 40), :2] = limits[:n]
    return pts.astype(np.float32)


# ------------------------------------------------------------------------------------------- grid


def test_default_grid_shape_and_cell_convention() -> None:
    assert BevGrid((-32, 32), (-32, 32), (-0.5, 4.5), 0.5).shape == (128, 128)
    assert GRID.shape == (128, 128)
    assert SMALL.shape == (20, 16)  # H along x, W along y
    assert SMALL.cell_of([-4.0, -3.0]) == (0.0, 0.0)
    assert SMALL.cell_of([1.25, 0.1]) == pytest.approx((10.5, 6.2))
    i, j = SMALL.cell_of(np.array([[0.0, 0.0], [5.9, 4.9]]))
    np.testing.assert_allclose(i, [8.0, 19.8])
    np.testing.assert_allclose(j, [6.0, 15.8])
    assert SMALL.centre_of(0, 0) == (-3.75, -2.75)
    x, y = SMALL.centre_of(np.arange(20), np.arange(16)[:, None])
    ci, cj = SMALL.cell_of(np.stack(np.broadcast_arrays(x, y), axis=-1))
    assert ci.shape == cj.shape == (16, 20)
    np.testing.assert_allclose(ci, np.broadcast_to(np.arange(20)[None] + 0.5, (16, 20)))
    np.testing.assert_allclose(cj, np.broadcast_to(np.arange(16)[:, None] + 0.5, (16, 20)))


def test_a_point_lands_in_the_row_of_its_x_and_the_column_of_its_y() -> None:
    canvas = bev_pillars(np.array([[1.25, -2.9, 0.0, 1.0]], np.float32), SMALL)
    i, j = (math.floor(v) for v in SMALL.cell_of([1.25, -2.9]))
    assert (i, j) == (10, 0)
    assert canvas[0, i, j] > 0 and np.count_nonzero(canvas[0]) == 1


@pytest.mark.parametrize("kwargs", [{"cell_m": 0.0}, {"cell_m": -0.5}, {"cell_m": float("nan")},
                                    {"cell_m": "big"}, {"x_range": (-32.0, 32.2)}, {"y_range": (0.0, 0.75)},
                                    {"x_range": (1.0, 1.0)}, {"y_range": (2.0, -2.0)}, {"z_range": (1.0, 0.0)},
                                    {"x_range": (0.0, float("inf"))}, {"z_range": (0.0,)}])
def test_grid_validation(kwargs: dict) -> None:
    with pytest.raises(GeometryInputError):
        BevGrid(**kwargs)


def test_grid_accepts_ranges_divisible_up_to_rounding() -> None:
    assert BevGrid(x_range=(0.0, 6.4), y_range=(-0.3, 0.3), cell_m=0.1).shape == (64, 6)
    assert BevGrid(x_range=(0, 10), y_range=(0, 4), cell_m=2).x_range == (0.0, 10.0)


# ------------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed, grid, n", [(0, GRID, 20_000), (1, SMALL, 3_000), (2, SMALL, 7)])
def test_kernel_equals_numpy_reference_and_torch(seed: int, grid: BevGrid, n: int) -> None:
    points = random_cloud(np.random.default_rng(seed), n, grid)
    ours = bev_pillars(points, grid)
    ref = bev_pillars_reference(points, grid)
    via_torch = bev_pillars_torch(torch.from_numpy(points), grid)
    assert ours.dtype == ref.dtype == np.float32 and via_torch.dtype == torch.float32
    assert ours.shape == ref.shape == tuple(via_torch.shape) == (len(pillars.PILLAR_FEATURES), *grid.shape)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, via_torch.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ours[0] > 0, ref[0] > 0)  # the same cells are occupied
    for order in (np.argsort(points[:, 0], kind="stable"), np.arange(n)[::-1]):  # long runs of one cell; reversed
        np.testing.assert_allclose(bev_pillars(points[order], grid), ref, rtol=0, atol=1e-5)
    assert 0 < np.count_nonzero(ours[0]) < ours[0].size
    assert ours.min() >= 0 and ours.max() <= 1


def test_float64_points_and_torch_float64_agree() -> None:
    points = random_cloud(np.random.default_rng(3), 2_000, SMALL).astype(np.float64)
    ours = bev_pillars(points, SMALL)
    np.testing.assert_allclose(ours, bev_pillars_reference(points, SMALL), atol=1e-5)
    np.testing.assert_allclose(ours, bev_pillars_torch(torch.from_numpy(points), SMALL).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------------- known answers


def _every_implementation(points: np.ndarray, grid: BevGrid) -> list[np.ndarray]:
    return [bev_pillars(points, grid), bev_pillars_reference(points, grid),
            bev_pillars_torch(torch.from_numpy(points), grid).numpy()]


def test_two_points_in_one_cell() -> None:
    points = np.array([[0.1, 0.2, 0.5, 0.25], [0.4, 0.3, 2.0, 0.75], [10.0, 10.0, 1.0, 1.0]], np.float32)
    for canvas in _every_implementation(points, GRID):
        cell = canvas[:, 64, 64]  # x, y in [0, 0.5)
        span = 5.0
        assert cell[0] == pytest.approx(math.log1p(2) / math.log1p(64), abs=1e-7)
        assert cell[1] == pytest.approx((2.0 + 0.5) / span, abs=1e-7)  # z_max
        assert cell[2] == pytest.approx((0.5 + 0.5) / span, abs=1e-7)  # z_min
        assert cell[3] == pytest.approx((1.25 + 0.5) / span, abs=1e-7)  # z_mean
        assert cell[4] == pytest.approx(0.5, abs=1e-7)  # intensity mean
        assert cell[5] == pytest.approx(1.5 / span, abs=1e-7)  # z spread
        other = canvas[:, 84, 84]  # the point at (10, 10): one point, no spread
        assert other[0] == pytest.approx(math.log1p(1) / math.log1p(64), abs=1e-7)
        assert other[1] == other[2] == other[3] == pytest.approx(0.3, abs=1e-7) and other[5] == 0
        mask = np.ones(GRID.shape, bool)
        mask[64, 64] = mask[84, 84] = False
        assert not canvas[:, mask].any()  # every other cell is empty, all channels 0


def test_count_saturates_and_borders_go_to_the_upper_cell() -> None:
    crowd = np.tile(np.array([[0.5, -0.5, 0.0, 0.1]], np.float32), (100, 1))  # on a corner of 4 cells
    edges = np.array([[32.0, 0.0, 1.0, 1.0], [0.0, -32.0, 1.0, 1.0], [-32.0, 31.9, 4.5, 1.0],
                      [-32.0, 31.9, -0.5, 0.5], [-32.0, 31.9, -0.51, 1.0]], np.float32)
    for canvas in _every_implementation(np.concatenate([crowd, edges]), GRID):
        assert canvas[0, 65, 63] == 1.0 and np.count_nonzero(canvas[0]) == 3
        assert canvas[0, 64, 0] > 0  # y = -32 is the first column; x = 32 is off the canvas
        assert canvas[4, 0, 127] == pytest.approx(0.5)  # z = 4.5 and z = -0.51 dropped, z = -0.5 kept
        assert canvas[1, 0, 127] == 0.0


def test_empty_cloud_is_an_all_zero_canvas() -> None:
    for canvas in _every_implementation(np.zeros((0, 4), np.float32), SMALL):
        assert canvas.shape == (6, 20, 16) and not canvas.any()
    far = np.array([[100.0, 0.0, 1.0, 1.0]], np.float32)
    assert not bev_pillars(far, SMALL).any()


# ------------------------------------------------------------------------------------------ inputs


def test_non_finite_points_are_refused_with_their_count() -> None:
    points = random_cloud(np.random.default_rng(4), 50, SMALL)
    points[3, 0] = np.nan
    points[7, 2] = np.inf
    points[7, 3] = -np.inf
    points[9, 3] = np.nan
    for fn in (bev_pillars, bev_pillars_reference):
        with pytest.raises(GeometryInputError, match="3 of 50 points are non-finite"):
            fn(points, SMALL)
    with pytest.raises(GeometryInputError, match="3 of 50 points are non-finite"):
        bev_pillars_torch(torch.from_numpy(points), SMALL)
    with pytest.raises(GeometryInputError, match="non-finite"):
        augment_sweep(points, np.zeros((0, 7)), yaw=0.0, flip_y=False, scale=1.0)


@pytest.mark.parametrize("bad", [np.zeros((5, 3), np.float32), np.zeros(4, np.float32), np.zeros((2, 4, 1))])
def test_wrong_shapes_and_grid_type_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(GeometryInputError, match=r"\(N, 4\)"):
        bev_pillars(bad, SMALL)
    with pytest.raises(GeometryInputError, match=r"\(N, 4\)"):
        bev_pillars_torch(torch.from_numpy(bad), SMALL)
    with pytest.raises(GeometryInputError, match="BevGrid"):
        bev_pillars(np.zeros((1, 4), np.float32), (64, 64))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ augmentation


def scene(rng: np.random.Generator, n_boxes: int = 12, n_points: int = 4_000) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (some overlapping) and points, half of them drawn inside boxes, none within 1e-4 m of a face."""
    boxes = np.column_stack([rng.uniform(-20, 20, (n_boxes, 2)), rng.uniform(0.5, 1.5, n_boxes),
                             rng.uniform(2, 6, n_boxes), rng.uniform(1, 3, n_boxes), rng.uniform(1, 3, n_boxes),
                             rng.uniform(-4, 4, n_boxes)])
    boxes[1, :2] = boxes[0, :2] + 1.0
    owner = boxes[rng.integers(0, n_boxes, n_points // 2)]
    local = rng.uniform(-0.6, 0.6, (len(owner), 3)) * owner[:, 3:6]
    c, s = np.cos(owner[:, 6]), np.sin(owner[:, 6])
    inside = owner[:, :3] + np.column_stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
                                             local[:, 2]])
    rest = np.column_stack([rng.uniform(-25, 25, (n_points - len(owner), 2)), rng.uniform(-1, 3, n_points - len(owner))])
    xyz = np.concatenate([inside, rest]).astype(np.float32).astype(np.float64)
    d = xyz[:, None] - boxes[None, :, :3]
    cb, sb = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    margin = np.minimum.reduce([np.abs(np.abs(cb * d[..., 0] + sb * d[..., 1]) - boxes[:, 3] / 2),
                                np.abs(np.abs(cb * d[..., 1] - sb * d[..., 0]) - boxes[:, 4] / 2),
                                np.abs(np.abs(d[..., 2]) - boxes[:, 5] / 2)]).min(axis=1)
    xyz = xyz[margin > 1e-4]
    points = np.column_stack([xyz, rng.uniform(0, 1, len(xyz))]).astype(np.float32)
    return points, boxes


def same_yaw(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    return bool(np.all(np.abs(np.angle(np.exp(1j * (a - b)))) <= atol))


@pytest.mark.parametrize("seed", range(4))
def test_augmentation_preserves_point_in_box_membership(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points, boxes = scene(rng)
    before = points_in_boxes(points[:, :3], boxes)
    assert (before >= 0).sum() > 1_000
    settings = [random_augmentation(rng, max_yaw=math.pi, scale_range=(0.5, 2.0)) for _ in range(3)]
    settings += [{"yaw": 0.3, "flip_y": True, "scale": 1.0}, {"yaw": -2.0, "flip_y": False, "scale": 0.9}]
    for kwargs in settings:
        new_points, new_boxes = augment_sweep(points, boxes, **kwargs)
        assert new_points.dtype == np.float32 and new_boxes.dtype == np.float64
        np.testing.assert_array_equal(points_in_boxes(new_points[:, :3], new_boxes), before)
        np.testing.assert_array_equal(new_points[:, 3], points[:, 3])
        assert np.all((new_boxes[:, 6] >= -np.pi) & (new_boxes[:, 6] < np.pi))
        np.testing.assert_allclose(new_boxes[:, 3:6], boxes[:, 3:6] * kwargs["scale"], rtol=1e-15)


def test_augmentation_inverses() -> None:
    points, boxes = scene(np.random.default_rng(7), n_points=500)
    turned, turned_boxes = augment_sweep(points, boxes, yaw=0.7, flip_y=False, scale=1.0)
    back, back_boxes = augment_sweep(turned, turned_boxes, yaw=-0.7, flip_y=False, scale=1.0)
    np.testing.assert_allclose(back, points, atol=1e-5)
    np.testing.assert_allclose(back_boxes[:, :6], boxes[:, :6], atol=1e-12)
    assert same_yaw(back_boxes[:, 6], boxes[:, 6], 1e-12)
    flipped, flipped_boxes = augment_sweep(points, boxes, yaw=0.0, flip_y=True, scale=1.0)
    assert not np.array_equal(flipped, points)
    np.testing.assert_array_equal(flipped[:, 1], -points[:, 1])
    twice, twice_boxes = augment_sweep(flipped, flipped_boxes, yaw=0.0, flip_y=True, scale=1.0)
    np.testing.assert_array_equal(twice, points)
    np.testing.assert_array_equal(twice_boxes[:, :6], boxes[:, :6])
    np.testing.assert_array_equal(twice_boxes[:, 6], wrap_angle(boxes[:, 6]))
    scaled, scaled_boxes = augment_sweep(points, boxes, yaw=0.0, flip_y=False, scale=1.25)
    np.testing.assert_allclose(scaled[:, :3], 1.25 * points[:, :3].astype(np.float64), rtol=1e-7)
    unscaled, _ = augment_sweep(scaled, scaled_boxes, yaw=0.0, flip_y=False, scale=0.8)
    np.testing.assert_allclose(unscaled, points, atol=1e-5)


def test_augmentation_hand_case_and_validation() -> None:
    points = np.array([[2.0, 1.0, 0.5, 0.3]], np.float32)
    boxes = np.array([[2.0, 1.0, 0.5, 4.0, 2.0, 1.0, 3.0]])
    p, b = augment_sweep(points, boxes, yaw=math.pi / 2, flip_y=True, scale=2.0)
    # rotate +90 deg: (2, 1) -> (-1, 2); mirror: (-1, -2); scale 2: (-2, -4); yaw 3 + pi/2 -> -(3 + pi/2) wrapped
    np.testing.assert_allclose(p, [[-2.0, -4.0, 1.0, 0.3]], atol=1e-6)
    np.testing.assert_allclose(b[0, :6], [-2.0, -4.0, 1.0, 8.0, 4.0, 2.0], atol=1e-12)
    assert b[0, 6] == pytest.approx(-(3 + math.pi / 2) + 2 * math.pi)
    empty_p, empty_b = augment_sweep(np.zeros((0, 4), np.float32), np.zeros((0, 7)), yaw=1.0, flip_y=True, scale=1.1)
    assert empty_p.shape == (0, 4) and empty_b.shape == (0, 7)
    for kwargs in ({"yaw": float("nan"), "flip_y": False, "scale": 1.0}, {"yaw": 0.0, "flip_y": False, "scale": 0.0},
                   {"yaw": 0.0, "flip_y": False, "scale": -1.0}):
        with pytest.raises(GeometryInputError):
            augment_sweep(points, boxes, **kwargs)
    with pytest.raises(GeometryInputError):
        augment_sweep(points, boxes[:, :6], yaw=0.0, flip_y=False, scale=1.0)


def test_wrap_angle_range() -> None:
    angles = np.array([-np.pi, np.pi, 3 * np.pi, -3 * np.pi, 0.0, 7.0, -7.0, np.nextafter(np.pi, 0)])
    wrapped = wrap_angle(angles)
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    assert same_yaw(wrapped, angles, 1e-12)


def test_random_augmentation_draws_within_bounds() -> None:
    rng = np.random.default_rng(0)
    draws = [random_augmentation(rng) for _ in range(400)]
    yaws = np.array([d["yaw"] for d in draws])
    scales = np.array([d["scale"] for d in draws])
    flips = np.array([d["flip_y"] for d in draws])
    assert set(draws[0]) == {"yaw", "flip_y", "scale"}
    assert np.all(np.abs(yaws) <= math.pi / 4) and yaws.min() < -0.6 and yaws.max() > 0.6
    assert np.all((scales >= 0.95) & (scales <= 1.05))
    assert 0.4 < flips.mean() < 0.6
    assert all(isinstance(d["flip_y"], bool) for d in draws)
    never = random_augmentation(rng, max_yaw=0.0, flip_probability=0.0, scale_range=(1.0, 1.0))
    assert never == {"yaw": 0.0, "flip_y": False, "scale": 1.0}
    for kwargs in ({"max_yaw": -1.0}, {"flip_probability": 1.5}, {"scale_range": (1.1, 1.0)},
                   {"scale_range": (0.0, 1.0)}):
        with pytest.raises(GeometryInputError):
            random_augmentation(rng, **kwargs)


def test_package_exports() -> None:
    assert geometry.BevGrid is BevGrid
    assert geometry.bev_pillars is bev_pillars
    assert geometry.augment_sweep is augment_sweep
