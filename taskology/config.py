"""Typed experiment configuration: YAML presets in ``configs/`` plus dotted command-line overrides.

An experiment is one :class:`ExperimentConfig` with small sections (``data``, ``sim``, ``tasks``,
``relations``, ``train``, ``cluster``, ``exchange``). Every section rejects unknown keys, values are
strictly typed (``true`` is not an integer, ``"5"`` is not a number) and range-checked. Anything a
user gets wrong raises :class:`~taskology.errors.ConfigError` with one line naming the file or
override, the dotted key, and what is allowed, e.g.::

    configs/demo.yaml: train.stpes: unknown key; allowed: steps, mode, seeds, device, ...

Semantics worth knowing:

- A section missing from the file takes its defaults; a key missing from a section takes its default.
- ``tasks`` and ``relations`` are mappings. A file that lists them *replaces* the default mapping (the
  experiment says which tasks it has); an override such as ``tasks.depth.lr=0.01`` edits one entry of
  the resolved mapping and leaves the others alone.
- Override values are parsed with ``yaml.safe_load``: ``true``, ``1e-3``, ``[0, 1]`` and ``null`` work.
- Relative paths (``data.root``, TLS files) are relative to the working directory, not to the file.

Example:
    >>> cfg = load_config(None, ["train.steps=20", "tasks.depth.label_fraction=0.05"])
    >>> cfg.train.steps, cfg.tasks["depth"].label_fraction
    (20, 0.05)
    >>> load_config(None, ["train.stpes=5"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    taskology.errors.ConfigError: override 'train.stpes=5': train.stpes: unknown key; allowed: steps, ...
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Sequence, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from pydantic import field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from taskology.errors import ConfigError

#: Task and relation names used when the registries cannot be imported or are still empty.
KNOWN_TASKS: tuple[str, ...] = ("depth", "normals", "segmentation", "motion", "detection", "tracking")
KNOWN_RELATIONS: tuple[str, ...] = ("depth_normals", "photometric", "segmentation_motion",
                                    "segmentation_geometry", "box_tracking")
#: The camera tasks and their relations: the default experiment.
CAMERA_TASKS: tuple[str, ...] = ("depth", "normals", "segmentation", "motion")
CAMERA_RELATIONS: tuple[str, ...] = ("depth_normals", "photometric", "segmentation_motion", "segmentation_geometry")
MAX_CAMERA_SIDE = 4096
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
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
    mediator_fraction: Annotated[Float, Field(ge=0, lt=1)] = Field(
        0.5, description="Fraction of the non-test frames that form the unlabeled mediator set.")
    split_seed: Annotated[Int, Field(ge=0)] = Field(0, description="Seed of the split and label draws.")

    @property
    def camera_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return parse_camera_hw(self.camera)


class SimConfig(_Section):
    """What the simulator generates (``taskology sim`` and the SimActor)."""

    backend: Literal["embedded", "carla"] = "embedded"
    carla_host: Annotated[str, BeforeValidator(_host_port_text)] = "127.0.0.1:2000"
    sequences: Annotated[Int, Field(ge=1)] = 8
    frames: Annotated[Int, Field(ge=1)] = 20
    seed: Annotated[Int, Field(ge=0)] = 0
    camera: CameraSize = "64x208"
    lidar_beams: Literal[0, 16, 32, 64, 128] = 32
    frame_rate: Annotated[Float, Field(gt=0, le=1000)] = 10.0

    @property
    def camera_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return parse_camera_hw(self.camera)


class TaskConfig(_Section):
    """One task's network and optimiser."""

    enabled: Bool = True
    label_fraction: Annotated[Float, Field(gt=0, le=1)] = Field(1.0, description="Share of train frames labeled.")
    lr: Annotated[Float, Field(gt=0, le=10)] = 1e-3
    batch_size: Annotated[Int, Field(ge=1)] = 8
    width: Annotated[Int, Field(ge=1, le=1024)] = Field(16, description="Base channel count of the network.")
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0


class RelationConfig(_Section):
    """One consistency relation: on or off, and its loss weight."""

    enabled: Bool = True
    weight: Annotated[Float, Field(ge=0)] = 1.0


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
    refresh_every_s: Annotated[Float, Field(gt=0)] = 5.0
    max_staleness_steps: Annotated[Int, Field(ge=0)] = Field(2000, description="Older predictions are not used.")
    max_staleness_s: Annotated[Float, Field(gt=0)] = Field(1200.0, description="Older predictions are not used.")
    payload_dtype: Literal["float16", "float32"] = "float16"
    mediator_pool_shards: Annotated[Int, Field(ge=1)] = 4


