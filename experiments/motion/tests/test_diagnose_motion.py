"""experiments/motion/diagnose_motion.py: its ego steps are the engine's own ego-motion labels, and the
baselines and a checkpoint's per-frame errors are reported from the shards."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diagnose_motion


def test_ego_steps_are_the_translation_of_the_pairs_camera_motion_label(tiny_world) -> None:
    from taskology.config import load_config
    from taskology.data.datasets import FrameDataset
    from taskology.engine.task_data import manifest_for

    manifest = manifest_for(tiny_world.root, load_config("consistency", tiny_world.overrides))
    (sequence,) = manifest.val
    pairs = FrameDataset(manifest, "val", layers=("camera/rgb",), pairs=True)
    steps = diagnose_motion.ego_steps(tiny_world.root, sequence)
    assert steps.shape == (manifest.num_frames[sequence] - 1, 3) == (len(pairs), 3)
    labels = torch.stack([pairs[i]["cam_next_from_cam"][:3, 3] for i in range(len(pairs))])
    torch.testing.assert_close(torch.from_numpy(steps).float(), labels, atol=1e-5, rtol=1e-5)
    assert diagnose_motion.pair_starts([0, 3, 7], 7) == [0, 3]       # frame 7 of 8 starts no pair


def test_baselines_and_a_checkpoints_frames_are_reported(tiny_world, tiny_run, capsys) -> None:
    sets = ["--set=data.test_sequences=1", "--set=data.val_sequences=1"]
    assert diagnose_motion.main(["baselines", str(tiny_world.root), *sets]) == 0
    out = capsys.readouterr().out
    assert "constant (mean labelled step) on the validation pairs:" in out and "unlabelled pairs" in out
    checkpoint = sorted((tiny_run / "checkpoints" / "motion").glob("step_*.pt"))[-1]
    assert diagnose_motion.main(["frames", str(tiny_world.root), str(checkpoint), *sets,
                                 "--set=tasks.motion.width=4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "labelled training pairs", "unlabelled pairs of the training sequences", "validation pairs"]
    assert diagnose_motion.main(["baselines", str(tiny_world.root / "nope")]) == 2
