"""``taskology demo``: simulate a small dataset (camera and LiDAR), train the four camera tasks and the two LiDAR
tasks (3D detection, tracking) alone and collectively at a low label fraction (the ``demo`` preset,
``taskology/configs/demo.yaml``), evaluate both on held-out sequences (the LiDAR tasks' boxes linked into tracks
over every test sequence), and write the report.

Everything goes through the project's own entry points: ``taskology sim``'s :func:`simulate_world` for the
data, :func:`~taskology.engine.command.train_command` (in-process or on a Dask cluster) and
:func:`~taskology.engine.command.eval_command` for each arm, :func:`~taskology.report.command.write_report`
for the report.

Layout of ``--out`` (a comparison directory, see :mod:`taskology.report.runs`)::

    alone/        run directory of train.mode=alone      (config.yaml, checkpoints/, logs/, detections/, ...)
    collective/   run directory of train.mode=collective
    report/       report.md, metrics.json, loss_<task>.png, staleness.png, gallery.png,
                  bev_<sequence>_<frame>.png (held-out frames from above: LiDAR, true and tracked boxes),
                  track_<sequence>_<id>.png (one track over consecutive frames)
    world.json    digest of the simulated world the arms train on

Simulated data is cached under ``<cache>/sim/<key>/`` (``<cache>``: ``$TASKOLOGY_CACHE`` or
``.taskology-cache`` in the working directory; ``<key>``: a hash of the sim settings and the schema
version) with a world record (:mod:`taskology.sim.cache`): it is reused while its shards match the record
and today's simulator makes the same world; otherwise it is set aside and simulated again, and an
``--out`` trained on the old world is refused. Rerunning the demo on the same ``--out`` reuses
finished arms and resumes interrupted ones from their newest checkpoints (``taskology train --resume``).
Ctrl-C stops cleanly: the engines shut their workers down, every file is written atomically.

The detections and tracks the report draws are each arm's ``detections/<sequence>.npz``
(:mod:`taskology.eval3d.records`), written when the arm is evaluated (:func:`~taskology.engine.command.eval_command`,
or the in-process run's final evaluation); an arm that has none is evaluated again before the report.

Example:
    $ taskology demo                       # local Dask cluster, runs/demo
    $ taskology demo --out runs/demo2 --cluster none
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from taskology.config.loading import PRESETS_DIR
from taskology.errors import ConfigError, DataError

#: the demo's experiment preset.
DEMO_CONFIG = PRESETS_DIR / "demo.yaml"
CACHE_ENV = "TASKOLOGY_CACHE"
DEFAULT_CACHE = Path(".taskology-cache")
ARMS: tuple[str, ...] = ("alone", "collective")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def sim_cache_key(sim: Any) -> str:
    """12 hex digits identifying the simulated dataset of a config's ``sim`` section (and the schema)."""
    from taskology.data.schema import SCHEMA_VERSION

    fields = {"schema": SCHEMA_VERSION, "backend": sim.backend, "sequences": int(sim.sequences),
              "frames": int(sim.frames), "seed": int(sim.seed), "camera": str(sim.camera),
              "lidar_beams": int(sim.lidar_beams), "frame_rate": float(sim.frame_rate)}
    changes = sim.world_changes()
    if changes:  # only then: the default world keeps the key caches were made under
        fields["world"] = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def ensure_sim_data(config: Any, cache_root: Path, console: Any) -> Any:
    """The shard directory of ``config.sim`` under ``cache_root/sim/<key>/``, generated if needed, as a
    :class:`taskology.sim.cache.CachedWorld` (folder and world digest). The folder's world record is checked on
    reuse: a folder simulated by other simulator code is kept only where today's code simulates it
    identically, and a shard that no longer reads or whose content changed is simulated again
    (:func:`taskology.sim.cache.ensure_world`)."""
    from taskology.sim.command import checked_request, simulate_world

    sim = config.sim
    if sim.backend != "embedded":
        raise ConfigError(f"sim.backend: the demo renders with the embedded simulator; found {sim.backend!r}")
    folder = (Path(cache_root) / "sim" / sim_cache_key(sim)).resolve()
    lidar_beams = int(sim.lidar_beams)
    hw, world = checked_request(sequences=int(sim.sequences), frames=int(sim.frames), seed=int(sim.seed),
                                camera=str(sim.camera), lidar_beams=lidar_beams, ego_speed=tuple(sim.ego_speed_mps))
    console.print(f"[bold]data[/bold]: {int(sim.sequences)} sequences x {int(sim.frames)} frames at {sim.camera} "
                  f"in {folder}")
    return simulate_world(folder, sequences=int(sim.sequences), frames=int(sim.frames), seed=int(sim.seed),
                          camera_hw=hw, lidar_beams=lidar_beams, world=world)


