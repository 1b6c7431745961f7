"""``taskology.atomic``: a write either lands whole or not at all, leaves no temp file, and never mixes
two writers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from taskology.atomic import atomic_path, temp_path, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path) -> None:
    target = write_text_atomic(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_block_that_writes_nothing_is_an_error_and_changes_nothing(tmp_path) -> None:
    target = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target):
            pass
    assert target.read_text() == "old"


def test_temp_names_are_hidden_keep_the_suffix_and_differ_per_call(tmp_path) -> None:
    names = {temp_path(tmp_path / "step_00000100.pt").name for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(".step_00000100.pt.") and n.endswith(".tmp.pt") for n in names)
    assert not list(tmp_path.glob("step_*.pt"))  # nothing was created


def test_files_take_the_umask_like_any_other_file(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "x.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"\x00\x01"
    assert path.stat().st_mode & 0o777 == 0o644


def test_json_holds_numpy_scalars_and_sorts_keys_unless_asked_not_to(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "m.json", {"b": np.float32(0.5), "a": 1})
    assert path.read_text() == '{\n  "a": 1,\n  "b": 0.5\n}\n'
    write_json_atomic(path, {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(path.read_text())) == ["b", "a"]


def test_concurrent_writers_of_one_file_never_mix(tmp_path) -> None:
    target = tmp_path / "shared.json"
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                write_json_atomic(target, {"writer": k, "i": i, "pad": [k] * 2000})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    record = json.loads(target.read_text())
    assert record["pad"] == [record["writer"]] * 2000
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


_KILLED_WRITER = """
import sys
from pathlib import Path
from taskology.atomic import write_json_atomic
target = Path(sys.argv[1])
i = 0
while True:
    write_json_atomic(target, {"i": i, "pad": [i] * 200000})
    i += 1
"""


def test_a_writer_killed_at_any_point_leaves_a_whole_file(tmp_path) -> None:
    """SIGKILL a process that rewrites a large JSON file in a loop, five times at different moments:
    the file always parses and is one write's content, never a mix or a prefix."""
    target = write_json_atomic(tmp_path / "record.json", {"i": -1, "pad": [-1] * 200000})
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        record = json.loads(target.read_text())
        assert record["pad"] == [record["i"]] * 200000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "record.json"]
    # a killed writer may leave its hidden temp file (no process is left to remove it), never a visible one
    assert all(name.startswith(".record.json.") and name.endswith(".tmp.json") for name in leftovers)


def test_a_figure_is_saved_whole_or_not_at_all_and_closed_either_way(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taskology.atomic import save_figure_atomic

    target = tmp_path / "plot.png"
    fig = plt.figure()
    assert save_figure_atomic(fig, target, dpi=20) == target
    first = target.read_bytes()
    assert first.startswith(b"\x89PNG") and not plt.fignum_exists(fig.number)
    broken = plt.figure()
    with pytest.raises(ValueError):
        save_figure_atomic(broken, target, format="no-such-format")
    assert target.read_bytes() == first and list(tmp_path.iterdir()) == [target]  # old file kept, no temp left
    assert not plt.fignum_exists(broken.number)
