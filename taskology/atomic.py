"""Atomic file writes: a temp file beside the target, fsync, then ``os.replace``.

A file that a reader or a later run trusts (checkpoints, metrics, world records, results, pictures) is
written through here, so a process killed at any point leaves either the old file or the new one, never
half of one, and a write that fails removes its temp file. Temp names start with a dot and carry the
process, the thread and a random part (``.<name>.<pid>-<thread>-<hex>.tmp<suffix>``), so concurrent
writers never share one and globs such as ``step_*.pt`` or ``*.h5`` never match them. The temp file is
created with the process's umask, like the file it replaces. (HDF5 shards have their own writer:
:mod:`taskology.data.writer`.)

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = write_json_atomic(d / "a.json", {"b": 1})
    >>> json.loads((d / "a.json").read_text()), sorted(p.name for p in d.iterdir())
    ({'b': 1}, ['a.json'])
"""
from __future__ import annotations

import json
import os
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def temp_path(path: Path) -> Path:
    """A fresh temp name beside ``path`` with the same suffix (so writers that infer a format from it,
    ``savefig`` or ``np.savez``, still do)."""
    path = Path(path)
    tag = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{tag}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for the caller to write; when the block ends without an error,
    fsync the temp file and move it onto ``path``. The temp file is removed whatever happens.

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


__all__ = ["atomic_path", "save_figure_atomic", "temp_path", "write_bytes_atomic", "write_text_atomic",
           "write_json_atomic"]