def check_out_world(out: Path, digest: str) -> None:
    """Record in ``out/world.json`` the world the demo's arms train on; refuse an ``out`` whose arms were
    trained on another world (the cache was simulated again, e.g. by a newer simulator)."""
    from taskology.atomic import write_json_atomic

    path = Path(out) / "world.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text()).get("digest")
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); use another --out") from exc
        if found != digest:
            raise ConfigError(f"{out} holds demo runs trained on simulated world {found}; the data cache now holds "
                              f"world {digest} (simulated again, e.g. by a newer simulator); use another --out")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"digest": digest})


def _differences(saved: Any, wanted: Any) -> list[str]:
    """Dotted keys whose values differ between two configs (the cluster section is ignored)."""
    from taskology.config import flatten_dotted

    a = flatten_dotted({k: v for k, v in saved.model_dump(mode="json").items() if k != "cluster"})
    b = flatten_dotted({k: v for k, v in wanted.model_dump(mode="json").items() if k != "cluster"})
    return [f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def arm_finished(arm_dir: Path, target_steps: int, tasks: Sequence[str]) -> bool:
    """Whether ``arm_dir`` has held-out metrics of every task at ``target_steps``."""
    from taskology.report.runs import find_arms

    if not (arm_dir / "config.yaml").is_file():
        return False
    arm = next(iter(find_arms(arm_dir).values()))
    return all(task in arm.metrics and arm.metrics[task].get("step", -1) >= target_steps for task in tasks)


def run_arm(mode: str, out: Path, wanted: Any, overrides: Sequence[str], cluster: str | None,
            console: Any) -> None:
    """Train (or resume) and evaluate the ``mode`` arm in ``out/<mode>`` unless it is finished."""
    from taskology.config import load_config
    from taskology.engine.command import eval_command, train_command

    arm_dir = out / mode
    target = int(wanted.train.steps)
    tasks = wanted.enabled_tasks()
    if (arm_dir / "config.yaml").is_file():
        differences = _differences(load_config(arm_dir / "config.yaml"), wanted)
        if differences:
            raise ConfigError(f"{arm_dir} holds a demo run with other settings ({'; '.join(differences[:4])}); "
                              "use another --out or the same settings")
        if arm_finished(arm_dir, target, tasks):
            console.print(f"[bold]{mode}[/bold]: finished earlier ({target} steps); reusing {arm_dir}")
            return
        console.rule(f"[bold]{mode}[/bold]: resuming {arm_dir}")
        train_command(resume=arm_dir, cluster=cluster)
    else:
        console.rule(f"[bold]{mode}[/bold]: training {len(tasks)} tasks for {target} steps -> {arm_dir}")
        train_command(DEMO_CONFIG, overrides, cluster=cluster, run_dir=arm_dir)
    if not arm_finished(arm_dir, target, tasks):
        console.print(f"[bold]{mode}[/bold]: evaluating on the held-out test sequences")
        eval_command(arm_dir, split="test")


LIDAR_TASKS: tuple[str, ...] = ("detection", "tracking")


def ensure_detections(mode: str, out: Path, wanted: Any, console: Any) -> None:
    """Evaluate the ``mode`` arm again when it trains both LiDAR tasks but a seed has no ``detections/*.npz`` (e.g.
    evaluated before the tracks were written); the report's pictures are drawn from those files."""
    from taskology.engine.command import eval_command
    from taskology.report.runs import find_arms

    if not set(LIDAR_TASKS) <= set(wanted.enabled_tasks()):
        return
    arm = next(iter(find_arms(out / mode).values()))
    if all(any((seed_dir / "detections").glob("*.npz")) for seed_dir in arm.seed_dirs()):
        return
    console.print(f"[bold]{mode}[/bold]: writing the detections and tracks of the held-out test sequences")
    eval_command(out / mode, split="test")


def _print_table(report_dir: Path, console: Any) -> None:
    from rich.table import Table

    from taskology.report.tables import format_value

    data = json.loads((report_dir / "metrics.json").read_text())
    table = Table(title="held-out test metrics", show_lines=False)
    for column in ("task", "metric", "alone", "collective", "change"):
        table.add_column(column, justify="right" if column in ("alone", "collective", "change") else "left")
    for row in data["rows"]:
        change = row["change_pct"]
        colour = {"better": "green", "worse": "red"}.get(row["verdict"], "white")
        table.add_row(row["task"], row["metric"], format_value(row["alone"]), format_value(row["collective"]),
                      "—" if change is None else f"[{colour}]{change:+.1f}%[/{colour}]")
    console.print(table)


def demo_command(out: Path = Path("runs/demo"), cluster: str | None = "local", *, overrides: Sequence[str] = (),
                 cache_dir: Path | None = None) -> Path:
    """Entry point of ``taskology demo``; returns the report directory.

    Args:
        out: the demo's directory (see the module docstring).
        cluster: ``none`` (in-process), ``local`` (LocalCluster) or ``tcp://HOST:PORT`` / ``tls://...``.
        overrides: dotted overrides of the demo preset (tests and experiments; e.g. ``train.steps=5``).
        cache_dir: root of the simulated-data cache (default ``$TASKOLOGY_CACHE`` or ``.taskology-cache``).
    """
    from taskology.config import load_config
    from taskology.report.command import write_report
    from taskology.engine.task_data import manifest_for

    if not DEMO_CONFIG.is_file():
        raise ConfigError(f"{DEMO_CONFIG}: the demo preset is missing from the installed package "
                          "(taskology/configs/demo.yaml); reinstall taskology")
    out = Path(out)
    console = _console()
    started = time.time()
    base = load_config(DEMO_CONFIG, list(overrides))
    cache_root = Path(cache_dir) if cache_dir is not None else Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    try:
        console.rule("[bold]taskology demo[/bold]: 1/3 simulated data")
        world = ensure_sim_data(base, cache_root, console)
        data_root = world.root
        check_out_world(out, world.digest)
        arm_overrides = {mode: [*overrides, f"data.root={data_root}", f"train.mode={mode}"] for mode in ARMS}
        wanted = {mode: load_config(DEMO_CONFIG, arm_overrides[mode]) for mode in ARMS}
        if cluster is not None:
            from taskology.config import apply_overrides

            wanted = {m: apply_overrides(c, [f"cluster.address={cluster}"]) for m, c in wanted.items()}
        manifest_for(data_root, wanted["collective"])  # write splits.json once, before workers race for it
        console.rule("[bold]taskology demo[/bold]: 2/3 training alone and collectively")
        for mode in ARMS:
            run_arm(mode, out, wanted[mode], arm_overrides[mode], cluster, console)
            ensure_detections(mode, out, wanted[mode], console)
        console.rule("[bold]taskology demo[/bold]: 3/3 report")
        report_dir = write_report(out)
    except KeyboardInterrupt:
        console.print(f"[yellow]demo interrupted[/yellow]; finished parts are kept. Continue with "
                      f"`taskology demo --out {out}`" + (f" --cluster {cluster}" if cluster else ""))
        raise
    _print_table(report_dir, console)
    pictures = sorted(p.name for p in report_dir.glob("*.png") if p.name.startswith(("bev_", "track_")))
    if pictures:
        console.print(f"detections and tracks of the test sequences: {', '.join(pictures)} in {report_dir}")
    console.print(f"demo finished in {time.time() - started:.0f} s; report: [bold]{report_dir / 'report.md'}[/bold]")
    return report_dir
