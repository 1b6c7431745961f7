"""Moving agents: vehicles that follow lanes and turn at intersections, pedestrians that walk the
sidewalks and cross at the corners. Both ride a :class:`PathFollower`, a polyline extended on demand
from the town's lane / walkway graph with the agent's own random generator (deterministic per seed).

Example:
    >>> import numpy as np
    >>> f = PathFollower(np.array([[0.0, 0.0], [10.0, 0.0]]))
    >>> f.advance(2.5); f.position().tolist(), round(f.heading(), 6)
    ([2.5, 0.0], 0.0)
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from taskology.sim.town import Town

#: spacing of the densified polylines, metres (heading is smooth along turns at this spacing).
STEP_M = 0.25


def densify(points: np.ndarray, step: float = STEP_M) -> np.ndarray:
    """Resample a polyline (N, 2) so that consecutive points are at most ``step`` apart."""
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def _cross2(a: np.ndarray, b: np.ndarray) -> float:
    """z component of the cross product of two 2D vectors."""
    return float(a[0] * b[1] - a[1] * b[0])


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    """Quadratic Bezier curve through control points, (n + 1, 2) without duplicates at the ends."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


class PathFollower:
    """Arc-length position on a growing 2D polyline.

    ``advance(ds)`` moves along; ``extend(points)`` appends; consumed prefix is dropped so memory
    stays flat over long sequences.
    """

    def __init__(self, points: np.ndarray) -> None:
        pts = densify(np.asarray(points, np.float64))
        self._set_path(pts, np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]))
        self.s = 0.0

    def _set_path(self, points: np.ndarray, cum: np.ndarray) -> None:
        """Install the polyline (P, 2) and its cumulative arc length (P,); plain-float list copies
        serve the per-step lookups (bisect on a list beats NumPy calls on scalars)."""
        self._points, self._cum = points, cum
        self._cum_list: list[float] = cum.tolist()
        self._x_list: list[float] = points[:, 0].tolist()
        self._y_list: list[float] = points[:, 1].tolist()

    @property
    def points(self) -> np.ndarray:
        """(P, 2) float64 the kept part of the densified polyline (world x, y), metres."""
        return self._points

    @property
    def remaining(self) -> float:
        return self._cum_list[-1] - self.s

    def extend(self, points: np.ndarray) -> None:
        pts = densify(np.concatenate([self._points[-1:], np.asarray(points, np.float64)]))[1:]
        seg = np.linalg.norm(np.diff(np.concatenate([self._points[-1:], pts]), axis=0), axis=1)
        keep = seg > 1e-9
        pts, seg = pts[keep], seg[keep]
        all_points = np.concatenate([self._points, pts])
        cum = np.concatenate([self._cum, self._cum[-1] + np.cumsum(seg)])
        # drop the consumed prefix (keep a few metres behind for the heading estimate)
        cut = int(np.searchsorted(cum, self.s - 5.0)) - 1
        if cut > 64:
            all_points, cum = all_points[cut:], cum[cut:]
        self._set_path(all_points, cum)

    def advance(self, ds: float) -> None:
        self.s = min(self.s + ds, self._cum_list[-1])

    def _xy(self, s: float) -> tuple[float, float]:
        """(x, y) at arc length ``s`` (clamped to the path), plain floats (hot path of every step)."""
        cum = self._cum_list
        s = min(max(s, cum[0]), cum[-1])
        k = min(max(bisect.bisect_right(cum, s) - 1, 0), len(cum) - 2)
        c0, c1 = cum[k], cum[k + 1]
        t = (s - c0) / (c1 - c0) if c1 > c0 else 0.0
        xs, ys = self._x_list, self._y_list
        return xs[k] + t * (xs[k + 1] - xs[k]), ys[k] + t * (ys[k + 1] - ys[k])

    def _at(self, s: float) -> np.ndarray:
        return np.array(self._xy(s))

    def position(self) -> np.ndarray:
        """(2,) float64 world (x, y)."""
        return self._at(self.s)

    def heading(self, ahead_m: float = 0.0) -> float:
        """Yaw of the path tangent ``ahead_m`` metres ahead of the current position, radians (centred
        difference over 0.6 m)."""
        x1, y1 = self._xy(self.s + ahead_m + 0.3)
        x0, y0 = self._xy(self.s + ahead_m - 0.3)
        return math.atan2(y1 - y0, x1 - x0)


