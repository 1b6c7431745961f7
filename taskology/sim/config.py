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

#: fields added after the first shards were written -> their default (left out of :meth:`WorldConfig.to_dict`
#: at that default)
_LATER_FIELDS: dict[str, Any] = {"ego_speed_change_s": 0.0}


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
        ego_speed_change_s: mean seconds between changes of the ego's cruising speed (each a new draw
            from ``ego_speed_mps``, at exponentially distributed times; the speed then follows within the
            vehicles' acceleration limits); 0: one cruising speed per sequence (the default). With one
            speed per sequence a motion network can tell a pair's motion from the look of its sequence
            instead of from the pair (docs/consistency.md, "The motion network").
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
    ego_speed_change_s: float = 0.0

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
        if not (0.0 <= self.ego_speed_change_s <= 3600.0):  # also refuses NaN
            raise SimError(f"WorldConfig.ego_speed_change_s: expected 0 (off) .. 3600 seconds, "
                           f"found {self.ego_speed_change_s}")
        if not 0.0 <= self.truck_fraction <= 1.0:
            raise SimError(f"WorldConfig.truck_fraction: expected 0..1, found {self.truck_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists) for the shard's ``generator`` attribute. Fields added
        after shards were first written (:data:`_LATER_FIELDS`) appear only when not at their default, so
        the description of a world made without them stays what it was (and a dataset made before can be
        extended)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`SimError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SimError(f"WorldConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
