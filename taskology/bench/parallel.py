"""Running a benchmark's independent training jobs in parallel processes (spawned, one per core).

Example:
    >>> sorted(map_in_processes(pow, {"a": (2, 3), "b": (3, 2)}, workers=1))
    [('a', 8), ('b', 9)]
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Hashable, Iterator, Mapping


def map_in_processes(fn: Callable[..., Any], jobs: Mapping[Hashable, tuple[Any, ...]], workers: int
                     ) -> Iterator[tuple[Hashable, Any]]:
    """``fn(*args)`` for every job, ``workers`` processes at a time; yields ``(key, result)`` as jobs finish.

    The first failing job stops the rest: queued jobs are cancelled, running ones terminated, and its
    exception is raised (instead of surfacing only after every other job has run)."""
    pool = ProcessPoolExecutor(max_workers=max(1, int(workers)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(fn, *args): key for key, args in jobs.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):  # no public API to stop running jobs
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
