"""Benchmark ``taskology bench carla-live``: what the live CARLA SimActor costs a training step, against the
embedded simulator's SimActor.

What runs: one small collective training (two camera tasks, depth and normals, tied by ``depth_normals``;
``exchange.live_mediator: true``) on a Dask cluster of single-threaded worker processes on 127.0.0.1 (one
per actor: two task actors and the SimActor), once with ``sim.backend: embedded`` and once with
``sim.backend: carla``. The CARLA server is the fake of ``tests/fakecarla.py`` (a source checkout has it):
a :class:`FakeCarlaPlugin` puts it in place of the ``carla`` package in every worker process, where it
answers the SimActor's client in-process (a real server renders on its own machine or GPU; the fake hands
out fixed images at almost no cost, so what is measured is our client: spawning, ticking, converting and
writing the frames). :data:`Sizes.rounds` rounds, each an embedded and a carla run on one cluster, in
turns (embedded first in odd rounds, carla first in even ones), so a load change on the shared machine
hits both. Before the first run every worker process simulates a one-frame shard with each backend
(imports, Numba's kernels, the scene), so no run pays a start-up the other skipped.

The same work for both, per step: the same pool (``exchange.mediator_pool_shards``, with as many shards
of back-pressure), shards of the same frames and camera size, no LiDAR, and the same refills: the driver
hands the task actors newer shards (at most half the pool) once every task has published on the pool it
holds, and ``exchange.pool_refresh_s`` is below the driver's poll, so a refill follows each publication
round (every ``exchange.publish_every_steps`` steps) in both runs, whatever their speed (a clock would give
the slower run more refills). Each run starts with that pool and its back-pressure written
(:func:`prefill_pool`, before the clock), so neither SimActor is still filling it while the other idles;
the shards are short enough for the embedded SimActor (about 1 frame/s here with two task actors training
beside it, most of it the scene of each sequence) to keep up. The result reports what each run did:
frames the SimActor generated, pools each task actor applied, and the CPU time of the SimActor's worker
process (a figure the load of a shared machine does not change).

The step time: the training thread of a task actor logs every step (``train.log_every: 1``); the time of
step ``s`` is the wall time between the logs of steps ``s - 1`` and ``s``: applying a new mediator pool
when one came (reading its shards), the optimizer step (supervised batch, mediator batch, peer targets,
consistency loss, backward), publishing predictions when due, and the log itself. The figure is the
median over the steps after :data:`Sizes.warmup` of both tasks, its ratio carla / embedded per round, and
the median over the rounds (target <= :data:`TARGET_RATIO`). The mean (refills and publications
included) and the optimizer step alone (``time/step_s``) are reported beside it.

Example:
    >>> median_after_warmup({1: 0.5, 2: 0.1, 3: 0.3, 4: 0.2}, warmup=1)
    0.2
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Mapping, Sequence

from distributed.diagnostics.plugin import WorkerPlugin

from taskology.bench import BenchResult, sim_world, target
from taskology.errors import ConfigError

#: goal: the carla SimActor's median step time over the embedded one's.
TARGET_RATIO = 1.05
TASKS = ("depth", "normals")
BACKENDS = ("embedded", "carla")
FAKE_CARLA = Path(__file__).resolve().parents[2] / "tests" / "fakecarla.py"
FAKE_MODULE_NAME = "taskology_bench_fakecarla"


@dataclass(frozen=True)
class Sizes:
    """One configuration of the bench: training steps per run (the first ``warmup`` not measured), rounds (a
    run of each backend), the camera, frames per shard, the pool (shards) and how often it is refilled."""

    steps: int
    warmup: int
    rounds: int
    camera: str = "64x208"
    frames: int = 4
    pool_shards: int = 2
    pool_refresh_s: float = 0.1
    publish_every_steps: int = 20
    sequences: int = 6
    timeout_s: float = 900.0


FULL = Sizes(steps=60, warmup=20, rounds=5)
QUICK = Sizes(steps=60, warmup=20, rounds=1, camera="32x96", sequences=4)


# ------------------------------------------------------------------------------------ pure parts
def step_seconds(wall_times: Mapping[int, float]) -> dict[int, float]:
    """Seconds of each step from the wall times its log was written (step -> time): step ``s`` took
    ``wall[s] - wall[s - 1]``; a step whose predecessor was not logged has no time.

    Example:
        >>> step_seconds({1: 10.0, 2: 10.5, 3: 11.25, 5: 12.0})
        {2: 0.5, 3: 0.75}
    """
    return {s: float(wall_times[s] - wall_times[s - 1]) for s in sorted(wall_times) if s - 1 in wall_times}


def median_after_warmup(seconds: Mapping[int, float], warmup: int) -> float:
    """Median of ``seconds`` (step -> value) over the steps after ``warmup``; a ValueError when none is left."""
    kept = [v for s, v in seconds.items() if s > warmup]
    if not kept:
        raise ValueError(f"no step after the {warmup} warm-up steps was measured (steps {sorted(seconds)[:5]}...)")
    return float(statistics.median(kept))


def round_ratios(carla: Sequence[float], embedded: Sequence[float]) -> list[float]:
    """carla / embedded of each round (the runs of one round ran one after the other), sorted.

    Example:
        >>> round_ratios([1.1, 0.9], [1.0, 1.0])
        [0.9, 1.1]
    """
    if len(carla) != len(embedded) or not carla:
        raise ValueError(f"expected as many carla as embedded rounds (>= 1), found {len(carla)} and {len(embedded)}")
    if min(embedded) <= 0:
        raise ValueError(f"embedded step times must be > 0 s, found {list(embedded)}")
    return sorted(c / e for c, e in zip(carla, embedded))


def bench_overrides(sizes: Sizes, backend: str, data_root: Path, address: str) -> list[str]:
    """Config overrides of one run: the two camera tasks, the live SimActor of ``backend``, the pool and
    its refills, a log every step, no checkpoints, the cluster at ``address``."""
    over = [f"data.root={data_root}", f"data.camera={sizes.camera}", "data.test_sequences=1",
            "data.mediator_fraction=0.4", f"sim.camera={sizes.camera}", f"sim.frames={sizes.frames}",
            "sim.lidar_beams=0", f"sim.backend={backend}", f"train.steps={sizes.steps}", "train.log_every=1",
            "train.device=cpu", "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0]",
            "train.mode=collective", "train.eval_every=0", "train.mediator_batch_size=2",
            "train.consistency_start_step=0", "train.consistency_ramp_steps=1",
            "exchange.live_mediator=true", f"exchange.mediator_pool_shards={sizes.pool_shards}",
            f"exchange.pool_refresh_s={sizes.pool_refresh_s}",
            f"exchange.publish_every_steps={sizes.publish_every_steps}", "exchange.refresh_every_s=1.0",
            "relations.depth_normals.enabled=true", f"cluster.address={address}", "cluster.dashboard=false"]
    over += [f"tasks.{task}.enabled=false" for task in ("segmentation", "motion")]
    over += [f"relations.{name}.enabled=false"
             for name in ("photometric", "segmentation_motion", "segmentation_geometry")]
    for task in TASKS:
        over += [f"tasks.{task}.width=8", f"tasks.{task}.batch_size=4", f"tasks.{task}.label_fraction=1.0"]
    return over


# ------------------------------------------------------------------------------ the fake server
def load_fake_carla(path: Path = FAKE_CARLA) -> ModuleType:
    """The module ``tests/fakecarla.py`` of a source checkout (a ConfigError naming ``path`` when absent)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench carla-live: the fake CARLA server is expected at {path} (a source checkout of "
                          "taskology has it), found nothing there")
    spec = importlib.util.spec_from_file_location(FAKE_MODULE_NAME, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeCarlaServer:
    """The fake CARLA server of ``path``, in this process while entered: ``import carla`` finds its client
    module; on exit the ``carla`` module that was there before (or none) is back.

    Example:
        >>> import sys
        >>> before = sys.modules.get("carla")
        >>> with FakeCarlaServer() as fake:
        ...     sys.modules["carla"] is fake.module
        True
        >>> sys.modules.get("carla") is before
        True
    """

    _ABSENT = object()

    def __init__(self, path: Path = FAKE_CARLA) -> None:
        self.path = Path(path)
        self.fake: Any = None
        self._before: Any = self._ABSENT

    def __enter__(self) -> Any:
        self.fake = load_fake_carla(self.path).FakeCarla()
        self._before = sys.modules.get("carla", self._ABSENT)
        sys.modules["carla"] = self.fake.module
        return self.fake

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if sys.modules.get("carla") is (self.fake.module if self.fake is not None else None):
            if self._before is self._ABSENT:
                sys.modules.pop("carla", None)
            else:
                sys.modules["carla"] = self._before
        self._before = self._ABSENT


class FakeCarlaPlugin(WorkerPlugin):
    """Runs a :class:`FakeCarlaServer` in every worker process from its start to its end."""

    name = "taskology-bench-fake-carla"

    def __init__(self, path: Path = FAKE_CARLA) -> None:
        self.path = str(path)
        self._server: FakeCarlaServer | None = None

    def setup(self, worker: Any) -> None:
        self._server = FakeCarlaServer(Path(self.path))
        self._server.__enter__()

    def teardown(self, worker: Any) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None


def warm_worker(folder: str, camera_hw: tuple[int, int]) -> str:
    """On a worker: simulate a one-frame shard with each backend into ``folder`` (imports, Numba's kernels,
    the scene), the CARLA one against the fake; returns the worker's address."""
    from distributed import get_worker

    from taskology.sim.carla_backend import generate_carla_sequence
    from taskology.sim.generate import generate_shard

    out = Path(folder) / str(os.getpid())
    generate_shard(out, seed=1, index=0, frames=1, camera_hw=camera_hw, lidar_beams=0)
    generate_carla_sequence(out, host="127.0.0.1:2000", index=0, seed=1, frames=1, camera_hw=camera_hw, lidar_beams=0,
                            vehicles=1, walkers=1, warmup_ticks=1)
    return str(get_worker().address)


def fake_carla_running() -> bool:
    """Whether ``import carla`` finds the fake of :func:`load_fake_carla` here (run on the workers)."""
    import carla

    return getattr(getattr(carla, "Client", None), "__module__", None) == FAKE_MODULE_NAME


# --------------------------------------------------------------------------------------- one run
def read_step_log(tb_dir: Path) -> tuple[dict[int, float], dict[int, float]]:
    """From a task's TensorBoard folder: step -> wall time its log was written, and step -> ``time/step_s``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "time/step_s" not in events.Tags().get("scalars", []):
        raise RuntimeError(f"bench carla-live: {tb_dir} holds no time/step_s scalars")
    logged = events.Scalars("time/step_s")
    return {e.step: e.wall_time for e in logged}, {e.step: e.value for e in logged}


@dataclass
class RunFigures:
    """What one training run measured (seconds unless named)."""

    backend: str
    median_step_s: float
    mean_step_s: float
    median_optimizer_step_s: float
    steps_measured: int
    wall_s: float
    sim_frames: int
    sim_shards: int
    sim_frames_per_s: float
    sim_phase: str
    sim_cpu_s: float
    prefill_cpu_ms_per_frame: float
    pools_applied: dict[str, int]
    restarts: dict[str, int]

    @property
    def sim_cpu_ms_per_frame(self) -> float:
        """CPU milliseconds the SimActor's worker process spent per frame it generated during the run."""
        return 1e3 * self.sim_cpu_s / self.sim_frames if self.sim_frames else float("nan")


def prefill_pool(config: Any, run_dir: Path, timeout_s: float = 300.0) -> int:
    """Write the shards the run's SimActor starts with into ``run_dir/mediator``, here, before training: a
    full pool and as many shards of back-pressure, by a SimActor with the run's arguments (it resumes
    after them). Returns the number of shards."""
    from taskology.sim.actor import SimActor, live_mediator_kwargs

    kwargs = live_mediator_kwargs(config, run_dir / "mediator")
    shards = 2 * int(kwargs["pool_size"])
    actor = SimActor(**{**kwargs, "max_shards": shards, "max_ahead": None})
    actor.start()
    deadline = time.monotonic() + timeout_s
    try:
        while actor.status()["phase"] not in ("finished", "failed", "stopped") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        status = actor.stop()
    if status["phase"] != "finished" or status["shards_done"] != shards:
        raise RuntimeError(f"bench carla-live: filling the {config.sim.backend} pool in {run_dir} ended "
                           f"{status['phase']} after {status['shards_done']} of {shards} shards: {status['errors']}")
    return shards


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used (run on the workers)."""
    return float(time.process_time())


def train_once(client: Any, address: str, sizes: Sizes, backend: str, data_root: Path, run_dir: Path) -> RunFigures:
    """One collective run of the two tasks with the live SimActor of ``backend`` on the cluster at ``address``
    (``client`` reads the workers' CPU time before and after), its pool filled first (:func:`prefill_pool`;
    the CARLA one from a fake server in this process)."""
    from contextlib import nullcontext

    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed

    config = load_config(None, bench_overrides(sizes, backend, data_root, address))
    cpu = time.process_time()
    with FakeCarlaServer() if backend == "carla" else nullcontext():
        prefilled = prefill_pool(config, run_dir)
    prefill_cpu_ms_per_frame = 1e3 * (time.process_time() - cpu) / (prefilled * sizes.frames)
    cpu_before = client.run(process_cpu_s)
    start = time.perf_counter()
    summary = run_distributed(config, run_dir, with_sim=True, live=False, spare_workers=0, timeout_s=sizes.timeout_s)
    wall_s = time.perf_counter() - start
    cpu_after = client.run(process_cpu_s)
    actors = summary["0"]["actors"]
    sim_worker = str(actors["sim"]["worker"])
    every: list[float] = []
    optimizer: list[float] = []
    for task in TASKS:
        walls, step_s = read_step_log(run_dir / "tensorboard" / task)
        seconds = step_seconds(walls)
        every += [v for s, v in seconds.items() if s > sizes.warmup]
        optimizer += [v for s, v in step_s.items() if s > sizes.warmup]
    sim = actors["sim"]["status"]
    in_progress = (sim.get("in_progress") or {}).get("frames_done", 0)
    return RunFigures(
        backend=backend, median_step_s=float(statistics.median(every)), mean_step_s=float(statistics.fmean(every)),
        median_optimizer_step_s=float(statistics.median(optimizer)), steps_measured=len(every), wall_s=wall_s,
        sim_frames=int(sim["shards_done"]) * sizes.frames + int(in_progress), sim_shards=int(sim["shards_done"]),
        sim_frames_per_s=float(sim["frames_per_s"]), sim_phase=str(sim["phase"]),
        sim_cpu_s=float(cpu_after[sim_worker] - cpu_before[sim_worker]),
        prefill_cpu_ms_per_frame=prefill_cpu_ms_per_frame,
        pools_applied={t: int(actors[t]["status"]["mediator_pools_applied"]) for t in TASKS},
        restarts={name: int(a["restarts"]) for name, a in actors.items()})


def run(quick: bool) -> BenchResult:
    from taskology.cluster.session import ClusterSpec, open_cluster

    sizes = QUICK if quick else FULL
    load_fake_carla()  # no checkout, no bench: one line before anything starts
    load_before = os.getloadavg()
    runs: dict[str, list[RunFigures]] = {b: [] for b in BACKENDS}
    with tempfile.TemporaryDirectory(prefix="taskology-bench-carla-live-") as tmp:
        root = Path(tmp)
        h, w = (int(x) for x in sizes.camera.split("x"))
        hw = (h, w)
        data_root = sim_world(root / "world", hw, sizes.sequences, sizes.frames)
        spec = ClusterSpec(address="local", n_workers=len(TASKS) + 1, spare_workers=0, threads_per_worker=1,
                           dashboard=False)
        with open_cluster(spec, n_actors=len(TASKS) + 1) as session:
            session.client.register_plugin(FakeCarlaPlugin())
            if not all(session.client.run(fake_carla_running).values()):
                raise RuntimeError("bench carla-live: the fake CARLA server did not start on every worker")
            workers = session.worker_addresses()
            warmed = session.client.gather([session.client.submit(warm_worker, str(root / "warm"), hw, workers=[w],
                                                                  pure=False) for w in workers])
            if sorted(warmed) != sorted(workers):
                raise RuntimeError(f"bench carla-live: warmed workers {warmed}, expected {workers}")
            for k in range(sizes.rounds):
                for backend in (BACKENDS if k % 2 == 0 else BACKENDS[::-1]):
                    runs[backend].append(train_once(session.client, session.address, sizes, backend, data_root,
                                                    root / f"{backend}-{k}"))
    load_after = os.getloadavg()
    return _result(sizes, runs, load_before[0], load_after[0])


def _result(sizes: Sizes, runs: Mapping[str, list[RunFigures]], load_before: float, load_after: float) -> BenchResult:
    ratios = round_ratios([r.median_step_s for r in runs["carla"]], [r.median_step_s for r in runs["embedded"]])
    mean_ratios = round_ratios([r.mean_step_s for r in runs["carla"]], [r.mean_step_s for r in runs["embedded"]])
    optimizer_ratios = round_ratios([r.median_optimizer_step_s for r in runs["carla"]],
                                    [r.median_optimizer_step_s for r in runs["embedded"]])
    ratio, mean_ratio = float(statistics.median(ratios)), float(statistics.median(mean_ratios))
    optimizer_ratio = float(statistics.median(optimizer_ratios))
    cpu_per_frame = {b: float(statistics.median(r.sim_cpu_ms_per_frame for r in rs)) for b, rs in runs.items()}
    prefill_per_frame = {b: float(statistics.median(r.prefill_cpu_ms_per_frame for r in rs)) for b, rs in runs.items()}
    figures = {"sizes": asdict(sizes), "tasks": list(TASKS), "ratio_median_step": ratio, "ratios_median_step": ratios,
               "ratio_mean_step": mean_ratio, "ratios_mean_step": mean_ratios,
               "ratio_optimizer_step": optimizer_ratio, "ratios_optimizer_step": optimizer_ratios,
               "sim_worker_cpu_ms_per_frame": cpu_per_frame, "prefill_cpu_ms_per_frame": prefill_per_frame,
               "runs": {b: [{**asdict(r), "sim_cpu_ms_per_frame": r.sim_cpu_ms_per_frame} for r in rs]
                        for b, rs in runs.items()},
               "load_average_1min": {"before": load_before, "after": load_after}}
    rows = [f"| run ({', '.join(TASKS)}; {sizes.camera} camera, pool {sizes.pool_shards} shards x {sizes.frames} "
            f"frames, a refill every {sizes.publish_every_steps} steps) | median step ms | mean step ms | "
            "optimizer step ms | frames generated | pools applied | SimActor CPU s (ms/frame) | "
            "pool written first, CPU ms/frame |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in range(sizes.rounds):
        for backend in BACKENDS:
            r = runs[backend][k]
            rows.append(f"| {backend}, round {k + 1} | {1e3 * r.median_step_s:.1f} | {1e3 * r.mean_step_s:.1f} | "
                        f"{1e3 * r.median_optimizer_step_s:.1f} | {r.sim_frames} | "
                        f"{', '.join(str(v) for v in r.pools_applied.values())} | {r.sim_cpu_s:.2f} "
                        f"({r.sim_cpu_ms_per_frame:.0f}) | {r.prefill_cpu_ms_per_frame:.0f} |")
    rows.append(f"| **carla / embedded** (median of rounds) | **{ratio:.3f}** | {mean_ratio:.3f} | "
                f"{optimizer_ratio:.3f} | | | {cpu_per_frame['carla'] / cpu_per_frame['embedded']:.3f} | "
                f"{prefill_per_frame['carla'] / prefill_per_frame['embedded']:.3f} |")
    notes = (f"{sizes.rounds} round(s) on {os.cpu_count()} cores, each an embedded and a carla run of {sizes.steps} "
             f"steps (in turns: embedded first in odd rounds) on one cluster of {len(TASKS) + 1} single-threaded "
             f"worker processes (two task actors, the SimActor), each worker warmed first by a one-frame shard of "
             f"each backend; 1-minute load average {load_before:.1f} before and {load_after:.1f} after. "
             f"Step time: the wall time between a task's logs of consecutive steps (pool application, optimizer "
             f"step with the depth_normals consistency term, publication when due, the log), median over the "
             f"steps after {sizes.warmup} of both tasks; the mean includes the steps that applied a pool or "
             f"published; the optimizer step alone is `time/step_s` (it reads no shard: what slows it is CPU taken by "
             f"the other processes, the SimActor's and the shared machine's). Ratio: carla / embedded per round, "
             f"median of the rounds ({', '.join(f'{x:.3f}' for x in ratios)}; optimizer step "
             f"{', '.join(f'{x:.3f}' for x in optimizer_ratios)}). Both SimActors keep the same pool "
             f"({sizes.pool_shards} shards of {sizes.frames} frames at {sizes.camera}, no LiDAR, "
             f"{sizes.pool_shards} shards of back-pressure, written before the clock starts), refilled after "
             f"each publication round (every {sizes.publish_every_steps} steps, at most half the pool); frames "
             f"generated: by the SimActor during the run, pools applied: by each task actor, SimActor CPU: the "
             f"CPU time of its worker process over the run (Dask's own upkeep included), "
             f"whatever the load around it; pool written first: CPU time of this process per frame while a SimActor "
             f"here wrote the run's first {2 * sizes.pool_shards} shards before the clock (nothing else running "
             f"here: the renderer, or our client and the fake server). The CARLA server is "
             f"the fake of tests/fakecarla.py, in the SimActor's worker process (fixed images, almost free), so "
             f"the carla rows "
             f"cost what our client does: spawning the traffic, ticking, converting and writing the frames; the "
             f"embedded rows cost the renderer, on the same cores as the task actors. A real server renders on "
             f"its own machine or GPU.")
    targets = {"carla_over_embedded_median_step": target(ratio, TARGET_RATIO, higher_is_better=False)}
    return BenchResult(figures=figures, table="\n".join(rows), targets=targets, notes=notes)


__all__ = ["FULL", "QUICK", "FakeCarlaPlugin", "FakeCarlaServer", "RunFigures", "Sizes", "bench_overrides",
           "fake_carla_running", "load_fake_carla", "median_after_warmup", "prefill_pool", "process_cpu_s",
           "read_step_log", "round_ratios", "run", "step_seconds", "train_once", "warm_worker"]
