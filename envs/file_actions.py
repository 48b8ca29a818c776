"""The agent's file actions (view, create, str_replace) run against a sandbox.

Each returns the observation text; a missing or unreadable file, or an edit that does not
apply, raises `EditError` with a message meant for the model.
"""
from __future__ import annotations

import posixpath
import shlex

from envs.actions import EditError, apply_str_replace, numbered_lines
from sandboxes.base import Sandbox


def read_text(sandbox: Sandbox, path: str) -> str:
    """The file's text; EditError (saying what is there instead) if it is not a readable file."""
    check = sandbox.exec(f"test -f {shlex.quote(path)} && test -r {shlex.quote(path)}", timeout=30)
    if not check.ok:
        listing = sandbox.exec(f"ls -la {shlex.quote(path)} 2>&1 | head -n 200", timeout=30)
        if listing.ok and "No such file" not in listing.output:
            raise EditError(f"{path} is not a readable file:\n{listing.output.rstrip()}")
        raise EditError(f"{path} does not exist")
    return sandbox.read_file(path)


def write_text(sandbox: Sandbox, path: str, content: str) -> None:
    """Write `content` to `path`, creating its directory."""
    parent = posixpath.dirname(path)
    made = sandbox.exec(f"mkdir -p {shlex.quote(parent)}", timeout=30)
    if not made.ok:
        raise EditError(f"cannot create directory {parent}: {made.output.strip()}")
    sandbox.write_file(path, content)


def view(sandbox: Sandbox, path: str, view_range: tuple[int, int] | None) -> str:
    """The file with line numbers (optionally only `view_range`)."""
    return numbered_lines(read_text(sandbox, path), view_range, path=path)


def create(sandbox: Sandbox, path: str, content: str) -> str:
    """Create or overwrite the file."""
    write_text(sandbox, path, content)
    return f"Wrote {len(content.splitlines())} lines to {path}."


def str_replace(sandbox: Sandbox, path: str, old: str, new: str) -> str:
    """Replace the one occurrence of `old` by `new`; show the changed region."""
    updated = apply_str_replace(read_text(sandbox, path), old, new, path=path)
    write_text(sandbox, path, updated)
    start = updated[: updated.find(new)].count("\n") + 1 if new else 1
    end = start + max(new.count("\n"), 1)
    snippet = numbered_lines(updated, (max(1, start - 3), end + 3), path=path)
    return f"Edited {path}. The changed region now reads:\n{snippet}"
