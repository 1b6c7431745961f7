"""scripts/consistency_arms_table.py: runs from a bench result and from results.json folders, pooled by seed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("consistency_arms_table",
                                               Path(__file__).parents[2] / "scripts" / "consistency_arms_table.py")
arms_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(arms_table)


def _tasks(depth: float) -> dict:
    return {"depth": {"abs_rel": depth}, "normals": {"mean_angle_deg": 20.0}, "segmentation": {"miou": 0.5},
            "motion": {"ego_translation_err_m": 0.2}}


def test_bench_runs_and_new_seeds_pool_and_give_the_known_gain_and_gap(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"figures": {"setup": {"world": "w"}, "runs": {
        "0.1": {"alone": {"0": _tasks(0.30)}, "collective": {"0": _tasks(0.27)}},
        "1.0": {"alone": {"0": _tasks(0.20)}}}}}))
    for arm, depth in (("alone", 0.30), ("collective", 0.25), ("full", 0.20)):
        (tmp_path / arm).mkdir()
        (tmp_path / arm / "results.json").write_text(json.dumps({"1": {"tasks": _tasks(depth), "world": "w"}}))
    alone = arms_table.load(f"{bench}#0.1/alone+{tmp_path / 'alone'}")
    collective = arms_table.load(f"{bench}#0.1/collective+{tmp_path / 'collective'}")
    full = arms_table.load(f"{bench}#1.0/alone+{tmp_path / 'full'}")
    assert sorted(alone) == ["0", "1"]
    text = arms_table.table(alone, collective, full)
    # depth: alone 0.30, collective 0.26 (0.27, 0.25), full 0.20: gain 13.3 %, gap recovered 40 %
    row = next(line for line in text.splitlines() if line.startswith("| depth"))
    assert "+13.3 %" in row and "+10.0 / +16.7" in row and row.endswith("| 40 % |"), row


def test_a_seed_with_different_metrics_in_two_sources_is_refused(tmp_path: Path) -> None:
    for name, depth in (("a", 0.3), ("b", 0.31)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"0": {"tasks": _tasks(depth), "world": "w"}}))
    with pytest.raises(SystemExit, match="seed 0 differs"):
        arms_table.load(f"{tmp_path / 'a'}+{tmp_path / 'b'}")
    assert arms_table.load(f"{tmp_path / 'a'}+{tmp_path / 'a'}")["0"]["tasks"]["depth"]["abs_rel"] == 0.3
