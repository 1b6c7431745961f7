"""Exceptions raised at the project's boundaries (files, configs, CLI, network).

Every error a user can cause derives from :class:`TaskologyError`; the CLI prints its message on one
line and exits non-zero. Messages say what was expected, what was found, and where.
"""
from __future__ import annotations


class TaskologyError(Exception):
    """Base class of user-facing errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class DataError(TaskologyError):
    """A data file or directory is missing, corrupt, truncated or does not follow the schema."""


class ConfigError(TaskologyError):
    """An experiment config or override has an unknown key, a wrong type or an out-of-range value."""


class SimError(TaskologyError):
    """The simulator was asked for something it cannot do (bad size, beams, seed, output dir)."""


class ClusterError(TaskologyError):
    """A Dask cluster could not be created or reached, or an actor could not be recovered."""


class NotAvailable(TaskologyError):
    """A part that cannot run here: an optional dependency is missing (e.g. the ``carla`` client package)."""

    exit_code = 3


class TrainingDiverged(TaskologyError):
    """A task's loss or gradient became NaN or infinite and training cannot go on from where it is (the
    faulty step was never applied; the newest checkpoint holds the last good state). A restart from a
    checkpoint does not fix it: lower the learning rate (or find the bad data) and resume."""
