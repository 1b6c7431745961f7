"""The HDF5 shard schema: one shard = one sequence of ``F`` frames, one dataset per layer.

This module is the single definition of the on-disk format shared by the embedded renderer, the
CARLA backend, the writer, the validating reader and ``taskology inspect``.

Layout of a shard file (``<sequence_id>.h5``)::

    /camera/rgb            uint8   (F, H, W, 3)   sRGB
    /camera/depth          float32 (F, H, W)      planar z-depth, metres; 0 = invalid/sky
    /camera/normals        float32 (F, H, W, 3)   unit, camera frame, towards the camera; 0 = invalid
    /camera/semantic       uint8   (F, H, W)      CARLA tag ids (see SEMANTIC_CLASSES)
    /camera/instance       int32   (F, H, W)      object track id, -1 = no object
    /camera/K              float64 (3, 3)         pinhole intrinsics, pixels
    /camera/cam_from_ego   float64 (4, 4)         rigid transform ego -> camera (OpenCV camera frame)
    /ego/world_from_ego    float64 (F, 4, 4)      ego pose per frame (world: right-handed, z up)
    /lidar/points          float32 (P, 4)         x, y, z (metres, lidar frame), intensity in [0, 1]
    /lidar/semantic        uint8   (P,)           CARLA tag id per point
    /lidar/instance        int32   (P,)           track id per point, -1 = no object
    /lidar/offsets         int64   (F + 1,)       frame f's points are points[offsets[f]:offsets[f+1]]
    /lidar/lidar_from_ego  float64 (4, 4)         rigid transform ego -> lidar
    /objects/track_id      int32   (O,)           stable id of the object across the sequence
    /objects/class_id      uint8   (O,)           CARLA tag id of the object's class
    /objects/box           float64 (O, 7)         (x, y, z, l, w, h, yaw) in the ego frame, z at centre
    /objects/velocity      float32 (O, 3)         world-frame velocity, metres / second
    /objects/offsets       int64   (F + 1,)       frame f's objects are rows offsets[f]:offsets[f+1]

Root attributes: ``schema_version`` (int), ``sequence_id`` (str), ``frame_rate`` (Hz, float),
``num_frames`` (int), ``generator`` (JSON string: ``{"backend", "seed", "config"}``).

Groups are optional per shard (a camera-only shard is valid) but a present group must be complete:
all of its layers, with consistent shapes. Every dataset is written with HDF5's ``fletcher32``
checksum filter, so flipped bytes are detected on read.

Example:
    >>> LAYERS["camera/depth"].dtype
    dtype('float32')
    >>> sorted(GROUPS)
    ['camera', 'ego', 'lidar', 'objects']
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1

#: dimension symbols used in shapes: F frames, H/W image size, P lidar points, O object rows.
#: ``F+1`` is the length of an offsets array.


@dataclass(frozen=True)
class Layer:
    """One dataset of the schema.

    Attributes:
        name: path inside the file, ``group/dataset``.
        dtype: numpy dtype on disk.
        shape: tuple of ints or dimension symbols (``"F"``, ``"H"``, ``"W"``, ``"P"``, ``"O"``, ``"F+1"``).
        finite: whether every value must be finite (checked by the reader for floats).
        per_frame: whether axis 0 is the frame axis (dense per-frame layers, chunked one frame each).
        units: short human description of the values.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]
    finite: bool
    per_frame: bool
    units: str

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0]


def _layer(name: str, dtype: str, shape: tuple[int | str, ...], units: str, *, finite: bool = True,
           per_frame: bool = False) -> Layer:
    return Layer(name, np.dtype(dtype), shape, finite, per_frame, units)


LAYERS: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        _layer("camera/rgb", "uint8", ("F", "H", "W", 3), "sRGB 0..255", per_frame=True),
        _layer("camera/depth", "float32", ("F", "H", "W"), "planar z-depth, metres, 0 = invalid", per_frame=True),
        _layer("camera/normals", "float32", ("F", "H", "W", 3), "unit normal, camera frame, towards camera", per_frame=True),
        _layer("camera/semantic", "uint8", ("F", "H", "W"), "CARLA semantic tag id", per_frame=True),
        _layer("camera/instance", "int32", ("F", "H", "W"), "track id, -1 = none", per_frame=True),
        _layer("camera/K", "float64", (3, 3), "pinhole intrinsics, pixels"),
        _layer("camera/cam_from_ego", "float64", (4, 4), "rigid transform ego -> camera"),
        _layer("ego/world_from_ego", "float64", ("F", 4, 4), "ego pose, world frame, metres", per_frame=True),
        _layer("lidar/points", "float32", ("P", 4), "x, y, z metres (lidar frame), intensity 0..1"),
        _layer("lidar/semantic", "uint8", ("P",), "CARLA semantic tag id"),
        _layer("lidar/instance", "int32", ("P",), "track id, -1 = none"),
        _layer("lidar/offsets", "int64", ("F+1",), "row offsets into lidar/points per frame"),
        _layer("lidar/lidar_from_ego", "float64", (4, 4), "rigid transform ego -> lidar"),
        _layer("objects/track_id", "int32", ("O",), "track id, stable over the sequence"),
        _layer("objects/class_id", "uint8", ("O",), "CARLA semantic tag id of the class"),
        _layer("objects/box", "float64", ("O", 7), "x, y, z, l, w, h, yaw; ego frame, metres, radians"),
        _layer("objects/velocity", "float32", ("O", 3), "world-frame velocity, m/s"),
        _layer("objects/offsets", "int64", ("F+1",), "row offsets into objects/* per frame"),
    )
}

#: group name -> the layer names it must contain when present.
GROUPS: dict[str, tuple[str, ...]] = {}
for _name in LAYERS:
    GROUPS.setdefault(LAYERS[_name].group, ())
    GROUPS[LAYERS[_name].group] += (_name,)

#: root attributes every shard carries.
REQUIRED_ATTRS: tuple[str, ...] = ("schema_version", "sequence_id", "frame_rate", "num_frames", "generator")

#: CARLA >= 0.9.14 semantic tag ids of the classes we render (docs/conventions.md). Ids map 1:1 to CARLA.
SEMANTIC_CLASSES: dict[int, str] = {
    0: "unlabeled",
    1: "road",
    2: "sidewalk",
    3: "building",
    4: "wall",
    5: "fence",
    6: "pole",
    7: "traffic light",
    8: "traffic sign",
    9: "vegetation",
    10: "terrain",
    11: "sky",
    12: "pedestrian",
    13: "rider",
    14: "car",
    15: "truck",
    16: "bus",
    18: "motorcycle",
    19: "bicycle",
    24: "road line",
}
#: classes whose objects may move on their own.
MOVABLE_CLASS_IDS: frozenset[int] = frozenset({12, 13, 14, 15, 16, 18, 19})
#: classes that are ground surfaces (normal = ground up-vector).
GROUND_CLASS_IDS: frozenset[int] = frozenset({1, 2, 24})
#: classes that are vertical structures (normal horizontal, perpendicular to the ground up-vector).
VERTICAL_CLASS_IDS: frozenset[int] = frozenset({3, 4, 5, 6})
#: planar vertical structures (building, wall, fence): on a street grid they face along or across the street.
FACADE_CLASS_IDS: frozenset[int] = frozenset({3, 4, 5})
SKY_CLASS_ID = 11
#: vegetation is *vertical* vegetation (trees, hedges; Cityscapes and CARLA), terrain the horizontal kind
#: (grass, soil): a level surface at ground height is never vegetation.
VEGETATION_CLASS_ID = 9
TERRAIN_CLASS_ID = 10
