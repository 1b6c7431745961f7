# Sourced by scripts/demo.sh and scripts/test.sh: create or reuse .venv and install taskology into it.
# CPU-only machines get the CPU build of torch via constraints/cpu.txt; machines with an NVIDIA GPU
# (nvidia-smi works) get the default (CUDA) torch from the package index.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TASKOLOGY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "taskology needs Python >= 3.10, found " + sys.version' || exit 1
if [ ! -x "$VENV/bin/python" ]; then
  echo "[taskology] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
EXTRAS="${1:-dev}"
PIP_ARGS=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOUR=gpu
else
  FLAVOUR=cpu
  PIP_ARGS+=(-c "$ROOT/constraints/cpu.txt")
  if [ -n "${TASKOLOGY_TORCH_INDEX:-}" ]; then PIP_ARGS+=(--extra-index-url "$TASKOLOGY_TORCH_INDEX"); fi
fi
STAMP="$VENV/.taskology-installed"
WANT="$FLAVOUR $EXTRAS $(cat "$ROOT/pyproject.toml" "$ROOT/constraints/cpu.txt" | cksum)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[taskology] installing taskology[$EXTRAS] ($FLAVOUR torch) into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${PIP_ARGS[@]}" -e "$ROOT[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
