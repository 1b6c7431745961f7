"""``taskology.atomic``: a write either lands whole or not at all, leaves no temp file, and never mixes
two writers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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


#: a child that rewrites ``target`` with ``size`` bytes of ``b"N"`` through atomic_path, writes ``offset``
#: bytes, says so on stdout and waits to be killed; ``offset == -1``: after the whole write (renamed)
_KILLED_WRITER = """
import os, sys
from pathlib import Path
from taskology.atomic import atomic_path
target, size, offset = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
new = b"N" * size
with atomic_path(target) as tmp:
    with open(tmp, "wb") as handle:
        handle.write(new[:max(offset, 0)])
        handle.flush()
        if offset >= 0:
            os.write(1, b"R")  # inside the atomic write, ``offset`` bytes in the temp file
            sys.stdin.read()  # wait for SIGKILL
        handle.write(new[max(offset, 0):])
os.write(1, b"D")  # the write is done: the target holds the new content
sys.stdin.read()
"""


@pytest.mark.parametrize("offset", [0, 1, 4096, 150_000, 299_999, 300_000, -1],
                         ids=["nothing written", "1 byte", "4 KiB", "mid-file", "1 byte short",
                              "all bytes before the rename", "after the rename"])
def test_a_writer_killed_at_any_point_leaves_a_whole_file(tmp_path: Path, offset: int) -> None:
    """SIGKILL a writer once it reports ``offset`` bytes written inside the atomic write (read from a pipe,
    no sleeping): the target is the whole old content, or the whole new one once the write has finished,
    never a mix or a prefix; the only leftover is the killed writer's hidden temp file holding exactly the
    bytes it had written, which no glob of the target's name matches."""
    import select

    size = 300_000
    target = write_bytes_atomic(tmp_path / "record.bin", b"O" * size)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), str(size), str(offset)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "the writer never reported its progress"
        said = proc.stdout.read(1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        proc.stdin.close()
        proc.stdout.close()
    assert said == (b"D" if offset < 0 else b"R")
    assert target.read_bytes() == (b"N" * size if offset < 0 else b"O" * size)
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    if offset < 0:
        assert leftovers == []
    else:
        assert len(leftovers) == 1
        name = leftovers[0].name
        assert name.startswith(f".record.bin.{proc.pid}-") and name.endswith(".tmp.bin")
        assert leftovers[0].read_bytes() == b"N" * offset
        assert [p.name for p in tmp_path.glob("record*")] == ["record.bin"]
        leftovers[0].unlink()  # safe once no writer runs (the module docstring)


def test_a_write_that_finds_the_disk_full_is_one_line_naming_the_target(tmp_path: Path) -> None:
    """ENOSPC part-way through (after bytes reached the temp file), raised as it is or wrapped the way
    ``torch.save`` wraps it: a DiskFullError naming the target; old file kept, temp removed."""
    import errno

    from taskology.atomic import DiskFullError
    from taskology.errors import TaskologyError

    target = write_bytes_atomic(tmp_path / "state.bin", b"old")
    for wrapped in (False, True):
        with pytest.raises(DiskFullError) as info:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as handle:
                    handle.write(b"x" * 10_000)
                    handle.flush()
                    try:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    except OSError:
                        if not wrapped:
                            raise
                        raise RuntimeError("[enforce fail at inline_container.cc] file write failed")
        exc = info.value
        assert isinstance(exc, OSError) and isinstance(exc, TaskologyError) and exc.errno == errno.ENOSPC
        assert str(exc) == (f"{target}: no space left on device while writing it; nothing was written under that "
                            "name (an existing file is unchanged) and the temp file was removed")
        assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.bin"]
    with pytest.raises(OSError) as other:  # any other I/O error stays what it is
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise OSError(errno.EIO, "I/O error")
    assert type(other.value) is OSError and target.read_bytes() == b"old"


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