@dataclass
class Agent:
    """One moving object (or the ego): kinematic state on a path plus identity.

    Attributes:
        track_id: stable id (the ego has -1 and is never rendered).
        class_id: CARLA tag id.
        asset: index into the world's asset list (-1 for the ego).
        kind: "vehicle" or "pedestrian".
        cruise: preferred speed, m/s.
        speed: current speed, m/s.
        follower: position on the path.
        route: current graph state (lane: (from_node, to_node); walkway: (block, corner)).
        rng: the agent's own random generator (route choices).
    """

    track_id: int
    class_id: int
    asset: int
    kind: str
    cruise: float
    speed: float
    follower: PathFollower
    route: tuple
    rng: np.random.Generator = field(repr=False)


def start_vehicle_route(town: Town, rng: np.random.Generator) -> tuple[PathFollower, tuple, float]:
    """Random lane of the grid; returns the follower placed at a random point of it, the route
    state and the lane length."""
    ni, nj = len(town.road_x), len(town.road_y)
    a = (int(rng.integers(ni)), int(rng.integers(nj)))
    nbrs = town.lane_neighbours(a)
    b = nbrs[int(rng.integers(len(nbrs)))]
    start, end = town.lane_segment(a, b)
    follower = PathFollower(np.stack([start, end]))
    length = float(np.linalg.norm(end - start))
    follower.advance(float(rng.uniform(0.0, max(0.0, length - 2.0))))
    return follower, (a, b), length


def extend_vehicle_route(town: Town, agent: Agent) -> None:
    """Append the turn through the next intersection and the following lane (no U-turns)."""
    a, b = agent.route
    options = [c for c in town.lane_neighbours(b) if c != a]
    straight = [c for c in options if (c[0] - b[0], c[1] - b[1]) == (b[0] - a[0], b[1] - a[1])]
    if straight and agent.rng.random() < 0.5:
        c = straight[0]
    else:
        c = options[int(agent.rng.integers(len(options)))]
    _, end_ab = town.lane_segment(a, b)
    start_bc, end_bc = town.lane_segment(b, c)
    d_ab = (town.intersection(b) - town.intersection(a))
    d_bc = (town.intersection(c) - town.intersection(b))
    d_ab, d_bc = d_ab / np.linalg.norm(d_ab), d_bc / np.linalg.norm(d_bc)
    if abs(float(np.dot(d_ab, d_bc))) > 0.5:  # straight on
        curve = np.stack([start_bc])
    else:  # control point: intersection of the two lane lines
        t = float(_cross2(start_bc - end_ab, d_bc) / _cross2(d_ab, d_bc))
        ctrl = end_ab + t * d_ab
        curve = bezier(end_ab, ctrl, start_bc)[1:]
    agent.follower.extend(np.concatenate([curve, end_bc[None]]))
    agent.route = (b, c)


def start_walk_route(town: Town, rng: np.random.Generator) -> tuple[PathFollower, tuple]:
    """Random sidewalk edge of an inner block; follower placed at a random point of it."""
    nb = len(town.road_x) - 1, len(town.road_y) - 1
    block = (int(rng.integers(nb[0])), int(rng.integers(nb[1])))
    corner = int(rng.integers(4))
    nxt = (corner + 1) % 4
    a, b = town.walkway_corner(block, corner), town.walkway_corner(block, nxt)
    follower = PathFollower(np.stack([a, b]))
    follower.advance(float(rng.uniform(0.0, np.linalg.norm(b - a))))
    return follower, ((block, corner), (block, nxt))


def extend_walk_route(town: Town, agent: Agent, cross_probability: float = 0.35) -> None:
    """Append the next walkway edge: along the block ring, or across a road at a corner."""
    prev, cur = agent.route
    options = [n for n in town.walkway_neighbours(*cur) if n != prev]
    crossings = [n for n in options if n[0] != cur[0]]
    ring = [n for n in options if n[0] == cur[0]]
    if crossings and agent.rng.random() < cross_probability:
        nxt = crossings[int(agent.rng.integers(len(crossings)))]
    else:
        nxt = ring[int(agent.rng.integers(len(ring)))]
    agent.follower.extend(town.walkway_corner(*nxt)[None])
    agent.route = (cur, nxt)
