"""Mesh builders of the procedural town: vehicles, pedestrians, trees, poles, buildings, slabs.

Every builder returns a :class:`MeshAsset`: a trimesh mesh (object frame, metres; vehicles and
pedestrians face +x with the origin on the ground under the footprint centre) plus per-face
attributes (semantic class, material, base colour). Parts overlap slightly so that Embree does not
let rays slip through shared edges.

Example:
    >>> import numpy as np
    >>> asset = build_car(np.random.default_rng(0), kind="sedan")
    >>> asset.class_id.shape == (len(asset.mesh.faces),)
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from taskology.sim import materials as mat

CAR, TRUCK, BUS, PEDESTRIAN = 14, 15, 16, 12
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, ROAD_LINE = 1, 2, 3, 6, 9, 10, 24

#: vehicle kinds -> (class id, length, width, height) in metres.
VEHICLE_KINDS: dict[str, tuple[int, float, float, float]] = {
    "hatchback": (CAR, 3.9, 1.75, 1.5),
    "sedan": (CAR, 4.6, 1.8, 1.45),
    "suv": (CAR, 4.8, 1.95, 1.8),
    "van": (CAR, 5.1, 2.0, 2.1),
    "truck": (TRUCK, 7.6, 2.45, 3.3),
    "bus": (BUS, 11.0, 2.55, 3.1),
}


@dataclass
class MeshAsset:
    """A mesh with per-face attributes.

    Attributes:
        mesh: trimesh mesh, object frame, metres.
        class_id: (T,) uint8 CARLA semantic tag per face.
        material: (T,) uint8 material id per face (:mod:`taskology.sim.materials`).
        colour: (T, 3) float32 base colour per face, linear RGB in [0, 1].
    """

    mesh: trimesh.Trimesh
    class_id: np.ndarray
    material: np.ndarray
    colour: np.ndarray
    _box: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def triangles(self) -> np.ndarray:
        """(T, 3, 3) float64 triangle corners, object frame."""
        return self.mesh.vertices[self.mesh.faces]

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of the mesh: (centre (3,), size (3,) = l, w, h), object frame.

        Computed once (assets are not edited after construction; trimesh's own cache re-hashes the
        vertices on every access).
        """
        if self._box is None:
            lo, hi = self.mesh.bounds
            self._box = ((lo + hi) / 2.0, hi - lo)
        return self._box[0].copy(), self._box[1].copy()


def part(mesh: trimesh.Trimesh, class_id: int, material: int, colour: np.ndarray | tuple[float, ...]) -> MeshAsset:
    """Wrap one mesh with uniform attributes."""
    n = len(mesh.faces)
    return MeshAsset(mesh, np.full(n, class_id, np.uint8), np.full(n, material, np.uint8),
                     np.tile(np.asarray(colour, np.float32).reshape(1, 3), (n, 1)))


def combine(parts: list[MeshAsset]) -> MeshAsset:
    """Concatenate parts into one asset (faces keep their attributes)."""
    mesh = trimesh.util.concatenate([p.mesh for p in parts])
    return MeshAsset(mesh, np.concatenate([p.class_id for p in parts]), np.concatenate([p.material for p in parts]),
                     np.concatenate([p.colour for p in parts]))


def box_mesh(size: tuple[float, float, float], centre: tuple[float, float, float]) -> trimesh.Trimesh:
    """Axis-aligned box of ``size`` (x, y, z extents) centred at ``centre``."""
    return trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))


def _frustum(size: tuple[float, float, float], centre: tuple[float, float, float], top_scale: tuple[float, float],
             top_shift_x: float = 0.0) -> trimesh.Trimesh:
    """Box whose top face is scaled by ``top_scale`` (x, y) and shifted along x: a car cabin."""
    mesh = box_mesh(size, centre)
    v = mesh.vertices.copy()
    top = v[:, 2] > centre[2]
    v[top, 0] = centre[0] + (v[top, 0] - centre[0]) * top_scale[0] + top_shift_x
    v[top, 1] = centre[1] + (v[top, 1] - centre[1]) * top_scale[1]
    return trimesh.Trimesh(v, mesh.faces, process=False)


def _wheel(x: float, y: float, radius: float, width: float) -> MeshAsset:
    cyl = trimesh.creation.cylinder(radius=radius, height=width, sections=12)  # a vertex at the bottom
    cyl.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    cyl.apply_translation([x, y, radius])
    return part(cyl, 0, mat.RUBBER, (0.05, 0.05, 0.05))


_PAINTS = np.array([[0.75, 0.08, 0.06], [0.08, 0.2, 0.6], [0.85, 0.85, 0.85], [0.08, 0.08, 0.09],
                    [0.5, 0.52, 0.55], [0.1, 0.45, 0.2], [0.85, 0.65, 0.1], [0.55, 0.3, 0.15],
                    [0.3, 0.05, 0.25], [0.9, 0.9, 0.8]], np.float32)


