"""Consistency relations: one module per relation; the registry ``RELATIONS`` maps a name to it.

Example:
    >>> sorted(RELATIONS)[:3]
    ['box_tracking', 'depth_normals', 'ego_motion_agreement']
    >>> RELATIONS["segmentation_temporal"].teaches
    ('segmentation',)
    >>> RELATIONS["photometric"].tasks
    ('depth', 'motion')
"""
from __future__ import annotations

import math

from taskology.errors import ConfigError
from taskology.losses.box_tracking import box_tracking_loss
from taskology.losses.depth_normals import depth_normals_loss
from taskology.losses.ego_motion_agreement import ego_motion_agreement_loss
from taskology.losses.photometric import photometric_loss
from taskology.losses.relation import Option, Relation, evaluate_for_receiver
from taskology.losses.segmentation_boxes import segmentation_boxes_loss
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
    "box_tracking": Relation("box_tracking", box_tracking_loss, ("detection", "tracking"), needs_pair=True,
                             options=(Option("confidence", 0.0, 1.0), Option("match_iou", 0.01, 1.0, inclusive=True))),
    "ego_motion_agreement": Relation("ego_motion_agreement", ego_motion_agreement_loss, ("motion", "tracking"),
                                     needs_pair=True),
    "segmentation_boxes": Relation("segmentation_boxes", segmentation_boxes_loss,
                                   ("segmentation", "depth", "detection"), receivers=("segmentation",),
                                   options=(Option("confidence", 0.0, 1.0), Option("margin_m", 0.0, 10.0))),
}


def relation(name: str) -> Relation:
    """Registry lookup whose error lists the available names."""
    try:
        return RELATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown relation {name!r}; available: {', '.join(sorted(RELATIONS))}") from None


__all__ = ["RELATIONS", "Option", "Relation", "relation", "evaluate_for_receiver"]
