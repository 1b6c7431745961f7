"""A cached simulated world: a folder of shards plus ``world.json``, the record that says what made them.

A benchmark or the demo simulates its world once and reuses the folder on later runs. Reusing it by
its name alone is unsafe: a folder simulated by older simulator code looks the same as one simulated
today, and results trained on the two are silently incomparable (this happened: experiments/consistency/README.md,
"The data root"). So the folder carries a record:

- ``simulator``: a fingerprint of the code and library versions that make shards
  (:func:`simulator_fingerprint`);
- ``shards``: per shard file, the digest of its content (:func:`shard_digest`: every dataset's name,
  dtype, shape and values, and the file's attributes) with the file's size and mtime, so an unchanged
  file is not read again;
- ``digest``: one digest over all shard digests, the world's identity (benchmarks record it).

On reuse (:func:`ensure_world`):

- another ``spec`` (the world's parameters) in the record: the folder is set aside as below;
- same fingerprint: each shard's size and mtime are checked (its content re-digested where they
  changed; a shard whose content changed is set aside and simulated again);
- other fingerprint, or a folder from before records (no ``world.json``): the lowest-numbered
  existing shard is simulated again into a scratch folder by today's code and compared by digest.
  Equal: the code change did not change the world; the record is updated and the folder reused.
  Different: the whole folder is moved aside (``<name>.stale-<digest>``, nothing deleted) and the
  world simulated afresh.

Shards that are missing are simulated; the record is rewritten atomically after each (after all of them
with a bulk ``make_missing``; shards a stopped run left unrecorded are digested and adopted next time). Runs that ensure
one folder at the same time take turns (an advisory lock, ``.<name>.lock`` beside the folder): the
first checks or simulates, the others then find it ready.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from taskology.atomic import write_json_atomic
from taskology.errors import DataError

RECORD = "world.json"
RECORD_VERSION = 1
#: files (relative to the package root) whose code decides a shard's content, besides ``sim/*.py``.
SIMULATOR_FILES = ("data/writer.py", "data/schema.py", "data/labels.py", "geometry/camera.py")
#: libraries whose version can change a shard's content (random streams, ray casting, storage).
SIMULATOR_LIBRARIES = ("numpy", "h5py", "trimesh", "embreex")


class CachedWorld(NamedTuple):
    """A ready world folder and its identity."""

    root: Path
    digest: str       #: 16 hex digits over every shard's content
    simulated: int    #: shards simulated by this call (0: all reused)


def simulator_fingerprint() -> str:
    """16 hex digits over the source of the simulator (``taskology/sim/*.py`` but this module, and
    :data:`SIMULATOR_FILES`) and the versions of :data:`SIMULATOR_LIBRARIES`."""
    from importlib import metadata

    package = Path(__file__).resolve().parents[1]
    files = sorted(p for p in package.glob("sim/*.py") if p.name != "cache.py") + [package / n for n in SIMULATOR_FILES]
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    for name in SIMULATOR_LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "<absent>"
        h.update(f"{name}=={version}\0".encode())
    return h.hexdigest()[:16]


def shard_digest(path: Path) -> str:
    """16 hex digits over a shard's content: its attributes and every dataset (name, dtype, shape,
    values), in name order. Independent of the file's layout, chunking, compression and timestamps.

    Raises :class:`DataError` naming the file when it cannot be read.
    """
    import h5py
    import numpy as np

    h = hashlib.sha256()
    try:
        with h5py.File(path, "r") as f:
            for key in sorted(f.attrs):
                h.update(f"attr {key}={np.asarray(f.attrs[key]).tolist()!r}\0".encode())
            names: list[str] = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            for name in sorted(names):
                values = np.ascontiguousarray(f[name][()])
                h.update(f"data {name} {values.dtype.str} {values.shape}\0".encode())
                h.update(values.tobytes())
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read shard to digest it: {exc}") from exc
    return h.hexdigest()[:16]


def world_digest(shard_digests: dict[str, str]) -> str:
    """16 hex digits over the shards' names and digests (the world's identity).

    Example:
        >>> world_digest({"a.h5": "1", "b.h5": "2"}) == world_digest({"b.h5": "2", "a.h5": "1"})
        True
    """
    text = "\n".join(f"{name} {digest}" for name, digest in sorted(shard_digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def read_record(root: Path) -> dict[str, Any] | None:
    """The world record of ``root``, or None where it has none. Raises :class:`DataError` for a record
    that is not one (unreadable JSON, another version, missing keys)."""
    path = Path(root) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable world record ({exc}); delete it to check the folder again") from exc
    if (not isinstance(record, dict) or record.get("version") != RECORD_VERSION
            or not isinstance(record.get("shards"), dict) or not isinstance(record.get("simulator"), str)
            or not isinstance(record.get("spec"), dict)):
        raise DataError(f"{path}: not a world record of version {RECORD_VERSION}; delete it to check the folder again")
    return record


def recorded_world(root: Path | str) -> str | None:
    """The world digest recorded in ``root`` (None where the folder has no readable record)."""
    try:
        record = read_record(Path(root))
    except DataError:
        return None
    return record.get("digest") if record is not None else None


def _write_record(root: Path, spec: dict[str, Any], simulator: str, shards: dict[str, dict[str, Any]]) -> None:
    digests = {name: entry["digest"] for name, entry in shards.items()}
    write_json_atomic(Path(root) / RECORD, {"version": RECORD_VERSION, "spec": spec, "simulator": simulator,
                                            "digest": world_digest(digests), "updated": time.time(),
                                            "shards": dict(sorted(shards.items()))})


def _set_aside(path: Path, why: str, say: Callable[[str], None]) -> Path:
    """Move ``path`` (a file or folder) to ``<name>.stale-<n>`` beside it; nothing is deleted."""
    n = 0
    while (target := path.with_name(f"{path.name}.stale-{n}")).exists():
        n += 1
    os.replace(path, target)
    say(f"{path}: {why}; moved to {target}")
    return target


def ensure_world(root: Path, spec: dict[str, Any], shard_names: list[str],
                 make_shard: Callable[[Path, int], Path], say: Callable[[str], None] = print,
                 make_missing: Callable[[Path, list[int]], None] | None = None) -> CachedWorld:
    """Make ``root`` hold the world described by ``spec`` (see the module docstring) and return it.

    Args:
        root: the world's folder (created if needed).
        spec: JSON-able description of the world (simulation parameters); a folder recorded with
            another spec holds another world and is set aside.
        shard_names: file name of shard ``i`` at position ``i``.
        make_shard: ``make_shard(folder, i)`` simulates shard ``i`` into ``folder`` (not overwriting) and
            returns its path.
        say: where one-line notices go (set-asides, checks).
        make_missing: optional bulk simulator ``make_missing(root, indices)`` (e.g. with a progress bar);
            default: ``make_shard`` for each.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.with_name(f".{root.name}.lock")):  # concurrent runs on one root: one checks, the rest wait
        return _ensure_world(root, spec, shard_names, make_shard, say, make_missing)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``path``, held for the block."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_world(root: Path, spec: dict[str, Any], shard_names: list[str], make_shard: Callable[[Path, int], Path],
                  say: Callable[[str], None], make_missing: Callable[[Path, list[int]], None] | None) -> CachedWorld:
    spec = json.loads(json.dumps(spec, sort_keys=True))  # tuples -> lists, as read back from the record
    fingerprint = simulator_fingerprint()
    record = read_record(root) if root.is_dir() else None
    if record is not None and record["spec"] != spec:
        keys = sorted(k for k in set(spec) | set(record["spec"]) if spec.get(k) != record["spec"].get(k))
        _set_aside(root, f"holds another world (its {', '.join(keys)} differ)", say)
        record = None
    existing = [i for i, name in enumerate(shard_names) if (root / name).is_file()]
    shards: dict[str, dict[str, Any]] = {}
    if record is not None:
        # recorded shards beyond ``shard_names`` (a dataset made larger before) stay part of the world
        shards = {name: entry for name, entry in record["shards"].items() if (root / name).is_file()}
        for name, entry in list(shards.items()):  # content check where size or mtime moved
            if _stat_key(root / name) != entry.get("stat"):
                try:
                    digest = shard_digest(root / name)
                except DataError:
                    digest = None
                if digest != entry["digest"]:
                    _set_aside(root / name, "content differs from the world record", say)
                    del shards[name]
                    if name in shard_names:
                        existing.remove(shard_names.index(name))
                else:
                    entry["stat"] = _stat_key(root / name)
    if existing and (record is None or record["simulator"] != fingerprint):
        probe = existing[0]
        name = shard_names[probe]
        try:
            old = shards[name]["digest"] if name in shards else shard_digest(root / name)
        except DataError:
            old = None
        with tempfile.TemporaryDirectory(prefix=".world-check-", dir=root) as scratch:
            new = shard_digest(make_shard(Path(scratch), probe))
        why = "made before world records" if record is None else "made by other simulator code"
        if old != new:
            _set_aside(root, f"{why}, and today's code simulates {name} differently", say)
            existing, shards = [], {}
        else:
            say(f"{root}: {why}; today's code simulates {name} identically, reusing the folder")
    root.mkdir(parents=True, exist_ok=True)
    for i in existing:  # shards the record lacks (a run stopped while simulating): adopted if they read
        n = shard_names[i]
        if n not in shards:
            try:
                shards[n] = {"digest": shard_digest(root / n), "stat": _stat_key(root / n)}
            except DataError:
                _set_aside(root / n, "unreadable", say)
    _write_record(root, spec, fingerprint, shards)
    todo = [i for i in range(len(shard_names)) if shard_names[i] not in shards]
    def add(i: int) -> None:
        n = shard_names[i]
        if not (root / n).is_file():
            raise DataError(f"{root / n}: not written by the simulator")
        shards[n] = {"digest": shard_digest(root / n), "stat": _stat_key(root / n)}

    if make_missing is not None and todo:
        make_missing(root, todo)  # a run stopped inside leaves shards the next one adopts (above)
        for i in todo:
            add(i)
        _write_record(root, spec, fingerprint, shards)
    else:
        for i in todo:
            make_shard(root, i)
            add(i)
            _write_record(root, spec, fingerprint, shards)
    digests = {name: entry["digest"] for name, entry in shards.items()}
    return CachedWorld(root, world_digest(digests), len(todo))


__all__ = ["CachedWorld", "ensure_world", "simulator_fingerprint", "shard_digest", "world_digest", "read_record",
           "recorded_world", "RECORD"]
