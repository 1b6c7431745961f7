#!/usr/bin/env bash
# Set up (or reuse) .venv and run the main job: `taskology demo`. Extra arguments go to the demo.
source "$(dirname "$0")/_env.sh" dev
cd "$ROOT"
exec taskology demo "$@"
