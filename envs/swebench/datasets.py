"""SWE-bench-family rows → `envs.tasks.Task` rows: image, working directory, activation, runner.

Every dataset of the family ships SWE-bench's fields (instance_id, repo "owner/name",
base_commit, patch, test_patch, problem_statement, FAIL_TO_PASS / PASS_TO_PASS, often as JSON
strings). What differs is where each instance's environment lives. A *profile* per dataset
says:

============== ========================================= =====================================
profile        image                                     assumption / source
============== ========================================= =====================================
swe-bench      row `image` if present (SWE-bench 5 rows  the official naming of
(Verified,     carry it), else derived:                  `swebench.image_builder.ImageSpec.name`
Lite, full)    `swebench/sweb.eval.x86_64.<id>:latest`,  (namespace "swebench", arch x86_64,
               "__" → "_1776_", lower case               tag latest)
swe-gym        derived: `xingyaoww/sweb.eval.x86_64.     the SWE-Gym images OpenHands
               <id>:latest`, "__" → "_s_", lower case    publishes (rows carry no image)
swe-smith      row `image_name` (required)               SWE-smith's HF rows
swe-rebench    row `docker_image`, else derived as       nebius/SWE-rebench rows; the
               swe-bench with namespace "swerebench"     SWE-bench fork's namespace
r2e-gym        row `docker_image` (required)             R2E-Gym's rows in SWE-bench format
                                                         (e.g. its SWE-Bench-Verified mirror);
                                                         native rows (R2E-Gym-Subset, -Lite,
                                                         -V1: repo_name, commit_hash,
                                                         parsed_commit_content,
                                                         expected_output_json, …) go to
                                                         `envs.swebench.r2e` (its own images
                                                         for agent and grader, R2E's reward)
============== ========================================= =====================================

All of them: the repository at `/testbed` at the base commit. Environment activation: the
official images (swe-bench, swe-gym, swe-rebench, swe-smith) keep the environment in the conda
env `testbed` (`source /opt/miniconda3/bin/activate && conda activate testbed`); the command is
guarded so that an image following the same layout without conda runs with none. r2e-gym's
native images keep a uv virtualenv in `/testbed/.venv` (their Dockerfiles' `ENV VIRTUAL_ENV`;
activated when present). A row's
own `env_activate` (even "") wins. Native R2E-Gym rows (not in SWE-bench format) are mapped by
`envs.swebench.r2e` (its docstring says how they are loaded, imaged and graded).

The test runner and parser come from `envs.swebench.specs` (by repository, or the row's
`log_parser`). Tasks whose runner is not pytest, or that name a `log_parser`, get the runner's
command as `test_cmd` and are graded from the runner's log (see `envs.swebench.log_grading`);
pytest tasks keep `python3 -m pytest` (run after the activation) and the trusted-launcher path.

Images: a registry prefix for private mirrors (`registry=` or `AGENT_RL_IMAGE_REGISTRY`,
e.g. "mirror.corp:5000/") goes in front of every image name, explicit or derived; the namespace
of derived names can be changed (`namespace=` or `AGENT_RL_SWEBENCH_NAMESPACE`; "" gives the
harness's local-build names `sweb.eval.x86_64.<id>:latest`, which keep "__"). Whether an image is
present is checked when it is first used (`envs.task_images.task_image`, `ensure_images`), not
at load time: loading stays free of Docker.
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from envs.swebench import r2e, specs

# The official images' environment (swebench.harness: "source /opt/miniconda3/bin/activate";
# "conda activate testbed"), guarded: an image with the same layout but no conda needs none.
CONDA_ACTIVATE = "source /opt/miniconda3/bin/activate && conda activate testbed"
GUARDED_CONDA_ACTIVATE = f"if [ -f /opt/miniconda3/bin/activate ]; then {CONDA_ACTIVATE}; fi"
VENV_ACTIVATE = "if [ -f /testbed/.venv/bin/activate ]; then source /testbed/.venv/bin/activate; fi"
WORKDIR = "/testbed"

REGISTRY_ENV = "AGENT_RL_IMAGE_REGISTRY"
NAMESPACE_ENV = "AGENT_RL_SWEBENCH_NAMESPACE"

# The field names under which the family's datasets name a row's image, most specific first.
IMAGE_FIELDS = ("image", "image_name", "docker_image")
# Marks a row whose image came from the dataset mapping (read by envs.task_images).
IMAGE_SOURCE_KEY = "image_source"

_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


class DatasetRowError(ValueError):
    """A row that cannot become a task; the message names the row and the field."""


def official_image_name(instance_id: str, namespace: str | None = "swebench", *, arch: str = "x86_64",
                        tag: str = "latest", dunder: str = "_1776_") -> str:
    """The SWE-bench harness's image name for an instance (`ImageSpec.name`): with a namespace,
    "<namespace>/sweb.eval.<arch>.<id>:<tag>" with "__" spelt `dunder` (Docker Hub refuses
    "__"); without one, the local-build name, "__" kept. Lower case either way."""
    key = f"sweb.eval.{arch}.{instance_id}:{tag}"
    if namespace:
        key = f"{namespace}/{key}".replace("__", dunder)
    return key.lower()


@dataclass(frozen=True)
class Profile:
    """How one dataset's rows name their image and prepare their environment."""

    name: str
    image_fields: tuple[str, ...]  # row fields naming the image, first present wins
    derive: Callable[[str, str | None], str] | None  # (instance_id, namespace) → image; None: a field is required
    namespace: str | None  # the derived names' default namespace
    activate: str
    hf_names: tuple[str, ...] = ()  # lower-cased HF dataset ids (owner/name) that use this profile


