#!/usr/bin/env bash
# Create bench/.venv with the pinned Python baseline (diskcache 5.6.3) and
# matplotlib 3.11.2 for bench/plot.py.
# Idempotent: re-running reuses the venv and skips the install if the pin is met.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" >&2
fi

if ! "$PY" -c 'import diskcache, sys; sys.exit(diskcache.__version__ != "5.6.3")' 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check 'diskcache==5.6.3' >&2
fi

if ! "$PY" -c 'import matplotlib, sys; sys.exit(matplotlib.__version__ != "3.11.2")' 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check 'matplotlib==3.11.2' >&2
fi

echo "$PY"
