"""Train and evaluate one arm of an experiment: the public entry point the consistency benchmark and the
studies in ``experiments/`` build on.

An *arm* is one training run of a preset with every task at one label fraction, in one mode (``alone`` or
``collective``), from one seed, evaluated on one split (``test`` for figures, ``val`` for choices). Its world
is the preset's ``sim`` section simulated once into ``data.root/<tag>`` (:func:`ensure_world`), checked
against the simulator code that reads it (:mod:`taskology.sim.cache`).

Example (the 10 % collective arm of the shipped CPU preset, seed 0, on validation; an hour on 2 cores)::

    from taskology.experiment import arm_config, ensure_world, run_arm
    root = ensure_world(arm_config("consistency", 0.1, "collective"))
    metrics, seconds = run_arm("consistency", 0.1, "collective", seed=0, run_dir="runs/arm", data_root=root,
                               split="val")
    metrics["depth"]["abs_rel"]
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

MODES = ("alone", "collective")


def arm_config(preset: str | Path, fraction: float, mode: str, *, data_root: Path | None = None,
               overrides: Sequence[str] = ()) -> Any:
    """The config of an arm: ``preset`` (a file, or the name of a shipped preset) with ``overrides``, then
    ``data.root`` (when given), ``train.mode`` and every enabled task's ``label_fraction`` set.

    Example:
        >>> cfg = arm_config("consistency", 0.1, "alone", overrides=["train.steps=5"])
        >>> cfg.train.mode, cfg.train.steps, {t.label_fraction for t in cfg.tasks.values()}
        ('alone', 5, {0.1})
    """
    from taskology.config import load_config
    from taskology.errors import ConfigError

    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(f"label fraction {fraction}: expected 0 < fraction <= 1")
    base = load_config(preset, list(overrides))
    arm = [f"data.root={data_root}"] if data_root is not None else []
    arm += [f"train.mode={mode}"] + [f"tasks.{t}.label_fraction={fraction}" for t in base.enabled_tasks()]
    return load_config(preset, list(overrides) + arm)


def world_root(config: Any) -> Path:
    """The folder :func:`ensure_world` keeps ``config``'s simulated world in: ``data.root/<tag>``, the tag
    naming the seed, sequences x frames, camera size, the LiDAR beams (when any) and any world parameter away
    from the default.

    Example:
        >>> from taskology.config import load_config
        >>> world_root(load_config(None, ["data.root=data", "sim.sequences=3", "sim.frames=5", "sim.seed=2",
        ...                               "sim.camera=32x96", "sim.lidar_beams=0", "sim.ego_speed_mps=[2, 12]"])).as_posix()
        'data/seed2-3x5-32x96-ego_speed_mps2-12'
        >>> world_root(load_config(None, ["data.root=data", "sim.sequences=3", "sim.frames=5", "sim.seed=2",
        ...                               "sim.camera=32x96", "sim.lidar_beams=32"])).as_posix()
        'data/seed2-3x5-32x96-lidar32'
    """
    sim = config.sim
    height, width = sim.camera_hw
    tag = "".join(f"-{k}" + "-".join(f"{x:g}" for x in (v if isinstance(v, tuple) else (v,)))
                  for k, v in sorted(sim.world_changes().items(), reverse=True))
    beams = f"-lidar{sim.lidar_beams}" if sim.lidar_beams else ""
    return Path(config.data.root) / f"seed{sim.seed}-{sim.sequences}x{sim.frames}-{height}x{width}{beams}{tag}"


def ensure_world(config: Any, say: Any = None) -> Path:
    """Simulate ``config``'s sequences (embedded simulator, ``sim.lidar_beams`` LiDAR beams) into
    :func:`world_root` unless they are there; returns that folder.

    The folder carries a world record (:mod:`taskology.sim.cache`): a folder simulated by other simulator code
    is checked (one shard simulated again and compared) and, where its world differs, set aside and simulated
    afresh, so an arm never trains on a world cached by older code under the same name. ``say``: where
    progress lines go (default: printed as ``data: ...``)."""
    from taskology.sim.cache import ensure_world as ensure_cached_world
    from taskology.sim.config import WorldConfig
    from taskology.sim.generate import generate_shard, sequence_id_for

    sim = config.sim
    hw = sim.camera_hw
    world = WorldConfig(**sim.world_changes())
    spec = {"backend": "embedded", "seed": int(sim.seed), "sequences": int(sim.sequences),
            "frames": int(sim.frames), "camera_hw": list(hw), "lidar_beams": int(sim.lidar_beams),
            "frame_rate": float(sim.frame_rate), "world": world.to_dict()}

    def make_shard(folder: Path, index: int) -> Path:
        return generate_shard(folder, seed=sim.seed, index=index, frames=sim.frames, camera_hw=hw,
                              lidar_beams=int(sim.lidar_beams), frame_rate=sim.frame_rate, world=world)

    names = [f"{sequence_id_for(sim.seed, i)}.h5" for i in range(int(sim.sequences))]
    report = say if say is not None else (lambda line: print(f"data: {line}", flush=True))
    return ensure_cached_world(world_root(config), spec, names, make_shard, say=report).root


def run_arm(preset: str | Path, fraction: float, mode: str, *, seed: int, run_dir: str | Path, data_root: Path,
            overrides: Sequence[str] = (), split: str = "test", threads: int = 1) -> tuple[dict[str, Any], float]:
    """Train the arm in-process into ``run_dir`` (its ``metrics.json`` included) and evaluate it on ``split``;
    returns (task -> metric -> value, seconds). ``threads``: torch's intra-op and Numba's threads for this run (one
    per run when several run side by side, e.g. with :func:`taskology.bench.parallel.map_in_processes`)."""
    import numba
    import torch

    from taskology.engine.collective import run_collective
    from taskology.runtime import tune_malloc

    tune_malloc()
    torch.set_num_threads(max(int(threads), 1))
    # Numba's parallel kernels (camera geometry in the data path) too: their idle worker threads spin, and took a
    # quarter of a core per run beside a one-thread torch when two runs shared 2 cores
    numba.set_num_threads(min(max(int(threads), 1), numba.config.NUMBA_NUM_THREADS))
    started = time.time()
    config = arm_config(preset, fraction, mode, data_root=Path(data_root), overrides=overrides)
    record = run_collective(config, Path(run_dir), seed=int(seed), tensorboard=False, eval_split=split)
    return record["tasks"], time.time() - started


__all__ = ["MODES", "arm_config", "ensure_world", "run_arm", "world_root"]
