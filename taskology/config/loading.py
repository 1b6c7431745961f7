"""Reading experiment YAML files, applying dotted overrides, and saving the resolved config.

Example:
    >>> cfg = load_config(None, ["train.steps=20"])
    >>> load_config(None, []).train.steps, cfg.train.steps
    (2000, 20)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from taskology.config.messages import describe_validation_error
from taskology.config.sections import ExperimentConfig
from taskology.errors import ConfigError

_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


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


def flatten_dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"dotted.key": leaf}``, the spelling overrides and error messages use.

    Example:
        >>> flatten_dotted({"train": {"steps": 5}, "seed": 0})
        {'train.steps': 5, 'seed': 0}
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten_dotted(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


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


#: the presets shipped inside the package (``taskology/configs/<name>.yaml``): usable by name from any folder
PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """Names of the shipped presets, e.g. ``['consistency', 'consistency-gpu', 'default', 'demo']``."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def config_path(path_or_name: str | Path) -> Path:
    """``path_or_name`` itself when it is a file; else the shipped preset of that name (``demo`` or
    ``demo.yaml``); else a ConfigError naming both and listing the presets.

    Example:
        >>> config_path("demo").name
        'demo.yaml'
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.parent != Path("."):  # a path, not a name
        raise ConfigError(f"{path}: no such config file")
    preset = PRESETS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if preset.is_file():
        return preset
    raise ConfigError(f"{path}: no such config file, and no shipped preset of that name; presets: "
                      f"{', '.join(preset_names())}")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment of YAML file ``path`` (or of the shipped preset of that name, :func:`config_path`;
    defaults when ``None``) with ``overrides`` applied.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown key, wrong type or bad value.
    """
    config = _validate({}, "default config") if path is None else read_config_file(config_path(path))
    return apply_overrides(config, overrides)


def config_to_yaml(config: ExperimentConfig) -> str:
    """Every key of the resolved config as YAML text; :func:`load_config` reads it back equal."""
    header = "# Resolved taskology experiment config (every key; written by taskology).\n"
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def save_config(config: ExperimentConfig, path: Path) -> Path:
    """Write the resolved config to ``path`` atomically (temp file in the same dir + rename)."""
    from taskology.atomic import write_text_atomic

    return write_text_atomic(Path(path), config_to_yaml(config))
