"""Parallel benchmark jobs: results come back keyed; the first failure stops the others at once."""
from __future__ import annotations

import math
import operator
import time

import pytest

from taskology.bench.parallel import map_in_processes


def test_results_are_keyed_by_job() -> None:
    assert dict(map_in_processes(operator.call, {"a": (math.sqrt, 16.0), "b": (abs, -3)}, workers=2)) == {
        "a": 4.0, "b": 3}


def test_first_failure_cancels_queued_jobs_and_stops_running_ones() -> None:
    jobs = {"fails": (math.sqrt, -1.0), "runs": (time.sleep, 60), "queued": (time.sleep, 60)}
    start = time.monotonic()
    with pytest.raises(ValueError, match="math domain error"):
        list(map_in_processes(operator.call, jobs, workers=2))
    assert time.monotonic() - start < 20  # not the 60 s the running job would take, nor 120 s for both
