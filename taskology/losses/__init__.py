"""Consistency relations: one module per relation; the registry ``RELATIONS`` maps a name to it.

Example:
    >>> sorted(RELATIONS)[:3]
    ['depth_normals', 'photometric', 'segmentation_geometry']
    >>> RELATIONS["segmentation_temporal"].teaches
    ('segmentation',)
    >>> RELATIONS["photometric"].tasks
    ('depth', 'motion')
"""
from __future__ import annotations

import math

from taskology.errors import ConfigError
from taskology.losses.depth_normals import depth_normals_loss
from taskology.losses.photometric import photometric_loss
from taskology.losses.relation import Option, Relation, evaluate_for_receiver
from taskology.losses.segmentation_geometry import segmentation_geometry_loss
from taskology.losses.segmentation_motion import segmentation_motion_loss
from taskology.losses.segmentation_temporal import segmentation_temporal_loss

#: relation name -> Relation (a plain dict; adding a relation is one module + one line here).
RELATIONS: dict[str, Relation] = {
    "depth_normals": Relation("depth_normals", depth_normals_loss, ("depth", "normals")),
    "photometric": Relation("photometric", photometric_loss, ("depth", "motion"), needs_pair=True,
                            options=(Option("depth_scale_gradient", 0.0, 1.0, inclusive=True),)),
    "segmentation_motion": Relation("segmentation_motion", segmentation_motion_loss, ("motion", "segmentation"),
                                    options=(Option("segmentation_tolerance_m", 0.0, math.inf),)),
    "segmentation_geometry": Relation("segmentation_geometry", segmentation_geometry_loss,
                                      ("segmentation", "normals", "depth"),
                                      options=(Option("segmentation_tolerance_deg", 0.0, 90.0),)),
    "segmentation_temporal": Relation("segmentation_temporal", segmentation_temporal_loss,
                                      ("segmentation", "depth", "motion"), needs_pair=True,
                                      receivers=("segmentation",), next_frame_targets=True,
                                      options=(Option("confidence", 0.0, 1.0),
                                               Option("photometric_tolerance", 0.0, math.inf))),
}


def relation(name: str) -> Relation:
    """Registry lookup whose error lists the available names."""
    try:
        return RELATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown relation {name!r}; available: {', '.join(sorted(RELATIONS))}") from None


__all__ = ["RELATIONS", "Option", "Relation", "relation", "evaluate_for_receiver"]
