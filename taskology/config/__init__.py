"""Typed experiment configuration: YAML files or shipped presets (``taskology/configs/``, by name) plus dotted
command-line overrides.

An experiment is one :class:`ExperimentConfig` with small sections (``data``, ``sim``, ``tasks``,
``relations``, ``train``, ``cluster``, ``exchange``). Every section rejects unknown keys, values are
strictly typed (``true`` is not an integer, ``"5"`` is not a number) and range-checked. Anything a
user gets wrong raises :class:`~taskology.errors.ConfigError` with one line naming the file or
override, the dotted key, and what is allowed, e.g.::

    my-experiment.yaml: train.stpes: unknown key; allowed: steps, mode, seeds, device, ...

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

Modules: :mod:`~taskology.config.sections` (the models), :mod:`~taskology.config.loading` (YAML,
overrides, saving), :mod:`~taskology.config.messages` (one-line error text).
"""
from __future__ import annotations

from taskology.config.loading import (
    apply_overrides,
    flatten_dotted,
    config_to_yaml,
    load_config,
    parse_override,
    read_config_file,
    save_config,
)
from taskology.config.messages import describe_validation_error
from taskology.config.sections import (
    CAMERA_RELATIONS,
    CAMERA_TASKS,
    MAX_CAMERA_SIDE,
    ClusterConfig,
    DataConfig,
    ExchangeConfig,
    ExperimentConfig,
    RelationConfig,
    SimConfig,
    TaskConfig,
    TLSConfig,
    TrainConfig,
    available_relations,
    available_tasks,
    parse_camera_hw,
    parse_cluster_address,
)

__all__ = [
    "CAMERA_RELATIONS", "CAMERA_TASKS", "MAX_CAMERA_SIDE",
    "ClusterConfig", "DataConfig", "ExchangeConfig", "ExperimentConfig", "RelationConfig", "SimConfig",
    "TaskConfig", "TLSConfig", "TrainConfig",
    "apply_overrides", "flatten_dotted", "available_relations", "available_tasks", "config_to_yaml", "describe_validation_error",
    "load_config", "parse_camera_hw", "parse_cluster_address", "parse_override", "read_config_file",
    "save_config",
]
