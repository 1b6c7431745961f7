"""The sections of an experiment config: small pydantic models, strict types, ranges, no extra keys.

Each section is its own model, so one can grow without touching the rest. Validators
raise :func:`_fail` errors whose message :mod:`taskology.config.messages` shows as is.

Example:
    >>> ExperimentConfig().train.mode
    'collective'
    >>> TaskConfig(label_fraction=0.02).label_fraction
    0.02
"""
from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Sequence

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

#: The camera tasks and their relations: the default experiment (a config that lists ``tasks`` or
#: ``relations`` replaces these; any name registered in ``taskology.tasks.TASKS`` / ``taskology.losses.RELATIONS``
#: may be used).
CAMERA_TASKS: tuple[str, ...] = ("depth", "normals", "segmentation", "motion")
CAMERA_RELATIONS: tuple[str, ...] = ("depth_normals", "photometric", "segmentation_motion", "segmentation_geometry")
MAX_CAMERA_SIDE = 4096
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def _fail(message: str, key: str | None = None) -> PydanticCustomError:
    """A validation error whose ``message`` is shown as is; ``key`` extends the dotted location."""
    return PydanticCustomError("taskology", "{message}", {"message": message, "key": key})


def _number_from_text(value: Any) -> Any:
    """PyYAML reads ``1e-3`` (no dot) as a string; accept number-shaped strings for float fields."""
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    return value


