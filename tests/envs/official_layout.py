"""Images laid out as SWE-bench's (and R2E-Gym's) own are, built here because no registry can be reached.

The official per-instance images keep the repository at /testbed, owned by root, with its whole
history and HEAD at the base commit, and the environment installed system-wide (conda there;
plain site-packages here). They carry none of our labels, so `envs.task_images.task_image`
adapts them (history cut, /testbed handed to the agent's uid) like a pulled official image.
"""
from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path
from typing import Iterable

# Debian's python3 reads this directory whatever its minor version.
SITE_PACKAGES = "usr/lib/python3/dist-packages"


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in Path(info.name).parts:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def host_package_dir(name: str) -> Path:
    """The directory of an installed pure-Python package on this machine (copied into images as
    a repository's dependency: the containers have no network to install it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed here (pip install -e '.[dev]' installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def official_style_image(repo: Path, tag: str, *, packages: Iterable[str] = (), importable: bool = False) -> str:
    """Commit `repo` as /testbed (root-owned, history kept) onto our base image, with the named
    host packages in site-packages and, when `importable`, /testbed itself on sys.path (the
    official images install the repository in editable mode). Returns `tag`."""
    import docker

    from sandboxes.images import ensure_base_image

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(str(repo), arcname="testbed", filter=_as_root)
        for name in packages:
            tar.add(str(host_package_dir(name)), arcname=f"{SITE_PACKAGES}/{name}", filter=_as_root)
        if importable:
            line = b"/testbed\n"
            info = _as_root(tarfile.TarInfo(f"{SITE_PACKAGES}/testbed.pth"))
            info.size = len(line)
            tar.addfile(info, io.BytesIO(line))
    client = docker.from_env(timeout=600)
    base = ensure_base_image(client, progress=lambda _msg: None)
    container = client.api.create_container(base, command=["true"], user="root")["Id"]
    try:
        client.api.put_archive(container, "/", archive.getvalue())
        repository, _, version = tag.partition(":")
        client.api.commit(container, repository=repository, tag=version, changes=["USER root", "WORKDIR /testbed"])
    finally:
        client.api.remove_container(container, force=True)
    return tag


# --------------------------------------------------------------------------------------
# R2E-Gym's layout (envs/swebench/r2e.py's docstring has the facts and their sources)
# --------------------------------------------------------------------------------------

# Their run script (repo_analysis_args.tests_cmd): pytest -rA over r2e_tests, from /testbed.
R2E_RUN_TESTS = "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' .venv/bin/python -W ignore -m pytest -rA r2e_tests\n"


def _hunk_header(line: str) -> dict:
    import re

    match = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)", line)
    assert match, line
    old_start, old_len, new_start, new_len, section = match.groups()

    def rng(start: str, length: str | None) -> dict:
        return {"start": int(start), "length": None if length is None else int(length)}

    return {"old_range": rng(old_start, old_len), "new_range": rng(new_start, new_len), "section": section}


def r2e_parsed_commit(diff: str, *, old: str, new: str, message: str = "fix") -> dict:
    """A unified diff as R2E-Gym's `ParsedCommit` JSON (`commit_models/diff_classes.py`): file
    diffs with header, index line, ---/+++ paths and hunks of typed lines. `old` is recorded as
    R2E's store step records it ("<new>^" there)."""
    files: list[dict] = []
    hunk: dict | None = None
    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            path = line.split(" b/", 1)[1]
            files.append({"old_file_content": "", "new_file_content": "", "header": {"file": {"path": path}, "misc_line": None},
                          "index_line": None, "is_binary_file": False, "binary_line": None, "minus_file": None,
                          "plus_file": None, "hunks": []})
            hunk = None
        elif not files:
            continue
        elif line.startswith("@@ "):
            hunk = {"descriptor": _hunk_header(line), "line_group": {"all_lines": []}}
            files[-1]["hunks"].append(hunk)
        elif hunk is None:
            current = files[-1]
            if line.startswith("index "):
                hashes, _, mode = line[len("index "):].partition(" ")
                old_blob, new_blob = hashes.split("..")
                current["index_line"] = {"old_commit_hash": old_blob, "new_commit_hash": new_blob, "mode": mode}
            elif line.startswith(("old mode", "new mode", "deleted file mode", "new file mode")):
                misc = current["header"]["misc_line"]
                current["header"]["misc_line"] = f"{misc}\n{line}" if misc else line
            elif line.startswith("--- "):
                current["minus_file"] = {"path": line[4:]}
            elif line.startswith("+++ "):
                current["plus_file"] = {"path": line[4:]}
        elif line:
            kind = {" ": "context", "+": "added", "-": "deleted", "\\": "note"}[line[0]]
            content = line[2:] if kind == "note" else line[1:]
            hunk["line_group"]["all_lines"].append({"content": content, "type": kind})
    return {"file_diffs": files, "old_commit_hash": old, "new_commit_hash": new, "commit_message": message,
            "commit_date": "2024-01-01T00:00:00", "metadata": {}}


def r2e_style_image(repo: Path, tag: str, *, tests: dict[str, str], run_tests: str = R2E_RUN_TESTS,
                    untracked: dict[str, str] | None = None, edits: dict[str, str] | None = None) -> str:
    """An image laid out as R2E-Gym's are (their base Dockerfiles): `repo` (full history, HEAD
    at the base) as root-owned /testbed, a virtualenv at /testbed/.venv (here over the system
    python and its pytest, with uv's `.gitignore` of "*"), `ENV VIRTUAL_ENV` and PATH, the run
    script at /testbed/run_tests.sh, the hidden tests at /r2e_tests, untracked install files
    (`untracked`) and tracked files the install step edited (`edits`). Returns `tag`."""
    import docker

    from sandboxes.images import ensure_base_image

    archive = io.BytesIO()

    def add(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
        data = text.encode()
        info = _as_root(tarfile.TarInfo(name))
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(str(repo), arcname="testbed", filter=_as_root)
        add(tar, "testbed/run_tests.sh", run_tests, 0o755)
        for name, text in (untracked or {}).items():
            add(tar, f"testbed/{name}", text)
        for name, text in (edits or {}).items():
            add(tar, f"testbed/{name}", text)
        add(tar, "r2e_tests/__init__.py", "")
        for name, text in tests.items():
            add(tar, f"r2e_tests/{name}", text)
    client = docker.from_env(timeout=600)
    base = ensure_base_image(client, progress=lambda _msg: None)
    venv = ("python3 -m venv --without-pip --system-site-packages /testbed/.venv && "
            "printf '*\\n' > /testbed/.venv/.gitignore")
    container = client.api.create_container(base, command=["sh", "-c", venv], user="root",
                                            host_config=client.api.create_host_config(network_mode="none"))["Id"]
    try:
        client.api.put_archive(container, "/", archive.getvalue())
        client.api.start(container)
        status = client.api.wait(container, timeout=300)["StatusCode"]
        assert status == 0, client.api.logs(container).decode(errors="replace")
        repository, _, version = tag.partition(":")
        client.api.commit(container, repository=repository, tag=version, changes=[
            "USER root", "WORKDIR /testbed", "ENV VIRTUAL_ENV=/testbed/.venv",
            "ENV PATH=/testbed/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CMD [\"/bin/bash\"]",
        ])
    finally:
        client.api.remove_container(container, force=True)
    return tag
