"""Typed configuration of the procedural town and its agents (one place for every world parameter).

The whole config is recorded in each shard's ``generator`` attribute, so two shards made with the
same seed and config are bit-identical and a resumed run can tell whether existing shards match.

Example:
    >>> cfg = WorldConfig(cars=4)
    >>> cfg.to_dict()["cars"]
    4
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from taskology.errors import SimError

@dataclass(frozen=True)
class WorldConfig:
    """Parameters of one generated world.

    Attributes:
        blocks: number of city blocks along x and along y (the road grid has ``blocks + 1`` roads
            per axis).
        block_size_m: (min, max) side of a block in metres, drawn per row/column.
        lane_width_m: width of one lane; roads have two lanes (one per direction).
        sidewalk_width_m: width of the raised sidewalk on each side of a road.
        kerb_height_m: height of the sidewalk above the road.
        cars: number of non-ego vehicles.
        truck_fraction: probability that a vehicle is a truck or bus.
        pedestrians: number of pedestrians.
        trees_per_100m: trees per 100 m of sidewalk (approximate).
        poles_per_100m: street poles per 100 m of sidewalk (approximate).
        car_speed_mps: (min, max) cruising speed of vehicles, metres / second.
        ego_speed_mps: (min, max) cruising speed of the ego vehicle.
        pedestrian_speed_mps: (min, max) walking speed.
        shadows: cast a shadow ray per camera pixel towards the sun (off by default: it costs about a
            third of a frame at 128x416, over the speed budget; on, moving objects' shadows also move).
    """

    blocks: int = 4
    block_size_m: tuple[float, float] = (28.0, 55.0)
    lane_width_m: float = 3.5
    sidewalk_width_m: float = 3.0
    kerb_height_m: float = 0.15
    cars: int = 36
    truck_fraction: float = 0.2
    pedestrians: int = 40
    trees_per_100m: float = 6.0
    poles_per_100m: float = 4.0
    car_speed_mps: tuple[float, float] = (4.0, 10.0)
    ego_speed_mps: tuple[float, float] = (5.0, 9.0)
    pedestrian_speed_mps: tuple[float, float] = (0.8, 1.6)
    shadows: bool = False

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.blocks > 16:
            raise SimError(f"WorldConfig.blocks: expected 1..16, found {self.blocks}")
        lo, hi = self.block_size_m
        if not 12.0 <= lo <= hi <= 200.0:
            raise SimError(f"WorldConfig.block_size_m: expected 12 <= min <= max <= 200 metres, found {self.block_size_m}")
        for name in ("cars", "pedestrians"):
            value = getattr(self, name)
            if value < 0 or value > 500:
                raise SimError(f"WorldConfig.{name}: expected 0..500, found {value}")
        for name in ("car_speed_mps", "ego_speed_mps", "pedestrian_speed_mps"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 40.0:
                raise SimError(f"WorldConfig.{name}: expected 0 < min <= max <= 40 m/s, found {(lo, hi)}")
        if not 0.0 <= self.truck_fraction <= 1.0:
            raise SimError(f"WorldConfig.truck_fraction: expected 0..1, found {self.truck_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists) for the shard's ``generator`` attribute."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`SimError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SimError(f"WorldConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
