"""experiments/segmentation/neighbour_labels_oracle.py: the upper bound on label propagation widens exactly the labelled frames
it names, within the train frames, and nothing else."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from taskology.data.splits import SplitManifest
from taskology.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import neighbour_labels_oracle as oracle


def _manifest(tmp_path: Path) -> SplitManifest:
    # sequence "a": 10 frames, mediator block 3..5; "b": 4 frames, all train; "t": test
    return SplitManifest(root=tmp_path, seed=0, files={"a": "a.h5", "b": "b.h5", "t": "t.h5"},
                         num_frames={"a": 10, "b": 4, "t": 5}, test=("t",),
                         train={"a": (0, 1, 2, 6, 7, 8, 9), "b": (0, 1, 2, 3)}, mediator={"a": (3, 4, 5), "b": ()},
                         labels={"segmentation": {"a": (2, 8), "b": (0,)}, "depth": {"a": (2,), "b": ()}},
                         label_fractions={"segmentation": 0.3, "depth": 0.1}, mediator_fraction=0.3, val=())


def test_neighbours_are_added_within_the_train_frames_only(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    one = oracle.with_neighbour_labels(manifest, "segmentation", 1)
    assert one.labels["segmentation"] == {"a": (1, 2, 7, 8, 9), "b": (0, 1)}      # 3 is a mediator frame, -1 none
    two = oracle.with_neighbour_labels(manifest, "segmentation", 2)
    assert two.labels["segmentation"] == {"a": (0, 1, 2, 6, 7, 8, 9), "b": (0, 1, 2)}
    assert one.labels["depth"] == manifest.labels["depth"]                          # other tasks keep theirs
    assert manifest.labels["segmentation"] == {"a": (2, 8), "b": (0,)}              # the input is not changed
    assert oracle.with_neighbour_labels(manifest, "segmentation", 0) is manifest


def test_a_manifest_that_breaks_its_own_rules_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    manifest.labels["segmentation"]["a"] = (4,)                                     # a mediator frame
    with pytest.raises(DataError, match="non-train frames"):
        oracle.with_neighbour_labels(manifest, "segmentation", 1)


def test_a_widened_root_reads_the_same_shards_with_the_widened_labels_and_trains_on_them(tiny_world, tmp_path) -> None:
    from taskology.engine.task_data import manifest_for
    from taskology.experiment import arm_config
    from taskology.sim.cache import recorded_world

    config = arm_config("consistency", 0.1, "alone", data_root=tiny_world.root,
                        overrides=[*oracle.OTHERS_OFF, *tiny_world.overrides])
    plain = manifest_for(tiny_world.root, config)
    assert oracle.widened_root(tiny_world.root, config, 0, tmp_path / "k0") == tiny_world.root.resolve()
    assert not (tmp_path / "k0").exists()
    root = oracle.widened_root(tiny_world.root, config, 1, tmp_path / "k1")
    assert oracle.widened_root(tiny_world.root, config, 1, tmp_path / "k1") == root      # again: the same folder
    widened = manifest_for(root, config)                                                 # the engine's own reading
    assert widened.labels["segmentation"] == oracle.with_neighbour_labels(plain, "segmentation", 1).labels["segmentation"]
    assert (widened.train, widened.mediator, widened.val, widened.test) == (plain.train, plain.mediator, plain.val, plain.test)
    assert all((root / f).is_symlink() for f in plain.files.values()) and recorded_world(root) == recorded_world(tiny_world.root)
    count = sum(map(len, widened.labels["segmentation"].values()))
    assert count > sum(map(len, plain.labels["segmentation"].values()))
    record = oracle.run_one("consistency", str(root), 0.1, 0, str(tmp_path / "run"), "val", tuple(tiny_world.overrides))
    assert record["labelled_frames"] == count and 0.0 <= record["metrics"]["miou"] <= 1.0


def test_bad_arguments_get_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert oracle.main(["nope.yaml", str(tmp_path / "out")]) == 2
    assert oracle.main(["consistency", str(tmp_path / "out"), "--fraction", "2"]) == 2
    assert oracle.main(["consistency", str(tmp_path / "out"), "--k", "-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("neighbour_labels_oracle: nope.yaml: no such config file")
    assert lines[1:] == ["neighbour_labels_oracle: --fraction must be in (0, 1], found 2.0",
                         "neighbour_labels_oracle: --k must be >= 0, found -1"]
    assert not (tmp_path / "out").exists()
