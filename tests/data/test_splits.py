"""Splits manifest: determinism, disjointness, label fractions, atomic save and validated load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskology.data.splits import MANIFEST_NAME, SplitManifest, make_splits
from taskology.errors import ConfigError, DataError

TASKS = {"depth": 0.2, "normals": 0.5, "motion": 0.3, "detection": 0.0}
PAIRS = ("motion",)  # its labels are drawn pair by pair


def test_same_seed_same_manifest_other_seed_differs(dataset_root: Path) -> None:
    a = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, mediator_fraction=0.5, seed=7, write=False)
    b = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, mediator_fraction=0.5, seed=7, write=False)
    c = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, mediator_fraction=0.5, seed=8, write=False)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


def test_splits_disjoint_and_cover_everything(dataset_root: Path) -> None:
    m = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, mediator_fraction=0.5, seed=1)
    assert len(m.test) == 2 and len(m.files) == 5
    train, mediator, test = set(m.frames("train")), set(m.frames("mediator")), set(m.frames("test"))
    assert not train & mediator and not train & test and not mediator & test
    assert {s for s, _ in train | mediator}.isdisjoint(m.test)
    assert len(train | mediator | test) == 5 * 6  # every frame is in exactly one split
    for s, frames in m.mediator.items():  # one contiguous block of round(0.5 * 6) frames
        assert len(frames) == 3 and list(frames) == list(range(frames[0], frames[0] + 3))


def test_label_masks(dataset_root: Path) -> None:
    m = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, mediator_fraction=0.5, seed=3)
    n_train = len(m.frames("train"))  # 4 sequences x 3 frames
    assert n_train == 12
    assert len(m.labeled_frames("depth")) == round(0.2 * 12)
    assert len(m.labeled_frames("normals")) == 6
    assert m.labeled_frames("detection") == []
    train = set(m.frames("train"))
    for task in TASKS:
        assert set(m.labeled_frames(task)) <= train
    motion = set(m.labeled_frames("motion"))  # a pair task: every labeled frame has a labeled neighbour
    assert len(motion) >= round(0.3 * 12)
    assert all((s, f + 1) in motion or (s, f - 1) in motion for s, f in motion)
    assert m.label_fraction("normals") == pytest.approx(0.5)
    # adding a task does not redraw the others
    more = make_splits(dataset_root, {**TASKS, "segmentation": 0.1}, pairs=PAIRS, test_sequences=1, mediator_fraction=0.5,
                       seed=3, write=False)
    assert more.labels["depth"] == m.labels["depth"] and more.labels["motion"] == m.labels["motion"]


def test_tiny_fraction_still_labels_one_frame(dataset_root: Path) -> None:
    m = make_splits(dataset_root, {"depth": 0.001}, test_sequences=1, seed=0, write=False)
    assert len(m.labeled_frames("depth")) == 1


def test_save_load_round_trip_and_no_silent_overwrite(dataset_root: Path) -> None:
    m = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, seed=0)
    assert (dataset_root / MANIFEST_NAME).exists()
    assert not [p for p in dataset_root.iterdir() if ".tmp" in p.name]
    loaded = SplitManifest.load(dataset_root)
    assert loaded.to_json() == m.to_json()
    make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, seed=0)  # identical: fine
    with pytest.raises(DataError, match="different splits manifest"):
        make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, seed=5)
    make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, seed=5, overwrite=True)
    assert SplitManifest.load(dataset_root).seed == 5


def test_load_rejects_overlapping_or_leaking_manifest(dataset_root: Path) -> None:
    m = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=1, seed=0)
    data = json.loads(m.path.read_text())
    seq = sorted(data["train"])[0]
    data["mediator"][seq] = data["mediator"][seq] + [data["train"][seq][0]]
    m.path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="both train and mediator"):
        SplitManifest.load(dataset_root)
    data = m.to_json()
    data["labels"]["depth"][seq] = list(data["mediator"][seq][:1])
    m.path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="labels on non-train frames"):
        SplitManifest.load(dataset_root)
    m.path.write_text("{not json")
    with pytest.raises(DataError, match=MANIFEST_NAME):
        SplitManifest.load(dataset_root)


def test_bad_arguments(dataset_root: Path) -> None:
    with pytest.raises(ConfigError, match="pairs names tasks without a label fraction: \\['motion'\\]"):
        make_splits(dataset_root, {"depth": 0.1}, pairs=("motion",), write=False)
    with pytest.raises(ConfigError):
        make_splits(dataset_root, {"depth": 1.5}, write=False)
    with pytest.raises(DataError, match="test_sequences"):
        make_splits(dataset_root, {"depth": 0.1}, test_sequences=5, write=False)


def test_validation_sequences_are_held_out_and_leave_test_unchanged(dataset_root: Path) -> None:
    plain = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, seed=4, write=False)
    m = make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, val_sequences=1, seed=4, write=False)
    assert m.test == plain.test and len(m.val) == 1 and not set(m.val) & set(m.test)
    train, mediator, val, test = (set(m.frames(s)) for s in ("train", "mediator", "val", "test"))
    assert {s for s, _ in val} == set(m.val) and len(val) == 6
    assert not (train | mediator) & val and len(train | mediator | val | test) == 5 * 6
    assert "val" not in plain.to_json()  # manifests without a val split are written as before
    m.save()
    assert SplitManifest.load(dataset_root).val == m.val
    data = json.loads((dataset_root / MANIFEST_NAME).read_text())
    data["val"] = [data["test"][0]]
    (dataset_root / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(DataError, match="both val and test"):
        SplitManifest.load(dataset_root)
    with pytest.raises(DataError, match="val_sequences must be in 0..2"):
        make_splits(dataset_root, TASKS, pairs=PAIRS, test_sequences=2, val_sequences=3, write=False)


def test_save_if_absent_never_replaces_a_manifest_written_meanwhile(dataset_root: Path) -> None:
    first = make_splits(dataset_root, {"depth": 0.5}, seed=2, write=False)
    second = make_splits(dataset_root, {"depth": 0.1}, seed=2, write=False)
    assert first.save(if_absent=True) is True
    assert second.save(if_absent=True) is False            # a concurrent run lost the race: no error
    assert SplitManifest.load(dataset_root).label_fractions == {"depth": 0.5}
    assert not list(dataset_root.glob(f".{MANIFEST_NAME}.tmp*"))
