"""scripts/neighbour_labels_oracle.py: the upper bound on label propagation widens exactly the labelled frames
it names, within the train frames, and nothing else."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from taskology.data.splits import SplitManifest
from taskology.errors import DataError

_SPEC = importlib.util.spec_from_file_location(
    "neighbour_labels_oracle", Path(__file__).parents[2] / "scripts" / "neighbour_labels_oracle.py")
oracle = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(oracle)


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


def test_jobs_run_one_after_another_in_one_process_each_widen_the_unpatched_manifest(tmp_path: Path, monkeypatch) -> None:
    # a pool process reuses its interpreter: a +-1 job followed by a +-2 job must train on +-2, not +-3
    import taskology.bench.consistency as consistency
    import taskology.engine.store_data as store_data

    monkeypatch.setattr(store_data, "manifest_for", lambda root, config: _manifest(tmp_path))
    monkeypatch.setattr(consistency, "_arm_config", lambda *args: None)
    monkeypatch.setattr(oracle, "_PLAIN", {})
    seen = []

    def fake_run(*args):
        seen.append(store_data.manifest_for(None, None).labels["segmentation"])
        return {"segmentation": {"miou": 0.5}}, 1.0

    monkeypatch.setattr(consistency, "_one_run", fake_run)
    counts = [oracle._run("p", "r", 0.02, 0, k, "d", "val")["labelled_frames"] for k in (1, 2, 0)]
    assert counts == [7, 10, 3]
    assert seen[2] == {"a": (2, 8), "b": (0,)}


def test_bad_arguments_get_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    preset = Path(__file__).parents[2] / "configs" / "consistency-cpu.yaml"
    assert oracle.main([str(tmp_path / "nope.yaml"), str(tmp_path / "out")]) == 2
    assert oracle.main([str(preset), str(tmp_path / "out"), "--fraction", "2"]) == 2
    assert oracle.main([str(preset), str(tmp_path / "out"), "--k", "-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"neighbour_labels_oracle: no such preset {tmp_path / 'nope.yaml'}",
                     "neighbour_labels_oracle: --fraction must be in (0, 1], found 2.0",
                     "neighbour_labels_oracle: --k must be >= 0, found -1"]
    assert not (tmp_path / "out").exists()
