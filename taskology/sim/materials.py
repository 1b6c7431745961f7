"""Surface materials of the procedural town: ids, procedural texture kind and LiDAR reflectivity.

Every triangle of every mesh carries one material id (``uint8``); the shader turns (material,
hit point, normal) into an albedo multiplier and the LiDAR model turns (material, incidence) into an
intensity. Properties are held as arrays indexed by material id so per-ray lookups are one gather.

Example:
    >>> int(ASPHALT), float(REFLECTIVITY[ROAD_PAINT]) > float(REFLECTIVITY[ASPHALT])
    (0, True)
"""
from __future__ import annotations

import numpy as np

ASPHALT = 0      # road surface: grain + large-scale stains
CONCRETE = 1     # sidewalk slabs: tile joints + noise
ROAD_PAINT = 2   # lane markings: almost uniform, bright
BRICK = 3        # building facades: brick rows + window grid
PLASTER = 4      # building facades: smooth noise + window grid
ROOF = 5         # building tops: coarse noise
BARK = 6         # tree trunks: vertical streaks
FOLIAGE = 7      # tree crowns, grass: high-frequency leaf noise
METAL = 8        # poles, lamps: fine noise
CAR_PAINT = 9    # vehicle bodies: smooth with faint noise
GLASS = 10       # vehicle windows: dark, faint noise
RUBBER = 11      # tyres: dark
CLOTH = 12       # pedestrian clothing: weave noise
SKIN = 13        # pedestrian heads
GRASS = 14       # park lawns (terrain)

NUM_MATERIALS = 15

#: LiDAR reflectivity per material in [0, 1] (intensity = reflectivity * |cos incidence|).
REFLECTIVITY: np.ndarray = np.array([
    0.12,  # asphalt
    0.35,  # concrete
    0.90,  # road paint (retro-reflective)
    0.30,  # brick
    0.45,  # plaster
    0.20,  # roof
    0.25,  # bark
    0.40,  # foliage
    0.60,  # metal
    0.55,  # car paint
    0.08,  # glass
    0.05,  # rubber
    0.30,  # cloth
    0.35,  # skin
    0.40,  # grass
], dtype=np.float32)

assert REFLECTIVITY.shape == (NUM_MATERIALS,)
