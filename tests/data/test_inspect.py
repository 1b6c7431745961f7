"""``taskology inspect`` and the frame preview PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from taskology.cli import cli
from taskology.data.inspect import inspect_command, summarize
from taskology.data.preview import box_corners_bev, colorize_semantic, render_frame_png
from taskology.data.splits import make_splits
from taskology.errors import DataError


def test_summary_of_directory(dataset_root: Path) -> None:
    make_splits(dataset_root, {"depth": 0.25, "motion": 0.5}, pairs=("motion",), test_sequences=1, seed=0)
    (dataset_root / ".seq9.h5.tmp-1-ab").write_bytes(b"x")
    summary = summarize(dataset_root)
    assert [s.sequence_id for s in summary.shards] == [f"seq{i:04d}" for i in range(5)]
    assert all(s.checksums == "ok" and s.num_frames == 6 for s in summary.shards)
    first = summary.shards[0]
    assert first.layers["camera/rgb"]["shape"] == (6, 32, 96, 3) and first.layers["camera/rgb"]["fletcher32"]
    assert first.layers["camera/depth"]["dtype"] == "float32"
    assert summary.splits is not None and summary.splits["frames"] == {"train": 12, "mediator": 12, "test": 6}
    assert summary.splits["tasks"]["depth"]["labeled_frames"] == 3
    assert [p.name for p in summary.stale_temp_files] == [".seq9.h5.tmp-1-ab"]


def test_cli_inspect_prints_tables_and_writes_png(dataset_root: Path, tmp_path: Path) -> None:
    make_splits(dataset_root, {"depth": 0.25}, test_sequences=1, seed=0)
    out = tmp_path / "frame.png"
    result = CliRunner().invoke(cli, ["inspect", str(dataset_root), "--png", str(out), "--frame", "2"])
    assert result.exit_code == 0, result.output
    for text in ("5 shard(s), 30 frames", "camera/normals", "fletcher32", "seq0004", "label fractions", "depth"):
        assert text in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_reports_corrupt_shard_and_fails(dataset_root: Path) -> None:
    victim = dataset_root / "seq0003.h5"
    data = bytearray(victim.read_bytes())
    victim.write_bytes(bytes(data[: len(data) // 3]))
    summary = summarize(dataset_root)
    assert [s.sequence_id for s in summary.failed] == ["?"] and "seq0003.h5" in str(summary.failed[0].error)
    result = CliRunner().invoke(cli, ["inspect", str(dataset_root)])
    assert result.exit_code == DataError.exit_code
    assert "seq0003.h5" in result.output and "1 of 5" in result.output
    with pytest.raises(DataError, match="no such"):
        inspect_command(dataset_root / "missing")


def test_png_pixels(shard_path: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    out = render_frame_png(shard_path, 1, tmp_path / "p.png")
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.1  # not a blank canvas
    with pytest.raises(DataError, match="frame 9"):
        render_frame_png(shard_path, 9, tmp_path / "q.png")


def test_semantic_palette_and_box_corners() -> None:
    colours = colorize_semantic(np.array([[1, 14], [11, 200]], np.uint8))
    assert colours[0, 0].tolist() == [128, 64, 128]  # road
    assert colours[0, 1].tolist() == [0, 0, 142]     # car
    assert colours[1, 0].tolist() == [70, 130, 180]  # sky
    corners = box_corners_bev(np.array([[10.0, 5.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]]))
    # yaw 90 deg: length along +y; footprint spans x 9..11, y 3..7
    assert np.allclose(np.sort(corners[0, :, 0]), [9, 9, 11, 11]) and np.allclose(np.sort(corners[0, :, 1]), [3, 3, 7, 7])
