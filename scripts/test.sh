#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole suite, Docker tests included.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
VENV="${AGENT_RL_VENV:-$ROOT/.venv}"
# pytest exits 5 when it collected nothing; set -e turns that into a failure, as it should be.
exec "$VENV/bin/python" -m pytest "$@"
