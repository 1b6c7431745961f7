"""``taskology report``: metric table numbers, PNGs that are real images, TensorBoard and staleness
reading, notes instead of crashes, one-line errors, atomic report directory.

Run directories are made by hand in the documented layout (config.yaml via save_config, metrics.json,
logs/<task>.jsonl or tensorboard/<task>/, manifest.json, checkpoints/<task>/step_XXXXXXXX.pt holding
freshly initialised models) on the tiny simulator shards; the real engine's runs are covered by
tests/engine/test_demo.py.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taskology.config import load_config, save_config
from taskology.report.command import write_report
from taskology.errors import DataError
from taskology.report import gallery
from taskology.report.plots import smooth
from taskology.report.runs import find_arms, read_task_scalars, staleness_samples
from taskology.report.tables import MetricRow, metric_rows
from taskology.tasks import build_task

TASKS = ("depth", "normals", "segmentation", "motion")
#: hand-made held-out metrics (alone, collective) per task.
METRICS = {
    "alone": {"depth": {"abs_rel": 0.2, "delta1": 0.5, "rmse": 8.0},
              "normals": {"mean_angle_deg": 40.0, "median_angle_deg": 35.0, "within_11_25_pct": 10.0},
              "segmentation": {"miou": 0.5, "pixel_acc": 0.8},
              "motion": {"ego_rotation_err_deg": 0.5, "ego_translation_err_m": 0.1, "object_epe_m": 0.4}},
    "collective": {"depth": {"abs_rel": 0.15, "delta1": 0.6, "rmse": 9.0},
                   "normals": {"mean_angle_deg": 30.0, "median_angle_deg": 35.0, "within_11_25_pct": 12.0},
                   "segmentation": {"miou": 0.55, "pixel_acc": 0.72},
                   "motion": {"ego_rotation_err_deg": 0.25, "ego_translation_err_m": 0.1, "object_epe_m": 0.5}},
}
STEPS = 20


def overrides(root: Path, mode: str) -> list[str]:
    out = [f"data.root={root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={STEPS}",
           f"train.mode={mode}", "train.device=cpu", "cluster.address=none"]
    for t in TASKS:
        out += [f"tasks.{t}.width=4", f"tasks.{t}.label_fraction=0.5"]
    return out


def make_arm(run_dir: Path, root: Path, mode: str, *, distributed: bool = False, seed: int = 0) -> Path:
    """A finished run dir of ``mode`` in the documented layout, with known metrics and losses."""
    config = load_config(None, overrides(root, mode))
    save_config(config, run_dir / "config.yaml")
    (run_dir / "metrics.json").write_text(json.dumps({"seed": 0, "mode": mode, "steps": STEPS,
                                                      "tasks": METRICS[mode]}))
    torch.manual_seed(seed)
    for task_name in TASKS:
        task = build_task(task_name, width=4)
        path = run_dir / "checkpoints" / task_name / f"step_{STEPS:08d}.pt"
        path.parent.mkdir(parents=True)
        torch.save({"task": task_name, "step": STEPS, "model": task.build_model().state_dict()}, path)
        scalars = [{"step": s, "loss/total": 2.0 / s, f"loss/{task_name}_term": 1.0 / s,
                    **({"consistency/depth_normals": 0.5 / s} if mode == "collective" else {})}
                   for s in range(1, STEPS + 1)]
        if distributed:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tensorboard" / task_name))
            for record in scalars:
                for key, value in record.items():
                    if key != "step":
                        writer.add_scalar(key, value, record["step"])
                # staleness: `step` steps and `step / 10` seconds behind; step 1 used no peer rows
                writer.add_scalar("staleness/steps_mean", float(record["step"] - 1), record["step"])
                writer.add_scalar("staleness/seconds_mean", (record["step"] - 1) / 10.0, record["step"])
            writer.close()
        else:
            (run_dir / "logs").mkdir(exist_ok=True)
            lines = [json.dumps(r) for r in scalars] + [json.dumps(scalars[-1] | {"loss/total": 99.0})]
            (run_dir / "logs" / f"{task_name}.jsonl").write_text("\n".join(lines) + "\n{torn")
    if distributed:
        (run_dir / "manifest.json").write_text(json.dumps({"state": "done"}))
    return run_dir


@pytest.fixture(scope="module")
def comparison(sim_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("comparison")
    make_arm(out / "alone", sim_root, "alone", seed=1)
    make_arm(out / "collective", sim_root, "collective", seed=2)
    write_report(out)
    return out


def table_row(report_md: str, task: str, metric: str) -> list[str]:
    for line in report_md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == task and cells[1].split()[0] == metric:
            return cells
    raise AssertionError(f"no row {task}/{metric} in report.md")


def test_table_has_both_arms_numbers_and_the_relative_change(comparison: Path) -> None:
    text = (comparison / "report" / "report.md").read_text()
    assert table_row(text, "depth", "abs_rel") == ["depth", "abs_rel ↓", "0.2", "0.15", "-25.0%", "better"]
    assert table_row(text, "depth", "rmse") == ["depth", "rmse ↓", "8", "9", "+12.5%", "worse"]
    assert table_row(text, "segmentation", "miou") == ["segmentation", "miou ↑", "0.5", "0.55", "+10.0%", "better"]
    assert table_row(text, "segmentation", "pixel_acc")[4:] == ["-10.0%", "worse"]
    assert table_row(text, "motion", "ego_rotation_err_deg")[4:] == ["-50.0%", "better"]
    assert table_row(text, "normals", "median_angle_deg")[4:] == ["+0.0%", "same"]
    data = json.loads((comparison / "report" / "metrics.json").read_text())
    assert len(data["rows"]) == sum(len(m) for m in METRICS["alone"].values())
    row = next(r for r in data["rows"] if (r["task"], r["metric"]) == ("normals", "mean_angle_deg"))
    assert (row["alone"], row["collective"], row["change_pct"]) == (40.0, 30.0, -25.0)
    assert "In-process run: predictions fresh" in text and "- nothing missing" in text


def assert_real_image(path: Path, min_hw: tuple[int, int]) -> np.ndarray:
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_hw[0] and image.shape[1] >= min_hw[1], image.shape
    assert float(image[..., :3].std()) > 0.05, f"{path.name} is nearly uniform"
    return image


def test_pngs_are_non_trivial_images(comparison: Path) -> None:
    report = comparison / "report"
    for task in TASKS:
        assert_real_image(report / f"loss_{task}.png", (300, 800))
    image = assert_real_image(report / "gallery.png", (1000, 800))
    assert image.shape[0] > image.shape[1]  # 3 samples x 4 tasks = 12 rows of 4 wide cells
    assert not (report / "staleness.png").exists()  # in-process run: nothing to histogram
    assert sorted(p.name for p in comparison.iterdir()) == ["alone", "collective", "report"]  # no temp dirs left


def test_jsonl_scalars_keep_the_last_value_of_a_step_and_skip_a_torn_line(comparison: Path) -> None:
    steps, values = read_task_scalars(comparison / "alone", "depth")["loss/total"]
    assert steps.tolist() == list(range(1, STEPS + 1))
    assert values[-1] == 99.0 and values[0] == 2.0  # the repeated last step (a resumed run) wins


def test_distributed_run_reads_tensorboard_and_histograms_staleness(sim_root: Path, tmp_path: Path) -> None:
    make_arm(tmp_path / "alone", sim_root, "alone")
    make_arm(tmp_path / "collective", sim_root, "collective", distributed=True)
    scalars = read_task_scalars(tmp_path / "collective", "motion")
    steps, values = scalars["loss/motion_term"]
    assert steps.tolist() == list(range(1, STEPS + 1))
    np.testing.assert_allclose(values, 1.0 / steps, rtol=1e-6)
    behind, seconds = staleness_samples(scalars)
    np.testing.assert_allclose(behind, np.arange(1, STEPS))  # step 1 used no peer prediction: dropped
    np.testing.assert_allclose(seconds, np.arange(1, STEPS) / 10.0, rtol=1e-6)
    write_report(tmp_path)
    text = (tmp_path / "report" / "report.md").read_text()
    # per consumer: 19 logged steps, median of 1..19 = 10 steps / 1.0 s, max 19 / 1.9 s
    assert "| depth | 19 | 10.0 | 19.0 | 1.0 | 1.9 |" in text
    assert_real_image(tmp_path / "report" / "staleness.png", (300, 800))
    assert "distributed (Dask actors)" in text


def test_missing_arm_metrics_and_checkpoint_are_notes_not_crashes(sim_root: Path, tmp_path: Path) -> None:
    run = make_arm(tmp_path / "run", sim_root, "collective")
    (run / "metrics.json").unlink()
    for path in (run / "checkpoints" / "normals").iterdir():
        path.unlink()
    report_dir = write_report(run)  # a single training run dir
    text = (report_dir / "report.md").read_text()
    assert "no alone arm" in text and f"taskology eval {run}" in text
    assert "_No metrics to show (see the notes)._" in text
    assert "collective arm has no checkpoint of normals" in text
    assert_real_image(report_dir / "gallery.png", (1000, 800))  # the other predictions are still drawn
    assert (report_dir / "loss_depth.png").is_file()


def test_not_a_run_dir_is_a_one_line_error(tmp_path: Path) -> None:
    from taskology.cli import cli

    with pytest.raises(DataError, match="not a run directory"):
        find_arms(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taskology: error: ") and str(tmp_path) in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_failed_rebuild_keeps_the_old_report_and_leaves_no_temp(comparison: Path, monkeypatch) -> None:
    import taskology.report.command as report_module

    before = (comparison / "report" / "report.md").read_text()

    def broken(run_dir: Path, out: Path) -> Path:
        (out / "report.md").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "build_report", broken)
    with pytest.raises(RuntimeError):
        write_report(comparison)
    assert (comparison / "report" / "report.md").read_text() == before
    assert sorted(p.name for p in comparison.iterdir()) == ["alone", "collective", "report"]


# ------------------------------------------------------------------------------ pure pieces


def test_metric_row_direction_and_undefined_change() -> None:
    assert MetricRow("d", "delta1", 0.5, 0.4).verdict == "worse"   # higher is better
    assert MetricRow("d", "rmse", 0.5, 0.4).verdict == "better"    # lower is better
    assert MetricRow("d", "rmse", 0.0, 0.4).change_pct is None     # no relative change from 0
    assert MetricRow("d", "rmse", None, 0.4).verdict == ""
    assert MetricRow("d", "rmse", math.nan, 0.4).change_pct is None
    rows = metric_rows({"a": {"x": 1.0, "step": 5.0}}, {"b": {"y": 2.0}})
    assert [(r.task, r.metric, r.alone, r.collective) for r in rows] == [("a", "x", 1.0, None), ("b", "y", None, 2.0)]


def test_smooth_matches_a_plain_loop() -> None:
    values = np.random.default_rng(0).normal(size=37)
    for window in (1, 2, 5, 50):
        expected = [values[max(0, i + 1 - window):i + 1].mean() for i in range(values.size)]
        np.testing.assert_allclose(smooth(values, window), expected)


def test_gallery_colourings_round_trip_ground_truth() -> None:
    """A prediction equal to the ground truth is drawn exactly like the ground truth."""
    rng = np.random.default_rng(0)
    seg = build_task("segmentation", width=4)
    ids = np.asarray(seg.class_ids)
    semantic = torch.from_numpy(rng.choice(ids, size=(6, 10)).astype(np.uint8))
    logits = torch.nn.functional.one_hot(seg.contiguous_labels(semantic.long()), len(ids)).permute(2, 0, 1).float()
    depth = torch.from_numpy(rng.uniform(1, 50, size=(1, 6, 10)).astype(np.float32))
    normals = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(3, 6, 10)).astype(np.float32)), dim=0)
    rgb = torch.rand(3, 6, 10)
    for task_name, sample, outputs in (("segmentation", {"semantic": semantic}, {"logits": logits}),
                                       ("depth", {"depth": depth}, {"depth": depth}),
                                       ("normals", {"normals": normals}, {"normals": normals})):
        images = gallery.row_images(build_task(task_name, width=4), {"rgb": rgb, **sample},
                                    {"alone": outputs, "collective": None})
        np.testing.assert_allclose(images["alone"], images["ground truth"], atol=1e-6)
        assert images["collective"] is None and images["rgb"].shape == (6, 10, 3)
    palette = gallery.colorize_semantic(np.array([[14, 1]], np.uint8))
    assert palette.tolist() == [[[0, 0, 142], [128, 64, 128]]]  # CARLA car, road


def test_depth_range_and_sample_picking() -> None:
    assert gallery.depth_range(np.zeros((2, 2))) == (0.0, 1.0)
    assert gallery.depth_range(np.array([[0.0, 2.0], [4.0, 10.0]])) == (0.0, 9.4)
    assert gallery.pick_indices(10, 3) == [0, 4, 9]
    assert gallery.pick_indices(2, 3) == [0, 1] and gallery.pick_indices(0, 3) == []
    assert gallery.semantic_from_logits(np.array([[[0.0, 3.0]], [[1.0, 2.0]]]), (1, 14)).tolist() == [[14, 1]]


def test_relation_terms_evaluated_and_skipped_are_counted_and_flagged(sim_root: Path, tmp_path: Path) -> None:
    from taskology.report.runs import relation_usage

    make_arm(tmp_path / "alone", sim_root, "alone")
    make_arm(tmp_path / "collective", sim_root, "collective")
    # depth: evaluated depth_normals at steps 1-2, skipped it at 3-5 and photometric at 5; scale is no relation
    records = [{"step": s, "loss/total": 1.0, "consistency/scale": 1.0,
                **({"consistency/depth_normals": 0.1} if s <= 2 else {"skipped/depth_normals": 1.0}),
                **({"skipped/photometric": 1.0} if s == 5 else {})} for s in range(1, 6)]
    (tmp_path / "collective" / "logs" / "depth.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    usage = relation_usage(read_task_scalars(tmp_path / "collective", "depth"))
    assert usage == {"depth_normals": (2, 3), "photometric": (0, 1)}
    write_report(tmp_path)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| depth | depth_normals | 2 | 3 |" in text and "| depth | photometric | 0 | 1 |" in text
    assert "| normals | depth_normals | 20 | 0 |" in text   # make_arm logs the term at every step
    assert "depth skipped 4 of 6 logged relation terms" in text
    assert "normals skipped" not in text
