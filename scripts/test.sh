#!/usr/bin/env bash
# Set up (or reuse) .venv and run the test suite. Extra arguments go to pytest.
# Tests run in parallel processes (pytest-xdist, one per core, at most 4); an idle process takes tests queued for
# a busy one (--dist worksteal: the long cluster tests do not pile up at the end). TASKOLOGY_TEST_WORKERS=0 runs
# them in this process (e.g. under a debugger).
source "$(dirname "$0")/_env.sh" dev
cd "$ROOT"
WORKERS="${TASKOLOGY_TEST_WORKERS:-$(python -c 'import os; print(min(len(os.sched_getaffinity(0)), 4))')}"
exec python -m pytest -n "$WORKERS" --dist worksteal "$@"
