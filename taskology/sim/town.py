"""The static procedural town: a road grid with varied block sizes, raised sidewalks, lane markings,
buildings, lawns, trees and street poles, plus the lane and walkway graphs agents move on.

Layout: roads run along x = ``road_x[i]`` and y = ``road_y[j]`` (centre lines, z = 0, two lanes,
right-hand traffic). Between roads lie blocks raised by the kerb height; their outer ring is
sidewalk, the inside holds buildings or a park. One ring of blocks lies outside the outermost roads
so that the view never ends in emptiness. Agents drive only on the roads of the grid.

Example:
    >>> import numpy as np
    >>> from taskology.sim.config import WorldConfig
    >>> town = Town.generate(np.random.default_rng(0), WorldConfig(blocks=2))
    >>> len(town.road_x), town.static.class_id.dtype
    (3, dtype('uint8'))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taskology.sim import materials as mat
from taskology.sim import meshes
from taskology.sim.config import WorldConfig
from taskology.sim.meshes import MeshAsset


@dataclass
class Town:
    """Static world geometry and navigation graphs.

    Attributes:
        road_x: (B+1,) float64 x of the north-south road centre lines, metres.
        road_y: (B+1,) float64 y of the east-west road centre lines, metres.
        half_road: half width of a road (one lane width), metres.
        sidewalk: sidewalk width, metres.
        kerb: kerb height, metres.
        lane_width: lane width, metres.
        static: all static meshes merged into one asset, world frame.
    """

    road_x: np.ndarray
    road_y: np.ndarray
    half_road: float
    sidewalk: float
    kerb: float
    lane_width: float
    static: MeshAsset

    @classmethod
    def generate(cls, rng: np.random.Generator, config: WorldConfig) -> Town:
        """Lay out the town for ``config`` drawing every random choice from ``rng``."""
        half_road = config.lane_width_m
        lo, hi = config.block_size_m
        sizes_x = rng.uniform(lo, hi, config.blocks)
        sizes_y = rng.uniform(lo, hi, config.blocks)
        road_x = np.concatenate([[0.0], np.cumsum(sizes_x + 2 * half_road)])
        road_y = np.concatenate([[0.0], np.cumsum(sizes_y + 2 * half_road)])
        road_x -= road_x[-1] / 2
        road_y -= road_y[-1] / 2
        town = cls(road_x, road_y, half_road, config.sidewalk_width_m, config.kerb_height_m, config.lane_width_m,
                   static=meshes.combine([meshes.build_ground(-1, -1, 1, 1)]))
        town.static = town._build_static(rng, config)
        return town

    # ----------------------------------------------------------------- layout helpers
    def block_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Block boundaries along x and y including the outer ring: (B+3,) arrays of road edges.

        Block ``i`` spans ``[ex[i] , ex[i+1]]`` with road half widths already removed.
        """
        outer = 30.0
        ex = np.concatenate([[self.road_x[0] - outer], self.road_x, [self.road_x[-1] + outer]])
        ey = np.concatenate([[self.road_y[0] - outer], self.road_y, [self.road_y[-1] + outer]])
        return ex, ey

    def block_rect(self, i: int, j: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of block (i, j) of the full block grid (outer ring included)."""
        ex, ey = self.block_edges()
        h = self.half_road
        x0 = ex[i] + (h if i > 0 else 0.0)
        x1 = ex[i + 1] - (h if i + 1 < len(ex) - 1 else 0.0)
        y0 = ey[j] + (h if j > 0 else 0.0)
        y1 = ey[j + 1] - (h if j + 1 < len(ey) - 1 else 0.0)
        return float(x0), float(y0), float(x1), float(y1)

    def ground_height(self, xy: np.ndarray) -> np.ndarray:
        """Surface height under points ``xy`` (N, 2): kerb height on blocks, 0 on roads. (N,) float64."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        dx = np.min(np.abs(xy[:, :1] - self.road_x[None, :]), axis=1)
        dy = np.min(np.abs(xy[:, 1:] - self.road_y[None, :]), axis=1)
        on_road = (dx < self.half_road) | (dy < self.half_road)
        return np.where(on_road, 0.0, self.kerb)

    # ----------------------------------------------------------------- static meshes
    def _build_static(self, rng: np.random.Generator, config: WorldConfig) -> MeshAsset:
        ex, ey = self.block_edges()
        parts: list[MeshAsset] = [meshes.build_ground(ex[0] - 200, ey[0] - 200, ex[-1] + 200, ey[-1] + 200)]
        nbx, nby = len(ex) - 1, len(ey) - 1
        sw, kerb = self.sidewalk, self.kerb
        for i in range(nbx):
            for j in range(nby):
                x0, y0, x1, y1 = self.block_rect(i, j)
                outer = i in (0, nbx - 1) or j in (0, nby - 1)
                parts.append(meshes.build_slab(x0, y0, x1, y1, -0.2, kerb, meshes.SIDEWALK, mat.CONCRETE,
                                               tuple(np.array([0.6, 0.6, 0.58]) * rng.uniform(0.9, 1.08))))
                ix0, iy0, ix1, iy1 = x0 + sw, y0 + sw, x1 - sw, y1 - sw
                if not outer and rng.random() < 0.15:
                    parts.append(meshes.build_slab(ix0, iy0, ix1, iy1, kerb - 0.1, kerb + 0.03, meshes.TERRAIN, mat.GRASS,
                                                   (0.25, 0.45, 0.15)))
                    for _ in range(int((ix1 - ix0) * (iy1 - iy0) / 60)):
                        parts.append(meshes.build_tree(rng, rng.uniform(ix0 + 2, ix1 - 2), rng.uniform(iy0 + 2, iy1 - 2), kerb))
                else:
                    parts.extend(self._buildings(rng, ix0, iy0, ix1, iy1, tall=outer))
                if not outer:
                    parts.extend(self._street_furniture(rng, config, x0, y0, x1, y1))
        parts.extend(self._lane_markings())
        return meshes.combine(parts)

    def _buildings(self, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float,
                   tall: bool) -> list[MeshAsset]:
        """Fill a block interior with a few buildings: split along its longer side with small gaps."""
        out: list[MeshAsset] = []
        along_x = (x1 - x0) >= (y1 - y0)
        length = (x1 - x0) if along_x else (y1 - y0)
        depth = (y1 - y0) if along_x else (x1 - x0)
        pos = 0.0
        while pos < length - 4.0:
            w = min(rng.uniform(8.0, 22.0), length - pos)
            if length - pos - w < 6.0:
                w = length - pos
            height = rng.uniform(14.0, 40.0) if tall else rng.uniform(5.0, 24.0)
            for side in (0, 1):  # two rows back to back when the block is deep
                if depth < 24.0 and side == 1:
                    break
                d0, d1 = (0.0, depth) if depth < 24.0 else ((0.0, depth / 2) if side == 0 else (depth / 2, depth))
                h = height * rng.uniform(0.8, 1.2)
                if along_x:
                    out.append(meshes.build_building(rng, x0 + pos, y0 + d0, x0 + pos + w - 0.5, y0 + d1, self.kerb, h))
                else:
                    out.append(meshes.build_building(rng, x0 + d0, y0 + pos, x0 + d1, y0 + pos + w - 0.5, self.kerb, h))
            pos += w + rng.uniform(0.5, 4.0)
        return out

    def _street_furniture(self, rng: np.random.Generator, config: WorldConfig, x0: float, y0: float, x1: float,
                          y1: float) -> list[MeshAsset]:
        """Trees and poles along the kerb of one block's four sides."""
        out: list[MeshAsset] = []
        inset = 0.7
        sides = [((x0, y0 + inset), (x1, y0 + inset), (0.0, -1.0)), ((x0, y1 - inset), (x1, y1 - inset), (0.0, 1.0)),
                 ((x0 + inset, y0), (x0 + inset, y1), (-1.0, 0.0)), ((x1 - inset, y0), (x1 - inset, y1), (1.0, 0.0))]
        for a, b, outward in sides:
            length = float(np.hypot(b[0] - a[0], b[1] - a[1]))
            n_trees = rng.poisson(config.trees_per_100m * length / 100)
            n_poles = rng.poisson(config.poles_per_100m * length / 100)
            for t in rng.uniform(0.12, 0.88, n_trees):
                x, y = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
                out.append(meshes.build_tree(rng, x, y, self.kerb))
            for t in rng.uniform(0.1, 0.9, n_poles):
                x, y = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
                out.append(meshes.build_pole(x, y, self.kerb, outward))
        return out

    def _lane_markings(self) -> list[MeshAsset]:
        """Dashed white centre lines on every road segment between intersections (3 m dash, 3 m gap)."""
        out: list[MeshAsset] = []
        h, z0, z1, half_w = self.half_road, -0.05, 0.012, 0.08
        white = (0.85, 0.85, 0.82)
        for centres, others, along_x in ((self.road_y, self.road_x, True), (self.road_x, self.road_y, False)):
            for c in centres:
                for k in range(len(others) - 1):
                    start, end = others[k] + h + 1.0, others[k + 1] - h - 1.0
                    for d in np.arange(start, end - 3.0, 6.0):
                        if along_x:
                            out.append(meshes.build_slab(d, c - half_w, d + 3.0, c + half_w, z0, z1, meshes.ROAD_LINE,
                                                         mat.ROAD_PAINT, white))
                        else:
                            out.append(meshes.build_slab(c - half_w, d, c + half_w, d + 3.0, z0, z1, meshes.ROAD_LINE,
                                                         mat.ROAD_PAINT, white))
        return out

    # ----------------------------------------------------------------- navigation graphs
    def intersection(self, node: tuple[int, int]) -> np.ndarray:
        """World (x, y) of intersection ``node = (i, j)``."""
        return np.array([self.road_x[node[0]], self.road_y[node[1]]])

    def lane_neighbours(self, node: tuple[int, int]) -> list[tuple[int, int]]:
        """Intersections connected to ``node`` by a road segment."""
        i, j = node
        out = []
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= i + di < len(self.road_x) and 0 <= j + dj < len(self.road_y):
                out.append((i + di, j + dj))
        return out

    def lane_segment(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (x, y) of the right-hand lane from intersection ``a`` to ``b`` (outside the junctions)."""
        pa, pb = self.intersection(a), self.intersection(b)
        d = (pb - pa) / np.linalg.norm(pb - pa)
        right = np.array([d[1], -d[0]])
        off = right * self.lane_width / 2
        return pa + d * self.half_road + off, pb - d * self.half_road + off

    def walkway_corner(self, block: tuple[int, int], corner: int) -> np.ndarray:
        """(x, y) of corner ``corner`` (0..3 counter-clockwise from (x0, y0)) of the sidewalk ring of
        inner block ``block = (bi, bj)`` (0..B-1), at the middle of the sidewalk."""
        x0, y0, x1, y1 = self.block_rect(block[0] + 1, block[1] + 1)
        m = self.sidewalk / 2
        return np.array([(x0 + m, y0 + m), (x1 - m, y0 + m), (x1 - m, y1 - m), (x0 + m, y1 - m)][corner])

    def walkway_neighbours(self, block: tuple[int, int], corner: int) -> list[tuple[tuple[int, int], int]]:
        """Walkway nodes reachable from a sidewalk corner: the two ring neighbours and the corners
        across the adjacent roads (zebra crossings)."""
        nb = len(self.road_x) - 1, len(self.road_y) - 1
        bi, bj = block
        out = [(block, (corner + 1) % 4), (block, (corner + 3) % 4)]
        # crossing in x direction: corners 1,2 (x1 side) <-> 0,3 of block bi+1
        across_x = {1: (1, 0), 2: (1, 3), 0: (-1, 1), 3: (-1, 2)}
        across_y = {3: (1, 0), 2: (1, 1), 0: (-1, 3), 1: (-1, 2)}
        step, other = across_x[corner]
        if 0 <= bi + step < nb[0]:
            out.append(((bi + step, bj), other))
        step, other = across_y[corner]
        if 0 <= bj + step < nb[1]:
            out.append(((bi, bj + step), other))
        return out
