#!/usr/bin/env bash
# Set up (or reuse) .venv and run the test suite. Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh" dev
cd "$ROOT"
exec python -m pytest "$@"
