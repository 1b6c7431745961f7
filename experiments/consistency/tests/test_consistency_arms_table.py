"""experiments/consistency/consistency_arms_table.py: runs from a bench result and from results.json folders, pooled by seed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import consistency_arms_table as arms_table


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


def test_the_one_command_run_of_the_27_sequence_world_gives_the_2_percent_table_of_the_readme() -> None:
    result = Path(__file__).resolve().parents[1] / "results" / "consistency-cpu-27-sequences-one-world.json"
    text = arms_table.table(*(arms_table.load(f"{result}#{arm}") for arm in ("0.02/alone", "0.02/collective", "1.0/alone")))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "World 15d342f69a96391f." in text
    assert "| +29.8 % | +28.5 / +30.4 / +30.3 | 61 % |" in rows["depth"]      # README: +29.8 %, gap 61 %
    assert "| +19.9 % | +23.2 / +17.0 / +19.4 | 40 % |" in rows["normals"]    # +19.9 %, gap 40 %
    assert rows["motion"].endswith("| n/a (alone at 100 % is not better) |")
