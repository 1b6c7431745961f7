"""Generate one simulated sequence into one HDF5 shard with the embedded renderer.

The world for sequence ``index`` of run ``seed`` is seeded by ``(seed, index)``; frames are rendered
and streamed to the atomic :class:`~taskology.data.shard.ShardWriter` one at a time, so memory stays
flat however long the sequence. Same (seed, index, parameters) -> bit-identical shard content.

Example:
    >>> sequence_id_for(3, 7)
    'seed3-seq00007'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from taskology.errors import SimError
from taskology.sim.config import WorldConfig
from taskology.sim.renderer import EmbeddedRenderer
from taskology.sim.world import World

#: layers given once per shard rather than per frame.
STATIC_LAYERS = ("camera/K", "camera/cam_from_ego", "lidar/lidar_from_ego")
MAX_CAMERA_SIDE = 4096


def sequence_id_for(seed: int, index: int) -> str:
    """Stable sequence id of sequence ``index`` of run ``seed``, e.g. ``"seed0-seq00003"``."""
    return f"seed{int(seed)}-seq{int(index):05d}"


def live_mediator_seed(seed: int) -> int:
    """The seed of the live mediator stream (the SimActor of a distributed run) for a dataset simulated
    with ``seed``: a separate stream of sequences, so the live pool never regenerates the dataset's
    train, validation or test sequences (same seed and index = same sequence id and the same frames),
    and its sample ids never collide with the dataset's.

    Example:
        >>> live_mediator_seed(0) != 0 and live_mediator_seed(0) == live_mediator_seed(0) != live_mediator_seed(1)
        True
        >>> sequence_id_for(live_mediator_seed(0), 0) != sequence_id_for(0, 0)
        True
    """
    return int(np.random.SeedSequence([int(seed), 0x6C697665]).generate_state(1, np.uint32)[0])


def world_seed_for(seed: int, index: int) -> int:
    """The world seed of sequence ``index`` of run ``seed`` (independent streams per sequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator_description(*, seed: int, camera_hw: tuple[int, int], lidar_beams: int, lidar_azimuth: int,
                          frame_rate: float, frames: int, world: WorldConfig | None = None) -> dict[str, Any]:
    """The ``generator`` attribute of a shard: backend, seed and every generation parameter.

    Two shards with equal descriptions (and equal ``index``) hold identical content.
    """
    world = world or WorldConfig()
    return {"backend": "embedded", "seed": int(seed),
            "config": {"camera_hw": [int(camera_hw[0]), int(camera_hw[1])], "lidar_beams": int(lidar_beams),
                       "lidar_azimuth": int(lidar_azimuth), "frame_rate": float(frame_rate), "frames": int(frames),
                       "world": world.to_dict()}}


def validate_parameters(*, seed: int, index: int, frames: int, camera_hw: tuple[int, int], lidar_beams: int,
                        lidar_azimuth: int, frame_rate: float) -> None:
    """Raise :class:`SimError` naming the first out-of-range parameter."""
    if seed < 0:
        raise SimError(f"seed must be >= 0, found {seed}")
    if index < 0:
        raise SimError(f"sequence index must be >= 0, found {index}")
    if frames <= 0:
        raise SimError(f"frames must be > 0, found {frames}")
    if len(camera_hw) != 2 or not all(1 <= int(s) <= MAX_CAMERA_SIDE for s in camera_hw):
        raise SimError(f"camera size must be H x W with 1..{MAX_CAMERA_SIDE} pixels per side, found {camera_hw}")
    if not 0 <= lidar_beams <= 128:
        raise SimError(f"lidar beams must be in 0..128 (0 disables the LiDAR), found {lidar_beams}")
    if not 1 <= lidar_azimuth <= 8192:
        raise SimError(f"lidar azimuth steps must be in 1..8192, found {lidar_azimuth}")
    if not 0 < frame_rate <= 1000:
        raise SimError(f"frame rate must be in (0, 1000] Hz, found {frame_rate}")


def render_frames(*, seed: int, index: int, frames: int, camera_hw: tuple[int, int] = (64, 208),
                  lidar_beams: int = 32, lidar_azimuth: int = 1024, frame_rate: float = 10.0,
                  world: WorldConfig | None = None):  # noqa: ANN201 - generator of dicts
    """Yield the layers of each frame of sequence (seed, index) (see :meth:`EmbeddedRenderer.render`)."""
    config = world or WorldConfig()
    sim_world = World.generate(world_seed_for(seed, index), config)
    renderer = EmbeddedRenderer(camera_hw, lidar_beams, lidar_azimuth, shadows=config.shadows,
                                seed=world_seed_for(seed, index))
    dt = 1.0 / frame_rate
    for f in range(frames):
        yield renderer.render(sim_world.state(), f)
        sim_world.step(dt)


def generate_shard(out_dir: Path, *, seed: int, index: int, frames: int, camera_hw: tuple[int, int] = (64, 208),
                   lidar_beams: int = 32, lidar_azimuth: int = 1024, frame_rate: float = 10.0,
                   overwrite: bool = False, progress: Callable[[int], None] | None = None,
                   world: WorldConfig | None = None) -> Path:
    """Render sequence ``index`` of run ``seed`` into ``out_dir/<sequence_id>.h5`` and return its path.

    Args:
        out_dir: existing or new directory of shards.
        seed, index: run seed and sequence index (>= 0); together they seed the world.
        frames: frames in the sequence (> 0).
        camera_hw: (H, W) camera size in pixels.
        lidar_beams: LiDAR beams, 0..128 (0: no lidar group).
        lidar_azimuth: LiDAR azimuth steps per revolution.
        frame_rate: Hz; agents move ``1 / frame_rate`` seconds between frames.
        overwrite: replace an existing shard of the same id.
        progress: called with the number of frames finished after each frame.
        world: world parameters (default :class:`WorldConfig`).
    """
    from taskology.data.shard import ShardWriter  # the data store; imported here to keep sim import light

    validate_parameters(seed=seed, index=index, frames=frames, camera_hw=camera_hw, lidar_beams=lidar_beams,
                        lidar_azimuth=lidar_azimuth, frame_rate=frame_rate)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sequence_id = sequence_id_for(seed, index)
    generator = generator_description(seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                      lidar_azimuth=lidar_azimuth, frame_rate=frame_rate, frames=frames, world=world)
    camera_hw = (int(camera_hw[0]), int(camera_hw[1]))
    with ShardWriter(out_dir / f"{sequence_id}.h5", sequence_id=sequence_id, frame_rate=frame_rate,
                     generator=generator, camera_hw=camera_hw, lidar=lidar_beams > 0, objects=True,
                     overwrite=overwrite) as writer:
        for f, layers in enumerate(render_frames(seed=seed, index=index, frames=frames, camera_hw=camera_hw,
                                                 lidar_beams=lidar_beams, lidar_azimuth=lidar_azimuth,
                                                 frame_rate=frame_rate, world=world)):
            if f == 0:
                writer.set_static(**{k: layers[k] for k in STATIC_LAYERS if k in layers})
            writer.append({k: v for k, v in layers.items() if k not in STATIC_LAYERS})
            if progress is not None:
                progress(f + 1)
        path = writer.close()
    return path