def build_vehicle(rng: np.random.Generator, kind: str) -> MeshAsset:
    """A vehicle of ``kind`` (see :data:`VEHICLE_KINDS`), size jittered by a few percent, facing +x."""
    class_id, length, width, height = VEHICLE_KINDS[kind]
    s = rng.uniform(0.94, 1.06)
    length, width, height = length * s, width * rng.uniform(0.97, 1.03), height * rng.uniform(0.95, 1.05)
    paint = _PAINTS[rng.integers(len(_PAINTS))] * rng.uniform(0.85, 1.1)
    paint = np.clip(paint, 0.0, 1.0)
    radius = 0.33 if class_id == CAR else 0.5
    parts: list[MeshAsset] = []
    axle = length / 2 - (0.8 if class_id == CAR else 1.4)
    for x in (axle, -axle) if class_id != TRUCK else (axle, -axle, -axle + 1.2):
        for y in (width / 2 - 0.13, -(width / 2 - 0.13)):
            parts.append(_wheel(x, y, radius, 0.26))
    floor = radius * 0.75
    if class_id == CAR:
        body_h = (height - floor) * 0.5
        parts.append(part(box_mesh((length, width, body_h), (0, 0, floor + body_h / 2)), class_id, mat.CAR_PAINT, paint))
        cabin_h = height - floor - body_h + 0.02
        cab_len = length * (0.55 if kind in ("hatchback", "sedan") else 0.75)
        cab = _frustum((cab_len, width * 0.96, cabin_h), (-length * 0.06, 0, floor + body_h + cabin_h / 2 - 0.02),
                       (0.75, 0.9), -0.1)
        cabin = part(cab, class_id, mat.GLASS, (0.12, 0.14, 0.17))
        roof = cab.face_normals[:, 2] > 0.9
        cabin.material[roof], cabin.colour[roof] = mat.CAR_PAINT, paint
        parts.append(cabin)
    elif class_id == TRUCK:
        cab_len = 2.0
        parts.append(part(box_mesh((cab_len, width, height * 0.75 - floor), (length / 2 - cab_len / 2, 0, floor + (height * 0.75 - floor) / 2)),
                          class_id, mat.CAR_PAINT, paint))
        parts.append(part(box_mesh((0.3, width * 0.9, 0.8), (length / 2 - 0.14, 0, height * 0.75 - 0.5)),
                          class_id, mat.GLASS, (0.12, 0.14, 0.17)))
        cargo = np.clip(np.array([0.85, 0.85, 0.82]) * rng.uniform(0.8, 1.05), 0, 1)
        parts.append(part(box_mesh((length - cab_len - 0.1 + 0.05, width, height - floor), (-(cab_len + 0.1) / 2 + 0.025, 0, floor + (height - floor) / 2)),
                          class_id, mat.PLASTER, cargo))
    else:  # bus
        parts.append(part(box_mesh((length, width, height - floor), (0, 0, floor + (height - floor) / 2)), class_id, mat.CAR_PAINT, paint))
        parts.append(part(box_mesh((length - 1.0, width + 0.02, 0.9), (0.2, 0, height - 1.4)), class_id, mat.GLASS, (0.12, 0.14, 0.17)))
        parts.append(part(box_mesh((0.04, width - 0.3, 1.1), (length / 2 + 0.01, 0, height - 1.3)), class_id, mat.GLASS, (0.12, 0.14, 0.17)))
    asset = combine(parts)
    asset.class_id[:] = class_id  # tyres and windows belong to the vehicle
    return asset


def build_car(rng: np.random.Generator, kind: str = "sedan") -> MeshAsset:
    """Alias of :func:`build_vehicle` for the car kinds."""
    return build_vehicle(rng, kind)


_SKIN = np.array([[0.95, 0.75, 0.6], [0.75, 0.55, 0.4], [0.45, 0.3, 0.2], [0.9, 0.7, 0.55]], np.float32)


def build_pedestrian(rng: np.random.Generator) -> MeshAsset:
    """A standing pedestrian (legs, torso, arms, head), 1.5-1.95 m tall, facing +x."""
    s = rng.uniform(0.85, 1.05)
    shirt = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    trousers = rng.uniform(0.05, 0.5, 3).astype(np.float32)
    skin = _SKIN[rng.integers(len(_SKIN))]
    leg_h, torso_h = 0.88 * s, 0.62 * s
    parts = [
        part(box_mesh((0.16, 0.15, leg_h), (0, 0.1, leg_h / 2)), PEDESTRIAN, mat.CLOTH, trousers),
        part(box_mesh((0.16, 0.15, leg_h), (0, -0.1, leg_h / 2)), PEDESTRIAN, mat.CLOTH, trousers),
        part(box_mesh((0.26, 0.44, torso_h), (0, 0, leg_h + torso_h / 2 - 0.02)), PEDESTRIAN, mat.CLOTH, shirt),
        part(box_mesh((0.12, 0.1, torso_h * 0.95), (0, 0.27, leg_h + torso_h * 0.5)), PEDESTRIAN, mat.CLOTH, shirt),
        part(box_mesh((0.12, 0.1, torso_h * 0.95), (0, -0.27, leg_h + torso_h * 0.5)), PEDESTRIAN, mat.CLOTH, shirt),
    ]
    head = trimesh.creation.icosphere(subdivisions=1, radius=0.11 * s)
    head.apply_translation([0, 0, leg_h + torso_h + 0.09 * s])
    parts.append(part(head, PEDESTRIAN, mat.SKIN, skin))
    return combine(parts)