def _registry_names(module: str, attribute: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """Keys of a registry dict when it imports and is non-empty, else ``fallback``."""
    try:
        import importlib

        registry = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return fallback
    if isinstance(registry, Mapping) and registry:
        return tuple(sorted(registry))
    return fallback


def available_tasks() -> tuple[str, ...]:
    """Task names a config may use: ``taskology.tasks.TASKS`` when available, else :data:`KNOWN_TASKS`."""
    return _registry_names("taskology.tasks", "TASKS", KNOWN_TASKS)


def available_relations() -> tuple[str, ...]:
    """Relation names: ``taskology.losses.RELATIONS`` when available, else :data:`KNOWN_RELATIONS`."""
    return _registry_names("taskology.losses", "RELATIONS", KNOWN_RELATIONS)


class ExperimentConfig(_Section):
    """A whole experiment. Build with :func:`load_config`; save with :func:`save_config`."""

    data: DataConfig = Field(default_factory=DataConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    tasks: dict[str, TaskConfig] = Field(default_factory=lambda: {name: TaskConfig() for name in CAMERA_TASKS})
    relations: dict[str, RelationConfig] = Field(
        default_factory=lambda: {name: RelationConfig() for name in CAMERA_RELATIONS})
    train: TrainConfig = Field(default_factory=TrainConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        names = available_tasks()
        for name in tasks:
            if name not in names:
                raise _fail(f"unknown task; available: {', '.join(names)}", name)
        return tasks

    @field_validator("relations")
    @classmethod
    def _known_relations(cls, relations: dict[str, RelationConfig]) -> dict[str, RelationConfig]:
        names = available_relations()
        for name in relations:
            if name not in names:
                raise _fail(f"unknown relation; available: {', '.join(names)}", name)
        return relations

    @model_validator(mode="after")
    def _some_task_enabled(self) -> "ExperimentConfig":
        if not self.enabled_tasks():
            raise _fail(f"no task is enabled; enable at least one of {', '.join(available_tasks())}", "tasks")
        return self

    def enabled_tasks(self) -> list[str]:
        """Names of the enabled tasks, in config order."""
        return [name for name, task in self.tasks.items() if task.enabled]

    def enabled_relations(self) -> dict[str, float]:
        """Enabled relation name -> weight, in config order."""
        return {name: rel.weight for name, rel in self.relations.items() if rel.enabled}


# ------------------------------------------------------------------------------------ error messages


def _unwrap(annotation: Any) -> Any:
    """``Optional[X]`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union:
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _locate(model: type[BaseModel], loc: Sequence[Any]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the last key of ``loc`` and that key's field (None where not a field)."""
    current: Any = model
    parent: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for key in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent, field = current, current.model_fields.get(str(key))
            if field is None:
                return parent, None
            current = field.annotation
        elif get_origin(current) is dict:
            parent, field = None, None
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return parent, field
    return parent, field


def _constraints(annotation: Any) -> list[Any]:
    """Every constraint object (``Gt``, ``Le``, ...) inside an annotation, through Optional/Annotated/list."""
    found: list[Any] = []
    origin = get_origin(annotation)
    if origin is Annotated:
        found += _constraints(get_args(annotation)[0])
        for meta in get_args(annotation)[1:]:
            found += list(meta.metadata) if isinstance(meta, FieldInfo) else [meta]
    elif origin in (Union, list):
        for arg in get_args(annotation):
            found += _constraints(arg)
    return found


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_CTX_BOUNDS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _bounds(field: FieldInfo | None) -> str:
    """``"> 0 and <= 1"`` from a field's numeric constraints (also those of Optional/list items)."""
    if field is None:
        return ""
    parts = []
    for meta in list(field.metadata) + _constraints(field.annotation):
        attr = type(meta).__name__.lower()
        if attr in _SYMBOLS and getattr(meta, attr, None) is not None:
            parts.append(f"{_SYMBOLS[attr]} {getattr(meta, attr)}")
    return " and ".join(dict.fromkeys(parts))


_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
               "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
               "model_type": "a mapping (section)", "model_attributes_type": "a mapping (section)",
               "path_type": "a path", "none_required": "null"}


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for a pydantic error: ``dotted.key: what is wrong; what is allowed; found what``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    ctx = first.get("ctx") or {}
    kind = first["type"]
    if kind == "taskology" and ctx.get("key"):
        loc.append(str(ctx["key"]))
    key = ".".join(loc) or "(top level)"
    found = first.get("input")
    parent, field = _locate(model, first["loc"])
    if kind == "extra_forbidden":
        allowed = ", ".join(parent.model_fields) if parent is not None else "?"
        text = f"unknown key; allowed: {allowed}"
    elif kind == "taskology":
        text = str(ctx["message"])
    elif kind == "literal_error":
        text = f"expected one of {ctx.get('expected', '?')}; found {found!r}"
    elif kind in _CTX_BOUNDS:
        attr = _CTX_BOUNDS[kind]
        text = f"must be {_bounds(field) or _SYMBOLS[attr] + ' ' + str(ctx.get(attr))}; found {found!r}"
    elif kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        text = f"expected {'at least' if kind == 'too_short' else 'at most'} {limit} item(s); found {found!r}"
    elif kind == "missing":
        text = "missing; this key is required"
    elif kind in _TYPE_WORDS or kind.endswith("_type") or kind.endswith("_parsing"):
        bounds = _bounds(field)
        expected = _TYPE_WORDS.get(kind, first["msg"].removeprefix("Input should be ").lower())
        text = f"expected {expected}{' ' + bounds if bounds else ''}; found {found!r} ({type(found).__name__})"
    else:
        text = f"{first['msg']}; found {found!r}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{key}: {text}{more}"


# ----------------------------------------------------------------------------------------------- I/O


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (two ``train:`` sections silently lose one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _validate(raw: Any, where: str) -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of sections (data, sim, tasks, ...); found {raw!r}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc, ExperimentConfig)}") from None


def read_config_file(path: Path) -> ExperimentConfig:
    """Load and validate one YAML experiment file (no overrides)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return _validate({} if raw is None else raw, str(path))


def parse_override(override: str) -> tuple[list[str], Any]:
    """``"train.steps=2000"`` -> ``(["train", "steps"], 2000)``; the value is read with ``yaml.safe_load``."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        raise ConfigError(f"override {override!r}: expected KEY=VALUE with a dotted key like train.steps=2000")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: the value is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    return key.split("."), value


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A new config with dotted ``KEY=VALUE`` overrides applied (the input is unchanged).

    Overrides are applied in order (a later one wins) and validated together, so settings that only
    make sense jointly (``cluster.address=tls://...`` plus the three ``cluster.tls.*`` files) work.
    An error names the override whose key it concerns.

    Example:
        >>> apply_overrides(ExperimentConfig(), ["train.seeds=[0, 1]"]).train.seeds
        [0, 1]
    """
    if not overrides:
        return config
    raw = config.model_dump(mode="python")
    parsed = [(override, *parse_override(override)) for override in overrides]
    for override, keys, value in parsed:
        node: Any = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                dotted = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {override!r}: {dotted} is a value, not a section")
            node = child
        node[keys[-1]] = value
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        message = describe_validation_error(exc, ExperimentConfig)
        failed_key = message.split(":", 1)[0]
        culprits = [override for override, keys, _ in parsed
                    if _related(".".join(keys), failed_key)]
        where = f"override {culprits[-1]!r}" if culprits else "overrides " + " ".join(overrides)
        raise ConfigError(f"{where}: {message}") from None


def _related(key: str, other: str) -> bool:
    """Whether one dotted key lies inside the other (``train`` and ``train.steps``)."""
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment of YAML file ``path`` (defaults when ``None``) with ``overrides`` applied.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown key, wrong type or bad value.
    """
    config = _validate({}, "default config") if path is None else read_config_file(Path(path))
    return apply_overrides(config, overrides)


def config_to_yaml(config: ExperimentConfig) -> str:
    """Every key of the resolved config as YAML text; :func:`load_config` reads it back equal."""
    header = "# Resolved taskology experiment config (every key; written by taskology).\n"
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def save_config(config: ExperimentConfig, path: Path) -> Path:
    """Write the resolved config to ``path`` atomically (temp file in the same dir + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config_to_yaml(config))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