def _swebench(instance_id: str, namespace: str | None) -> str:
    return official_image_name(instance_id, namespace)


def _swegym(instance_id: str, namespace: str | None) -> str:
    return official_image_name(instance_id, namespace, dunder="_s_")


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("swe-bench", ("image",), _swebench, "swebench", GUARDED_CONDA_ACTIVATE, (
            "princeton-nlp/swe-bench", "princeton-nlp/swe-bench_verified", "princeton-nlp/swe-bench_lite",
            "swe-bench/swe-bench", "swe-bench/swe-bench_verified", "swe-bench/swe-bench_lite",
        )),
        Profile("swe-gym", ("image",), _swegym, "xingyaoww", GUARDED_CONDA_ACTIVATE,
                ("swe-gym/swe-gym", "swe-gym/swe-gym-lite")),
        Profile("swe-smith", ("image_name", "image"), None, None, GUARDED_CONDA_ACTIVATE, ("swe-bench/swe-smith",)),
        Profile("swe-rebench", ("docker_image", "image_name", "image"), _swebench, "swerebench", GUARDED_CONDA_ACTIVATE,
                ("nebius/swe-rebench", "nebius/swe-rebench-leaderboard")),
        Profile("r2e-gym", ("docker_image", "image_name", "image"), None, None, VENV_ACTIVATE,
                ("r2e-gym/swe-bench-verified", "r2e-gym/swe-bench-lite", "r2e-gym/r2e-gym-subset",
                 "r2e-gym/r2e-gym-lite", "r2e-gym/r2e-gym-v1")),
    )
}
# Spellings accepted in `<profile>:<source>` task specs.
ALIASES = {
    "swebench": "swe-bench", "swe-bench-verified": "swe-bench", "swe-bench-lite": "swe-bench",
    "swegym": "swe-gym", "swesmith": "swe-smith", "swerebench": "swe-rebench", "r2e": "r2e-gym",
    "r2egym": "r2e-gym",
}


def profile_named(name: str) -> Profile | None:
    key = name.strip().lower()
    return PROFILES.get(ALIASES.get(key, key))


def profile_for_hf(dataset: str) -> Profile | None:
    """The profile of a Hugging Face dataset id (or a local copy whose path ends in one)."""
    key = dataset.strip().rstrip("/").lower()
    for profile in PROFILES.values():
        if any(key == hf or key.endswith("/" + hf) for hf in profile.hf_names):
            return profile
    return None


def profile_for_row(row: Mapping[str, Any]) -> Profile:
    """A row's profile from its fields when no dataset was named: a native R2E-Gym row's,
    SWE-smith's `image_name`, SWE-rebench's `docker_image`, else SWE-bench's naming."""
    if r2e.is_native_row(row):
        return PROFILES["r2e-gym"]
    if row.get("image_name"):
        return PROFILES["swe-smith"]
    if row.get("docker_image"):
        return PROFILES["swe-rebench"]
    return PROFILES["swe-bench"]


def is_family_row(row: Any) -> bool:
    """A SWE-bench-family row (rather than one of agent-rl's own): `repo` is "owner/name"
    (not a path that exists here, not a URL) and the row does not say how to build its image
    (`setup`); or a native R2E-Gym row (`envs.swebench.r2e.is_native_row`)."""
    if not isinstance(row, Mapping) or row.get("setup"):
        return False
    if r2e.is_native_row(row):
        return True
    repo = row.get("repo")
    if not isinstance(repo, str) or not _OWNER_NAME.fullmatch(repo.strip()):
        return False
    return not os.path.exists(repo.strip())


def _where(row: Mapping[str, Any], source: str) -> str:
    iid = row.get("instance_id") or "<missing instance_id>"
    return f"task {str(iid)!r}" + (f" (from {source})" if source else "")


def _fail(row: Mapping[str, Any], source: str, field: str, why: str) -> DatasetRowError:
    return DatasetRowError(f"{_where(row, source)}: field {field} {why}")