def build_tree(rng: np.random.Generator, x: float, y: float, z: float) -> MeshAsset:
    """A tree at world (x, y, z): cylindrical trunk + ellipsoid crown (world frame)."""
    trunk_h = rng.uniform(2.2, 3.6)
    radius = rng.uniform(1.4, 2.6)
    trunk = trimesh.creation.cylinder(radius=rng.uniform(0.12, 0.2), height=trunk_h + 0.4, sections=7)
    trunk.apply_translation([x, y, z + (trunk_h + 0.4) / 2])
    crown = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    crown.apply_scale([radius, radius * rng.uniform(0.85, 1.15), radius * rng.uniform(0.9, 1.4)])
    crown.apply_translation([x, y, z + trunk_h + radius * 0.8])
    green = np.array([0.18, 0.42, 0.12], np.float32) * rng.uniform(0.7, 1.25, 3).astype(np.float32)
    return combine([part(trunk, VEGETATION, mat.BARK, (0.35, 0.25, 0.16)), part(crown, VEGETATION, mat.FOLIAGE, green)])


def build_pole(x: float, y: float, z: float, arm_dir: tuple[float, float]) -> MeshAsset:
    """A street lamp pole at world (x, y, z), its arm reaching over the road along ``arm_dir``."""
    h = 6.5
    shaft = trimesh.creation.cylinder(radius=0.09, height=h, sections=6)
    shaft.apply_translation([x, y, z + h / 2])
    ax, ay = arm_dir
    arm = box_mesh((abs(ax) * 1.6 + 0.12, abs(ay) * 1.6 + 0.12, 0.1), (x + ax * 0.8, y + ay * 0.8, z + h - 0.1))
    lamp = box_mesh((0.5 if ax else 0.25, 0.5 if ay else 0.25, 0.15), (x + ax * 1.55, y + ay * 1.55, z + h - 0.2))
    grey = (0.35, 0.37, 0.38)
    return combine([part(shaft, POLE, mat.METAL, grey), part(arm, POLE, mat.METAL, grey),
                    part(lamp, POLE, mat.METAL, (0.8, 0.8, 0.7))])


_FACADES = np.array([[0.62, 0.3, 0.22], [0.7, 0.62, 0.5], [0.85, 0.8, 0.7], [0.5, 0.5, 0.52],
                     [0.75, 0.55, 0.4], [0.55, 0.35, 0.3], [0.9, 0.88, 0.82], [0.6, 0.65, 0.7]], np.float32)


def build_building(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float, z: float,
                   height: float) -> MeshAsset:
    """A box building on footprint [x0, x1] x [y0, y1] standing at height ``z`` (world frame)."""
    mesh = box_mesh((x1 - x0, y1 - y0, height + 0.1), ((x0 + x1) / 2, (y0 + y1) / 2, z - 0.1 + (height + 0.1) / 2))
    colour = np.clip(_FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.85, 1.1, 3), 0, 1)
    asset = part(mesh, BUILDING, mat.BRICK if rng.random() < 0.5 else mat.PLASTER, colour)
    top = mesh.face_normals[:, 2] > 0.9
    asset.material[top] = mat.ROOF
    asset.colour[top] = (0.3, 0.3, 0.32)
    return asset


def build_slab(x0: float, y0: float, x1: float, y1: float, z0: float, z1: float, class_id: int, material: int,
               colour: tuple[float, float, float]) -> MeshAsset:
    """An axis-aligned slab (sidewalk block, lawn, road marking) from z0 to z1 (world frame)."""
    return part(box_mesh((x1 - x0, y1 - y0, z1 - z0), ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2)),
                class_id, material, colour)


def build_ground(x0: float, y0: float, x1: float, y1: float) -> MeshAsset:
    """The road plane z = 0 over [x0, x1] x [y0, y1] (two triangles facing up)."""
    v = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], np.float64)
    mesh = trimesh.Trimesh(v, np.array([[0, 1, 2], [0, 2, 3]]), process=False)
    return part(mesh, ROAD, mat.ASPHALT, (0.32, 0.32, 0.34))
