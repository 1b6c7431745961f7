"""``taskology bench label-weights``: a quick run evaluates every factor on validation and chooses from it."""
from __future__ import annotations

import math

import pytest

from taskology.bench import label_weights


@pytest.mark.timeout(300)
def test_quick_label_weights_run_evaluates_every_factor_on_val_and_chooses_from_those_numbers() -> None:
    result = label_weights.run(quick=True)
    figures = result.figures
    names = {"alone", *(label_weights.variant(f) for f in label_weights.FACTORS)}
    assert set(figures["results"]) == {f"{f}" for f in label_weights.FRACTIONS}
    for runs in figures["results"].values():
        assert set(runs) == names
        assert all(math.isfinite(v) for tasks in runs.values() for m in tasks.values() for v in m.values())
    # segmentation is fed nothing by the default preset (receivers: {segmentation: 0}), the others are
    assert figures["setup"]["fed"] == ["depth", "normals", "motion"]
    assert figures["decisions"] == {fr: {"factor": d["factor"], "gains": {float(k): v for k, v in d["gains"].items()}}
                                    for fr, d in label_weights.choose(figures["results"], ("depth", "normals", "motion")).items()}
    assert figures["chosen_points"] == [[f, figures["decisions"][f"{f}"]["factor"]] for f in label_weights.FRACTIONS]
    # the factor really changes what a fed task learns, and not what an unfed one learns
    runs = figures["results"]["0.1"]
    assert runs["relations x1"]["depth"] != runs["relations x0.1"]["depth"]
    assert runs["relations x1"]["segmentation"] == runs["relations x0.1"]["segmentation"] == runs["alone"]["segmentation"]
    assert "validation sequence" in result.notes and "relation_weight_by_labels" in result.notes