def with_registry(image: str, registry: str | None) -> str:
    """`image` under a registry prefix ("mirror:5000/" or "mirror:5000/team"); unchanged when
    the prefix is empty or already there."""
    prefix = (registry or "").strip()
    if not prefix:
        return image
    prefix = prefix.rstrip("/") + "/"
    return image if image.startswith(prefix) else prefix + image


def resolve_image(row: Mapping[str, Any], profile: Profile, *, source: str = "", registry: str | None = None,
                  namespace: str | None = None) -> tuple[str, str]:
    """(image, where it came from) for a row: the profile's explicit field, else its naming rule."""
    for name in profile.image_fields:
        value = row.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not value.strip():
            raise _fail(row, source, name, f"must be an image name (a string), got {value!r}")
        return with_registry(value.strip(), registry), f"row field {name}"
    if profile.derive is None:
        fields = " or ".join(profile.image_fields)
        raise _fail(row, source, profile.image_fields[0],
                    f"is missing: {profile.name} rows name their image ({fields}); add it, or load the rows "
                    "with another profile (e.g. swe-bench:FILE)")
    iid = str(row.get("instance_id") or "")
    ns = profile.namespace if namespace is None else (namespace or None)
    return with_registry(profile.derive(iid, ns), registry), f"{profile.name} naming"


def _test_list(row: Mapping[str, Any], source: str, name: str) -> list[str]:
    value = row.get(name, [])
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise _fail(row, source, name, f"is not a JSON list of test ids: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(row, source, name, "must be a list of test ids (or its JSON text)")
    return list(value)


def map_row(row: Mapping[str, Any], profile: Profile | None = None, *, source: str = "",
            registry: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """A family row → a row `Task.from_dict` takes: image, workdir, activation, test command
    and parsed test lists filled in; every other field kept (unknown ones land in `extra`).
    Missing or malformed fields raise DatasetRowError naming the row and the field."""
    if not isinstance(row, Mapping):
        raise DatasetRowError(f"task{f' (from {source})' if source else ''}: expected an object, got {type(row).__name__}")
    profile = profile or profile_for_row(row)
    registry = os.environ.get(REGISTRY_ENV, "") if registry is None else registry
    if namespace is None and NAMESPACE_ENV in os.environ:
        namespace = os.environ[NAMESPACE_ENV]
    if r2e.is_native_row(row):  # R2E-Gym's own format, whatever profile was named
        try:
            return r2e.map_native_row(row, PROFILES["r2e-gym"], source=source, registry=registry, namespace=namespace)
        except r2e.R2ERowError as exc:
            raise DatasetRowError(str(exc)) from None
    for name in ("instance_id", "repo", "base_commit", "problem_statement"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _fail(row, source, name, "is missing or empty")
    if not _SHA.fullmatch(row["base_commit"].strip()):
        raise _fail(row, source, "base_commit", f"must be a commit hash, got {row['base_commit']!r}")
    out = dict(row)
    out["FAIL_TO_PASS"] = _test_list(row, source, "FAIL_TO_PASS")
    out["PASS_TO_PASS"] = _test_list(row, source, "PASS_TO_PASS")
    if not out["FAIL_TO_PASS"]:
        raise _fail(row, source, "FAIL_TO_PASS", "is empty: nothing would tell a fix from no change")
    for name in ("patch", "test_patch"):
        if row.get(name) is not None and not isinstance(row.get(name), str):
            raise _fail(row, source, name, "must be a string (a unified diff)")
    image, origin = resolve_image(row, profile, source=source, registry=registry, namespace=namespace)
    for name in IMAGE_FIELDS:
        out.pop(name, None)  # the chosen one becomes `image`; the others would only confuse
    out["image"] = image
    out.setdefault("workdir", WORKDIR)
    if "env_activate" not in row:
        out["env_activate"] = profile.activate
    log_parser = row.get("log_parser")
    if log_parser is not None and not isinstance(log_parser, str):
        raise _fail(row, source, "log_parser", "must be a parser name (a string)")
    try:
        spec = specs.select(row["repo"], log_parser or None, instance_id=row["instance_id"])
    except specs.UnknownParserError as exc:
        raise _fail(row, source, "log_parser", f"names no known parser: {exc}") from None
    if "test_cmd" not in row and (log_parser or spec.family.name != "pytest"):
        out["test_cmd"] = shlex.join(spec.family.command)
    if row.get("version") is not None and not isinstance(row.get("version"), str):
        out["version"] = str(row["version"])  # some dumps carry 3.0 as a number
    extra = dict(out.get("extra") or {})
    extra.update({"dataset": profile.name, IMAGE_SOURCE_KEY: origin, "log_parser_resolved": spec.parser_name})
    if log_parser:
        extra["log_parser"] = log_parser
        out.pop("log_parser", None)
    out["extra"] = extra
    return out
