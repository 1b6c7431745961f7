"""Atomic file writes: a temp file beside the target, fsync, then ``os.replace``.

A file that a reader or a later run trusts (checkpoints, metrics, world records, results, pictures) is
written through here, so a process killed at any point leaves either the old file or the new one, never
half of one, and a write that fails removes its temp file. Temp names start with a dot and carry the
process, the thread and a random part (``.<name>.<pid>-<thread>-<hex>.tmp<suffix>``), so concurrent
writers never share one and globs such as ``step_*.pt`` or ``*.h5`` never match them. The temp file is
created with the process's umask, like the file it replaces. (HDF5 shards have their own writer:
:mod:`taskology.data.writer`.)

A process killed mid-write (SIGKILL, power loss) cannot remove its temp file: that hidden file is the only
possible leftover, the target is untouched, and since no reader or glob looks at temp names it is ignored;
delete it when no writer runs. A write that fails because the device is full (``ENOSPC``, or ``EDQUOT``:
quota reached) raises :class:`DiskFullError`, one line naming the target; the old file is unchanged and the
temp file is removed, which frees the space it took.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = write_json_atomic(d / "a.json", {"b": 1})
    >>> json.loads((d / "a.json").read_text()), sorted(p.name for p in d.iterdir())
    ({'b': 1}, ['a.json'])
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from taskology.errors import TaskologyError

#: the errno values of a write refused for lack of space: device full, quota reached
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(TaskologyError, OSError):
    """A write failed for lack of space (``errno`` ENOSPC or EDQUOT); ``filename`` is the file being written.

    The message is one line naming that file. Nothing under its name changed, and the writer's temp file
    was removed. An ``OSError`` too, so code that handles I/O errors handles this one.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` that is ``exc`` or that it was raised from or while handling, else None
    (``torch.save`` and other writers re-raise the ``OSError`` of a failed write as another error).

    Example:
        >>> try:
        ...     try:
        ...         raise OSError(errno.ENOSPC, "No space left on device")
        ...     except OSError:
        ...         raise RuntimeError("file write failed")
        ... except RuntimeError as exc:
        ...     disk_full_cause(exc).errno == errno.ENOSPC
        True
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def disk_full_error(path: Path, exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` if ``exc`` comes from a full disk (see :func:`disk_full_cause`),
    else None. ``exc`` itself when it already is one.

    Example:
        >>> print(disk_full_error(Path("runs/x/step_00000010.pt"), OSError(errno.ENOSPC, "No space left")))
        runs/x/step_00000010.pt: no space left on device while writing it; nothing was written under that name ...
    """
    if isinstance(exc, DiskFullError):
        return exc
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    reason = os.strerror(cause.errno or errno.ENOSPC)
    return DiskFullError(cause.errno, f"{path}: {reason[:1].lower()}{reason[1:]} while writing it; nothing was "
                                      "written under that name (an existing file is unchanged) and the temp file "
                                      "was removed", str(path))


def temp_path(path: Path) -> Path:
    """A fresh temp name beside ``path`` with the same suffix (so writers that infer a format from it,
    ``savefig`` or ``np.savez``, still do)."""
    path = Path(path)
    tag = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{tag}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for the caller to write; when the block ends without an error,
    fsync the temp file and move it onto ``path``. The temp file is removed whatever happens. A failure
    caused by a full disk, in the block or in the fsync or rename, is raised as :class:`DiskFullError`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("new")
        >>> target.read_text()
        'new'
        >>> try:
        ...     with atomic_path(target) as tmp:
        ...         _ = tmp.write_text("half")
        ...         raise RuntimeError("killed")
        ... except RuntimeError:
        ...     pass
        >>> target.read_text(), len(list(target.parent.iterdir()))
        ('new', 1)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written to the temp file {tmp.name}")
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except Exception as exc:
        full = disk_full_error(path, exc)
        if full is None or full is exc:
            raise
        raise full from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any, default: Callable[[Any], Any] = float, *,
                      sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON (sorted keys unless ``sort_keys=False``) to ``path`` atomically;
    ``default`` turns what JSON cannot hold into what it can (``float``: NumPy scalars)."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n")


def save_figure_atomic(figure: Any, path: Path, **savefig_kwargs: Any) -> Path:
    """``figure.savefig`` (a matplotlib figure) to ``path`` atomically, then close the figure, error or not;
    returns ``path``."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(Path(path)) as tmp:
            figure.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(figure)
    return Path(path)


__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "atomic_path", "disk_full_cause", "disk_full_error",
           "save_figure_atomic", "temp_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic"]

