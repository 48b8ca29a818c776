"""Prebuilt task images (SWE-bench's per-instance images and their kin) made fit for our sandboxes.

Those images are built for a harness that runs as root with the repository's whole history:
`/testbed` belongs to root, and its `.git` holds every later commit, the fix included (an agent
that runs `git log --all` reads the answer). Our sandboxes run as uid 1000 and promise that git
history stops at the base commit. So before first use each prebuilt image gets one layer, made
once and tagged by content (the image's id and this recipe):

  - the repository's history cut at its checked-out commit: every ref but that commit's deleted
    (branches, tags, remotes, stash), reflogs expired, unreachable objects pruned, and checked:
    a commit not in HEAD's ancestry still present fails the build;
  - the working directory handed to uid 1000, and git told to trust it for any owner;
  - nothing else: the image's environment (conda, PATH) and files stay as they were.

The layer runs as root with no network, once per image. An image without `.git` in the working
directory only gets the ownership change.

A dataset may add its own step (`extra_script`, run as root after the above, in the same
container; e.g. `envs.swebench.r2e` removes hidden tests from the agent's image). Each
(image, step) pair is its own tag (`variant` labels it); a line `>>> base commit <sha>` in the
step's output becomes the label `agent-rl.base-commit` of the result. Without a step the tag and
the layer are exactly as before.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from sandboxes.images import AGENT_UID, KIND_LABEL, MANAGED_LABEL, ImageBuildError, _client, _content_hash, image_exists

if TYPE_CHECKING:
    import docker

ADAPTED_REPOSITORY = "agent-rl/adapted"
ADAPT_RECIPE_VERSION = "1"
BASE_COMMIT_LABEL = "agent-rl.base-commit"
VARIANT_LABEL = "agent-rl.adapted-variant"
_BASE_COMMIT_LINE = re.compile(r"^>>> base commit ([0-9a-f]{40})\s*$", re.M)


def _adapt_script(workdir: str) -> str:
    # One shell script, so a failure names its step. `git -c safe.directory=*`: the tree is
    # root's now but the script must also work on images whose tree is someone else's.
    return f"""set -eu
cd {workdir}
g() {{ git -c safe.directory='*' "$@"; }}
if [ -d .git ]; then
  echo '>>> cutting history at HEAD'
  # Locks left by a git that was running when the image was snapshotted (a background
  # `gc --auto` after a big commit is the usual one): no process in this container holds them.
  rm -f .git/gc.pid .git/index.lock .git/HEAD.lock
  head=$(g rev-parse --verify HEAD^{{commit}})
  g checkout -q --detach "$head"
  g for-each-ref --format='%(refname)' | while read -r ref; do g update-ref -d "$ref"; done
  for remote in $(g remote); do g remote remove "$remote"; done
  g checkout -q -B main "$head"
  rm -f .git/FETCH_HEAD .git/ORIG_HEAD .git/MERGE_HEAD .git/packed-refs.lock
  g reflog expire --expire=now --all
  g gc --quiet --prune=now
  g rev-list HEAD | sort > /tmp/agent-rl-reachable
  g cat-file --batch-all-objects --batch-check='%(objecttype) %(objectname)' \\
    | awk '$1 == "commit" {{ print $2 }}' | sort > /tmp/agent-rl-commits
  extra=$(comm -13 /tmp/agent-rl-reachable /tmp/agent-rl-commits | head -n 1)
  rm -f /tmp/agent-rl-reachable /tmp/agent-rl-commits
  if [ -n "$extra" ]; then echo ">>> history cut failed: commit $extra survives"; exit 3; fi
fi
echo '>>> handing {workdir} to uid {AGENT_UID}'
git config --system --add safe.directory '*' 2>/dev/null || git config --global --add safe.directory '*' || true
chown -R {AGENT_UID}:{AGENT_UID} {workdir}
"""


def adapted_tag(image_id: str, workdir: str, extra_script: str = "") -> str:
    parts = [ADAPT_RECIPE_VERSION, image_id, workdir, _adapt_script(workdir)]
    if extra_script:  # only then: the tags of plain adaptations stay what they were
        parts.append(extra_script)
    return f"{ADAPTED_REPOSITORY}:{_content_hash(*parts)[:16]}"


def adapt_prebuilt_image(image: str, *, workdir: str = "/testbed", client: "docker.DockerClient | None" = None,
                         timeout: float = 1800.0, extra_script: str = "", variant: str = "") -> str:
    """The tag of `image` with the layer above (built now unless it exists), or `image` itself
    when we built it (and no `extra_script` is asked for). ImageBuildError, with the step's
    output, when the layer cannot be made."""
    engine = _client(client)
    source = engine.images.get(image)
    labels = source.labels or {}
    # Built by us as a task image (a repository image, an earlier adaptation): already fit.
    # Not just "managed": an image built FROM our base image inherits that label.
    if not extra_script and labels.get(MANAGED_LABEL) == "1" and labels.get(KIND_LABEL) in ("repo", "adapted"):
        return image
    tag = adapted_tag(source.id, workdir, extra_script)
    if image_exists(engine, tag):
        return tag
    api = engine.api
    config = source.attrs.get("Config") or {}
    # A commit keeps the container's config, and "ENTRYPOINT []" in its changes does not clear
    # one: so an entrypoint is overridden (and restored below) only when the image has one.
    script = ["/bin/sh", "-c", _adapt_script(workdir) + extra_script]
    entry = {"entrypoint": script[:2], "command": script[2:]} if config.get("Entrypoint") else {"command": script}
    container = api.create_container(image, user="root", working_dir="/",
                                     host_config=api.create_host_config(network_mode="none"), **entry)["Id"]
    try:
        api.start(container)
        try:
            status = api.wait(container, timeout=timeout)["StatusCode"]
        except Exception as exc:  # requests' read timeout
            raise ImageBuildError(f"adapting {image} did not finish within {timeout:.0f}s") from exc
        if status != 0:
            logs = api.logs(container).decode("utf-8", errors="replace")[-4000:]
            raise ImageBuildError(f"adapting {image} for the sandbox failed (exit {status}):\n{logs}")
        labels = {MANAGED_LABEL: "1", KIND_LABEL: "adapted", "agent-rl.adapted-from": image}
        if variant:
            labels[VARIANT_LABEL] = variant
        if extra_script:
            found = _BASE_COMMIT_LINE.findall(api.logs(container).decode("utf-8", errors="replace"))
            if found:
                labels[BASE_COMMIT_LABEL] = found[-1]
        label_line = " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
        repository, _, version = tag.partition(":")
        # A commit takes the container's config (our sh -c, user root): put the image's own
        # ENTRYPOINT, CMD and USER back, so only the tree's owner and its history change.
        restore = [f"ENTRYPOINT {json.dumps(config['Entrypoint'])}"] if config.get("Entrypoint") else []
        restore.append(f"CMD {json.dumps(config.get('Cmd') or ['/bin/sh'])}")
        api.commit(container, repository=repository, tag=version, changes=[
            *restore, f"USER {config.get('User') or 'root'}", f"WORKDIR {workdir}", f"LABEL {label_line}",
        ])
    finally:
        api.remove_container(container, force=True)
    return tag
