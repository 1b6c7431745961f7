"""The tasks and relations a run uses, and what the engine derives from them.

:class:`Registry` pairs the two registries, ``taskology.tasks.TASKS`` (name -> :class:`~taskology.tasks.base.Task`
class) and ``taskology.losses.RELATIONS`` (name -> :class:`~taskology.losses.relation.Relation`). Everything the
engine needs to know about a task or a relation comes from there: which layers a task reads from the data
store (its declaration), which relations feed it and with what weight, which layers a mediator batch must
carry. A run takes one snapshot (:meth:`Registry.current`) and hands it to every runner, also to runners in
Dask worker processes, so a task registered in the driver at run time (a plugin, a test) reaches them too.

Example:
    >>> registry = Registry.current()
    >>> sorted(registry.tasks)
    ['depth', 'detection', 'motion', 'normals', 'segmentation', 'tracking']
    >>> registry.task_class("depth").label_layers
    ('camera/depth',)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from taskology.errors import ConfigError
from taskology.losses.relation import Relation
from taskology.tasks.base import Task


@dataclass(frozen=True)
class Registry:
    """Task classes and relations by name (see the module docstring)."""

    tasks: Mapping[str, type[Task]]
    relations: Mapping[str, Relation]

    @classmethod
    def current(cls) -> "Registry":
        """A snapshot of ``taskology.tasks.TASKS`` and ``taskology.losses.RELATIONS`` as they are now."""
        from taskology.losses import RELATIONS
        from taskology.tasks import TASKS

        return cls(dict(TASKS), dict(RELATIONS))

    def task_class(self, name: str) -> type[Task]:
        """Lookup whose error lists the available names."""
        try:
            return self.tasks[name]
        except KeyError:
            raise ConfigError(f"unknown task {name!r}; available: {', '.join(sorted(self.tasks))}") from None

    def build_task(self, name: str, config: Any) -> Task:
        """Task ``name`` built with the constructor arguments of its config entry (``width``) and those its
        class takes from the rest of the config (:meth:`~taskology.tasks.base.Task.config_arguments`)."""
        cls = self.task_class(name)
        return cls(width=int(config.tasks[name].width), **cls.config_arguments(config))

    def relation(self, name: str) -> Relation:
        """Lookup whose error lists the available names."""
        try:
            return self.relations[name]
        except KeyError:
            raise ConfigError(f"relations.{name}: unknown relation; available: "
                              f"{', '.join(sorted(self.relations))}") from None

    def relations_for(self, task: str, config: Any) -> list[tuple[Relation, float]]:
        """Enabled relations that feed ``task``, in config order, with their weight for it: the relation
        teaches ``task``, every task it relates is enabled, and ``weight * receivers.get(task, 1) *
        train.relation_factor(task's label fraction, task's section)`` is not 0."""
        active = set(config.enabled_tasks())
        entry = config.tasks[task]
        label_scale = config.train.relation_factor(float(entry.label_fraction), entry)
        chosen = []
        for name, relation_entry in config.relations.items():
            weight = relation_entry.weight_for(task) * label_scale
            if not relation_entry.enabled or weight == 0:
                continue
            relation = self.relation(name)
            if task in relation.teaches and set(relation.tasks) <= active:
                chosen.append((relation, weight))
        return chosen

    def mediator_layers(self, config: Any) -> tuple[str, ...]:
        """The input layers of every enabled task, in declaration order: what a mediator batch carries, so
        that any peer can predict on it."""
        layers: dict[str, None] = {}
        for name in config.enabled_tasks():
            layers.update(dict.fromkeys(self.task_class(name).input_layers))
        return tuple(layers)

    def pair_tasks(self) -> frozenset[str]:
        """Tasks whose samples are frame pairs (their labels are drawn pair by pair)."""
        return frozenset(name for name, cls in self.tasks.items() if cls.pair)


__all__ = ["Registry"]
