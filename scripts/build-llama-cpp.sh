#!/usr/bin/env bash
# Build llama-cpp-python[server] from its PyPI sdist once, cache the wheel, install it into the
# venv: the real third-party OpenAI-compatible server that tests/agent_rl/test_engines_openai_compat.py
# runs against (it skips without it). The compile takes ~10 minutes of CPU on 2 cores, so it is
# opt-in and not part of scripts/setup.sh or CI; the cached wheel makes later installs seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AGENT_RL_VENV:-$ROOT/.venv}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${AGENT_RL_CACHE:-$HOME/.cache/agent-rl}/wheels"
mkdir -p "$CACHE"
wheel="$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
    echo "[llama-cpp] compiling llama-cpp-python $VERSION (several minutes; cached in $CACHE)"
    # Only the library the server needs: no llava/mtmd, tests, examples or tools; portable
    # (no -march=native) so the cached wheel runs on another CPU of a CI pool.
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_NATIVE=OFF}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$VENV/bin/pip" wheel -q --no-deps "llama-cpp-python==$VERSION" -w "$CACHE"
    wheel="$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl | head -1)"
fi
"$VENV/bin/pip" install -q "${wheel}[server]"
"$VENV/bin/python" -c "import llama_cpp.server.app" && echo "[llama-cpp] installed $(basename "$wheel")"