def parse_camera_hw(text: str) -> tuple[int, int]:
    """``"64x208"`` -> ``(64, 208)`` (height, width in pixels); ValueError on anything else.

    Example:
        >>> parse_camera_hw("128x416")
        (128, 416)
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a camera size 'HxW' like '64x208'; found {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if not (1 <= height <= MAX_CAMERA_SIDE and 1 <= width <= MAX_CAMERA_SIDE):
        raise ValueError(f"camera sides must be in 1..{MAX_CAMERA_SIDE} pixels; found {text!r}")
    return height, width


def _camera_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"expected a camera size 'HxW' like '64x208'; found {value!r}")
    try:
        height, width = parse_camera_hw(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return f"{height}x{width}"


def parse_cluster_address(text: str) -> str:
    """Check a cluster address: ``none``, ``local``, ``tcp://HOST:PORT`` or ``tls://HOST:PORT``.

    Returns the address unchanged (scheme lower-cased); ValueError with the accepted forms otherwise.

    Example:
        >>> parse_cluster_address("tcp://10.0.0.5:8786")
        'tcp://10.0.0.5:8786'
    """
    forms = "none, local, tcp://HOST:PORT or tls://HOST:PORT"
    if not isinstance(text, str):
        raise ValueError(f"expected {forms}; found {text!r}")
    lowered = text.strip().lower()
    if lowered in ("none", "local"):
        return lowered
    scheme, sep, rest = text.strip().partition("://")
    match = _HOST_PORT.match(rest) if sep and scheme.lower() in ("tcp", "tls") else None
    if match is None or not 1 <= int(match.group("port")) <= 65535:
        raise ValueError(f"expected {forms}; found {text!r}")
    return f"{scheme.lower()}://{rest}"


def _address_text(value: Any) -> str:
    try:
        return parse_cluster_address(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _host_port_text(value: Any) -> str:
    if not isinstance(value, str) or not (m := _HOST_PORT.match(value.strip())) or not 1 <= int(m.group("port")) <= 65535:
        raise _fail(f"expected HOST:PORT like '127.0.0.1:2000'; found {value!r}")
    return value.strip()


Float = Annotated[float, BeforeValidator(_number_from_text), Field(strict=True)]
Int = StrictInt
Bool = StrictBool
CameraSize = Annotated[str, BeforeValidator(_camera_text)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class DataConfig(_Section):
    """Where the shards are and how they are split (see ``taskology.data`` splits)."""

    root: Path = Field(Path("data/sim"), description="Directory holding the HDF5 shards (one per sequence).")
    camera: CameraSize = Field("64x208", description="Camera size HxW in pixels the tasks train at.")
    test_sequences: Annotated[Int, Field(ge=1)] = Field(2, description="Whole sequences held out for testing.")
    val_sequences: Annotated[Int, Field(ge=0)] = Field(
        0, description="Whole sequences held out for validation (choices are made there, never on test).")
    mediator_fraction: Annotated[Float, Field(ge=0, lt=1)] = Field(
        0.5, description="Fraction of the non-test frames that form the unlabeled mediator set.")
    split_seed: Annotated[Int, Field(ge=0)] = Field(0, description="Seed of the split and label draws.")

    @property
    def camera_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return parse_camera_hw(self.camera)


#: the lowest frame rate CARLA's physics substeps cover (16 substeps of 0.01 s per tick), Hz; the same
#: figure as :data:`taskology.sim.carla_backend.MIN_FRAME_RATE_HZ` (a test ties them).
CARLA_MIN_FRAME_RATE_HZ = 6.25


def _carla_importable() -> bool:
    """Whether ``import carla`` would find the package (without importing it)."""
    if "carla" in sys.modules:
        return sys.modules["carla"] is not None
    return importlib.util.find_spec("carla") is not None


class SimConfig(_Section):
    """What the simulator generates (``taskology sim`` and the SimActor)."""

    backend: Literal["embedded", "carla"] = "embedded"
    carla_host: Annotated[str, BeforeValidator(_host_port_text)] = "127.0.0.1:2000"
    carla_vehicles: Annotated[Int, Field(ge=0, le=500)] = Field(
        30, description="Vehicles spawned around the ego per sequence (backend carla).")
    carla_walkers: Annotated[Int, Field(ge=0, le=500)] = Field(
        20, description="Pedestrians with AI controllers spawned per sequence (backend carla).")
    carla_timeout_s: Annotated[Float, Field(gt=0, le=600)] = Field(
        10.0, description="Per request to the server and per sensor frame, seconds (backend carla).")
    carla_reconnect_s: Annotated[Float, Field(ge=0)] = Field(
        300.0, description="How long the live SimActor waits for a CARLA server that went away, seconds.")
    sequences: Annotated[Int, Field(ge=1)] = 8
    frames: Annotated[Int, Field(ge=1)] = 20
    seed: Annotated[Int, Field(ge=0)] = 0
    camera: CameraSize = "64x208"
    lidar_beams: Literal[0, 16, 32, 64, 128] = 32
    frame_rate: Annotated[Float, Field(gt=0, le=1000)] = 10.0
    ego_speed_mps: tuple[Float, Float] = Field(
        (5.0, 9.0), description="[min, max] cruising speed of the ego vehicle, m/s (embedded backend).")

    @property
    def camera_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return parse_camera_hw(self.camera)

    @field_validator("ego_speed_mps")
    @classmethod
    def _speed_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 < lo <= hi <= 40.0:
            raise _fail(f"expected [min, max] with 0 < min <= max <= 40 m/s; found {list(value)}")
        return (float(lo), float(hi))

    @model_validator(mode="after")
    def _options_match_backend(self) -> "SimConfig":
        if self.backend != "embedded" and self.world_changes():
            raise _fail(f"options of the embedded simulator; the {self.backend} backend drives its own traffic",
                        ", ".join(self.world_changes()))
        fields = type(self).model_fields
        carla_set = [name for name in fields if name.startswith("carla_") and getattr(self, name) != fields[name].default]
        if self.backend != "carla" and carla_set:
            raise _fail(f"options of the CARLA backend, but sim.backend is {self.backend}; set sim.backend: carla "
                        "or leave them out", carla_set[0])
        if self.backend == "carla" and self.frame_rate < CARLA_MIN_FRAME_RATE_HZ:
            raise _fail(f"the carla backend needs >= {CARLA_MIN_FRAME_RATE_HZ:g} Hz (a longer tick than 16 physics "
                        f"substeps of 0.01 s is simulated inaccurately); found {self.frame_rate:g}", "frame_rate")
        return self

    def carla_options(self) -> Any:
        """The :class:`taskology.sim.carla_backend.CarlaOptions` of this section (``None`` for the embedded backend)."""
        if self.backend != "carla":
            return None
        from taskology.sim.carla_backend import CarlaOptions

        return CarlaOptions(host=self.carla_host, vehicles=int(self.carla_vehicles), walkers=int(self.carla_walkers),
                            timeout_s=float(self.carla_timeout_s), reconnect_s=float(self.carla_reconnect_s))

    def world_changes(self) -> dict[str, Any]:
        """The world parameters this section sets away from :class:`taskology.sim.config.WorldConfig`'s
        defaults, as keyword arguments of it (``{}`` for the default world)."""
        from taskology.sim.config import WorldConfig

        default = WorldConfig()
        wanted = {"ego_speed_mps": tuple(self.ego_speed_mps)}
        return {k: v for k, v in wanted.items() if v != getattr(default, k)}


def label_factor(points: Sequence[tuple[float, float]], fraction: float) -> float:
    """Piecewise-linear interpolation of ``(fraction, factor)`` points in log10(fraction), constant
    beyond the first and last point; 1 when there are no points.

    Example:
        >>> label_factor([(0.02, 1.0), (0.1, 0.5), (1.0, 0.1)], 0.1)
        0.5
        >>> round(label_factor([(0.1, 1.0), (1.0, 0.0)], 10 ** -0.5), 6)
        0.5
    """
    if not points:
        return 1.0
    if fraction <= points[0][0]:
        return float(points[0][1])
    for (f0, v0), (f1, v1) in zip(points, points[1:]):
        if fraction == f1:
            return float(v1)
        if fraction < f1:
            t = (math.log10(fraction) - math.log10(f0)) / (math.log10(f1) - math.log10(f0))
            return float(v0 + t * (v1 - v0))
    return float(points[-1][1])


#: [[label_fraction, factor], ...] with fractions in (0, 1] and factors >= 0 (see :func:`label_factor`).
LabelPoints = list[tuple[Annotated[Float, Field(gt=0, le=1)], Annotated[Float, Field(ge=0)]]]


def _increasing(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    fractions = [f for f, _ in points]
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise _fail(f"label fractions must be strictly increasing; found {fractions}")
    return points


class LidarConfig(_Section):
    """The bird's-eye-view (BEV) grid and box labels of the LiDAR tasks (``detection``, ``tracking``).

    The grid is square around the ego vehicle, ``[-range_m, range_m)`` in x and y (ego frame) with
    ``cell_m`` cells: +-32 m at 0.5 m (128 x 128 cells) runs on a 2-core CPU; a GPU takes +-48 m at 0.25 m.
    A labelled box counts as visible (a detection target) when at least ``min_points`` LiDAR points of
    its sweep lie inside it and its centre is on the grid.
    """

    range_m: Annotated[Float, Field(gt=0, le=200)] = 32.0
    cell_m: Annotated[Float, Field(gt=0, le=4)] = 0.5
    height_m: tuple[Float, Float] = Field((-0.5, 4.5), description="[min, max] z of the points used, ego frame.")
    min_points: Annotated[Int, Field(ge=1)] = 5
    augment: Bool = Field(True, description="Global yaw, mirror and scale augmentation of labelled sweeps.")

    @model_validator(mode="after")
    def _grid_fits(self) -> "LidarConfig":
        cells = 2 * self.range_m / self.cell_m
        if abs(cells - round(cells)) > 1e-6 or round(cells) % 4:
            raise _fail(f"2 * range_m / cell_m must be a whole multiple of 4 cells; found {cells:g}")
        lo, hi = self.height_m
        if not lo < hi:
            raise _fail(f"height_m: expected [min, max] with min < max; found {list(self.height_m)}")
        return self

    def grid(self) -> Any:
        """The :class:`taskology.geometry.pillars.BevGrid` of this section."""
        from taskology.geometry.pillars import BevGrid

        r = float(self.range_m)
        return BevGrid((-r, r), (-r, r), tuple(float(v) for v in self.height_m), float(self.cell_m))


class TaskConfig(_Section):
    """One task's network and optimiser."""

    enabled: Bool = True
    label_fraction: Annotated[Float, Field(gt=0, le=1)] = Field(1.0, description="Share of train frames labeled.")
    lr: Annotated[Float, Field(gt=0, le=10)] = 1e-3
    batch_size: Annotated[Int, Field(ge=1)] = 8
    width: Annotated[Int, Field(ge=1, le=1024)] = Field(16, description="Base channel count of the network.")
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    relation_weight_by_labels: LabelPoints | None = Field(
        None, description="This task's own [[label_fraction, factor], ...] (see train.relation_weight_by_labels), "
                          "in place of train's; unset: train's.")

    @field_validator("relation_weight_by_labels")
    @classmethod
    def _increasing_fractions(cls, points: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        return None if points is None else _increasing(points)


class RelationConfig(_Section):
    """One consistency relation: on or off, its loss weight, and which related tasks it feeds.

    A relation ties several tasks and by default feeds every one of them (each receives the loss with
    only its own outputs carrying gradient). ``receivers`` scales the weight per receiving task:
    ``{normals: 0}`` keeps ``depth_normals`` teaching depth but stops it pulling normals towards normals
    differentiated from a weaker depth network. Unlisted related tasks keep factor 1.
    """

    enabled: Bool = True
    weight: Annotated[Float, Field(ge=0)] = 1.0
    receivers: dict[str, Annotated[Float, Field(ge=0)]] = Field(
        default_factory=dict, description="Receiving task -> factor on weight (default 1; 0: does not feed it).")
    options: dict[str, Annotated[Float, Field(ge=0)]] = Field(
        default_factory=dict, description="The relation's own keyword options, e.g. segmentation_tolerance_deg "
                                          "(docs/relations.md); unset ones keep the relation's defaults.")

    def weight_for(self, task: str) -> float:
        """The loss weight this relation has for receiving task ``task``."""
        return float(self.weight) * float(self.receivers.get(task, 1.0))


class TrainConfig(_Section):
    """The training loop of every task."""

    steps: Annotated[Int, Field(ge=1)] = Field(2000, description="Optimizer steps per task.")
    mode: Literal["alone", "collective"] = "collective"
    seeds: list[Annotated[Int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mediator_batch_size: Annotated[Int, Field(ge=1)] = 8
    eval_every: Annotated[Int, Field(ge=0)] = Field(500, description="Steps between evaluations; 0: only at the end.")
    log_every: Annotated[Int, Field(ge=1)] = 50
    checkpoint_every_steps: Annotated[Int, Field(ge=0)] = Field(500, description="0 disables step checkpoints.")
    checkpoint_every_s: Annotated[Float, Field(ge=0)] = Field(300.0, description="0 disables timed checkpoints.")
    consistency_start_step: Annotated[Int, Field(ge=0)] = Field(
        0, description="Supervised-only steps before the relations start (peers must be somewhat trained first).")
    consistency_ramp_steps: Annotated[Int, Field(ge=0)] = Field(
        0, description="Steps over which relation weights ramp linearly from 0 to full after the start.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning rate over the run: constant, or cosine decay from tasks.<t>.lr to "
                                "lr * lr_final_factor at train.steps.")
    lr_final_factor: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.01, description="With lr_schedule cosine: the last step's learning rate as a share of tasks.<t>.lr.")
    relation_weight_by_labels: LabelPoints = Field(
        default_factory=list,
        description="[[label_fraction, factor], ...]: factor on every relation a task receives, by that "
                    "task's label fraction (piecewise linear in log fraction, constant beyond the ends; "
                    "empty: 1). The more labels a task has, the less its peers can teach it. "
                    "tasks.<t>.relation_weight_by_labels replaces it for one task.")

    @field_validator("relation_weight_by_labels")
    @classmethod
    def _increasing_fractions(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return _increasing(points)

    def relation_factor(self, label_fraction: float, task: TaskConfig | None = None) -> float:
        """The factor on every relation a task with ``label_fraction`` of its frames labeled receives:
        from ``task.relation_weight_by_labels`` when that task sets its own points, else from
        ``relation_weight_by_labels``.

        Example:
            >>> t = TrainConfig(relation_weight_by_labels=[[0.01, 1.0], [1.0, 0.2]])
            >>> [round(t.relation_factor(f), 3) for f in (0.001, 0.01, 0.1, 1.0)]
            [1.0, 1.0, 0.6, 0.2]
            >>> TrainConfig().relation_factor(0.5)
            1.0
            >>> t.relation_factor(1.0, TaskConfig(relation_weight_by_labels=[[0.1, 1.0], [1.0, 0.0]]))
            0.0
        """
        points = self.relation_weight_by_labels
        if task is not None and task.relation_weight_by_labels is not None:
            points = task.relation_weight_by_labels
        return label_factor(points, label_fraction)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise _fail(f"seeds must be distinct; found {seeds}")
        return seeds


class TLSConfig(_Section):
    """Certificates for ``tls://`` clusters: all three files, or none of them."""

    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None

    @property
    def configured(self) -> bool:
        return self.ca_file is not None

    @model_validator(mode="after")
    def _all_or_none(self) -> "TLSConfig":
        given = {name: getattr(self, name) for name in ("ca_file", "cert_file", "key_file")}
        missing = [name for name, value in given.items() if value is None]
        if 0 < len(missing) < 3:
            raise _fail("give all three of ca_file, cert_file, key_file or none", missing[0])
        return self


class ClusterConfig(_Section):
    """Where the task actors run."""

    address: Annotated[str, BeforeValidator(_address_text)] = Field(
        "local", description="none (in-process), local (LocalCluster), tcp://HOST:PORT or tls://HOST:PORT.")
    n_workers: Optional[Annotated[Int, Field(ge=1)]] = Field(None, description="Default: one per enabled task + sim.")
    threads_per_worker: Annotated[Int, Field(ge=1)] = 1
    dashboard: Bool = True
    max_restarts: Annotated[Int, Field(ge=0)] = Field(10, description="Restarts of a lost actor over a run "
                                                      "(from its newest checkpoint); one more loss ends the run.")
    restart_backoff_s: Annotated[Float, Field(ge=0)] = Field(0.0, description="Wait before the k-th quick restart "
                                                             "of an actor: this x 2^(k-1), at most 30 s.")
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @model_validator(mode="after")
    def _tls_matches_address(self) -> "ClusterConfig":
        if self.address.startswith("tls://") and not self.tls.configured:
            raise _fail(f"address {self.address} needs tls.ca_file, tls.cert_file and tls.key_file", "tls")
        if self.address.startswith("tcp://") and self.tls.configured:
            raise _fail(f"TLS files are set but the address is plaintext {self.address}; use tls://", "address")
        if self.tls.configured and self.address != "none":
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(self.tls, name)
                if not path.is_file():
                    raise _fail(f"no such file {str(path)!r}", f"tls.{name}")
        return self


class ExchangeConfig(_Section):
    """How tasks share predictions on mediator samples (distributed runs)."""

    publish_every_steps: Annotated[Int, Field(ge=1)] = 50
    refresh_every_s: Annotated[Float, Field(ge=0)] = Field(5.0, description="Seconds between a consumer's "
                                                           "fetches of its peers' publications (0: as often as possible).")
    max_staleness_steps: Annotated[Int, Field(ge=0)] = Field(2000, description="Older predictions are not used.")
    max_staleness_s: Annotated[Float, Field(gt=0)] = Field(1200.0, description="Older predictions are not used.")
    payload_dtype: Literal["float16", "float32"] = "float16"
    predict_batch_size: Annotated[Int, Field(ge=1)] = Field(16, description="Mediator samples per forward pass "
                                                            "when publishing (inference only: larger is cheaper per sample).")
    mediator_pool_shards: Annotated[Int, Field(ge=1)] = 4
    pool_refresh_s: Annotated[Float, Field(gt=0)] = Field(5.0, description="Live pool: how often the driver "
                                                          "checks for newer SimActor shards to hand the task actors.")
    live_mediator: Bool = Field(True, description="Collective distributed runs: a SimActor keeps a live pool of "
                                "mediator shards (false: the fixed mediator split of data.root).")
    lockstep_lag_steps: Optional[Annotated[Int, Field(ge=0)]] = Field(
        None, description="null: never wait for peers. N: a task at step s waits (up to 60 s) until it holds a "
        "peer publication from peer step >= s - N (0 with publish_every_steps=1: peers refreshed every step).")

    @model_validator(mode="after")
    def _lockstep_reachable(self) -> "ExchangeConfig":
        lag = self.lockstep_lag_steps
        if lag is not None and lag < self.publish_every_steps - 1:
            raise _fail(f"{lag} can never be met when peers publish every {self.publish_every_steps} steps "
                        f"(every step would wait for the timeout); use >= {self.publish_every_steps - 1} or null",
                        "lockstep_lag_steps")
        return self


def _tasks() -> Mapping[str, Any]:
    """``taskology.tasks.TASKS`` as it is now (imported when a config is validated: the CLI starts fast)."""
    from taskology.tasks import TASKS

    return TASKS


def _relations() -> Mapping[str, Any]:
    """``taskology.losses.RELATIONS`` as it is now."""
    from taskology.losses import RELATIONS

    return RELATIONS


def available_tasks() -> tuple[str, ...]:
    """Task names a config may use: the keys of ``taskology.tasks.TASKS``."""
    return tuple(sorted(_tasks()))


def available_relations() -> tuple[str, ...]:
    """Relation names a config may use: the keys of ``taskology.losses.RELATIONS``."""
    return tuple(sorted(_relations()))


class ExperimentConfig(_Section):
    """A whole experiment. Build with :func:`load_config`; save with :func:`save_config`."""

    data: DataConfig = Field(default_factory=DataConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    lidar: LidarConfig = Field(default_factory=LidarConfig)
    tasks: dict[str, TaskConfig] = Field(default_factory=lambda: {name: TaskConfig() for name in CAMERA_TASKS})
    relations: dict[str, RelationConfig] = Field(
        default_factory=lambda: {name: RelationConfig() for name in CAMERA_RELATIONS})
    train: TrainConfig = Field(default_factory=TrainConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        registered = _tasks()
        for name in tasks:
            if name not in registered:
                raise _fail(f"unknown task; available: {', '.join(available_tasks())}", name)
            problem = registered[name].declaration_problem()
            if problem:
                raise _fail(f"task {name!r} of the registry: {problem}", name)
        return tasks

    @field_validator("relations")
    @classmethod
    def _known_relations(cls, relations: dict[str, RelationConfig]) -> dict[str, RelationConfig]:
        registered = _relations()
        for name, entry in relations.items():
            if name not in registered:
                raise _fail(f"unknown relation; available: {', '.join(available_relations())}", name)
            teaches = registered[name].teaches
            for task in entry.receivers:
                if task not in teaches:
                    raise _fail(f"not a task this relation teaches; it teaches {', '.join(teaches)}",
                                f"{name}.receivers.{task}")
            for option, value in entry.options.items():
                problem = registered[name].check_option(option, float(value))
                if problem:
                    raise _fail(problem, f"{name}.options.{option}")
        return relations

    @model_validator(mode="after")
    def _some_task_enabled(self) -> "ExperimentConfig":
        if not self.enabled_tasks():
            raise _fail(f"no task is enabled; enable at least one of {', '.join(available_tasks())}", "tasks")
        return self

    def runs_a_sim_actor(self) -> bool:
        """Whether training runs a SimActor for a live mediator pool (collective, live_mediator, a cluster)."""
        return (self.train.mode == "collective" and bool(self.exchange.live_mediator)
                and self.cluster.address != "none")

    @model_validator(mode="after")
    def _live_mediator_renders_what_tasks_read(self) -> "ExperimentConfig":
        if not self.runs_a_sim_actor() or self.sim.lidar_beams:
            return self
        registered = _tasks()
        readers = [name for name in self.enabled_tasks()
                   if any(layer.startswith("lidar/") for layer in getattr(registered[name], "input_layers", ()))]
        if readers:
            raise _fail(f"0 renders no LiDAR, but the live mediator pool feeds {', '.join(readers)}, which read "
                        "LiDAR sweeps; use 16, 32, 64 or 128 beams (or exchange.live_mediator: false)", "sim.lidar_beams")
        return self

    @model_validator(mode="after")
    def _carla_has_a_live_mediator(self) -> "ExperimentConfig":
        """``sim.backend: carla`` is read by the live SimActor of collective distributed runs only; a
        config where it would run nothing, or where the client package is missing, is refused."""
        if self.sim.backend != "carla" or self.train.mode != "collective":
            return self   # alone: no mediator at all, the backend does not matter
        if not self.exchange.live_mediator:
            raise _fail("carla feeds the live mediator pool, but exchange.live_mediator is false (training would read "
                        "the fixed mediator split of data.root); set exchange.live_mediator: true or sim.backend: "
                        "embedded", "sim.backend")
        if self.cluster.address == "none":
            raise _fail("carla feeds the live mediator pool of distributed runs, but cluster.address is none (an "
                        "in-process run reads the fixed mediator split of data.root); use cluster.address local "
                        "or tcp://HOST:PORT, or sim.backend: embedded", "sim.backend")
        if not _carla_importable():
            raise _fail("carla needs the 'carla' client package for the live mediator, and it is not installed "
                        "here; pip install 'taskology[carla]' (carla==0.9.16, matching the server)", "sim.backend")
        return self

    def enabled_tasks(self) -> list[str]:
        """Names of the enabled tasks, in config order."""
        return [name for name, task in self.tasks.items() if task.enabled]

    def enabled_relations(self) -> dict[str, float]:
        """Enabled relation name -> weight, in config order."""
        return {name: rel.weight for name, rel in self.relations.items() if rel.enabled}
