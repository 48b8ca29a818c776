"""Which settings a finished pipeline stage was produced under, so a re-run never reuses it
after they change.

A stage directory gets `stage.json` when the stage starts: a digest of the settings that decide
its result, and those settings. A re-run whose settings digest to the same value resumes or
reuses the directory; one whose settings differ moves the old directory aside (to
`<stage>.stale-<old digest>`, never deleted: it may hold hours of work) and starts the stage
again. Settings that do not change a stage's result (logging, checkpoint cadence, the step
budget, which a re-run may raise to train on) are left out by the caller, and a stage's
settings include its inputs' digests, so a change upstream invalidates everything below it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from strictconfig import settings_digest

MARK_FILE = "stage.json"


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two settings trees (for the message)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def claim_stage(stage_dir: Path, settings: dict[str, Any], say: Callable[[str], None] = print) -> str:
    """Make `stage_dir` belong to `settings`; returns their digest.

    Same settings as its mark: kept (the stage resumes or is reused). Different settings, or
    content without a mark (written by a version that kept none, so of unknown settings): the
    directory is moved aside and a fresh one is marked."""
    digest = settings_digest(settings)
    mark_path = stage_dir / MARK_FILE
    if stage_dir.exists() and any(stage_dir.iterdir()):
        try:
            mark = json.loads(mark_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            mark = {}
        if mark.get("digest") == digest:
            return digest
        old = str(mark.get("digest") or "unmarked")
        aside = stage_dir.with_name(f"{stage_dir.name}.stale-{old}")
        n = 1
        while aside.exists():
            n += 1
            aside = stage_dir.with_name(f"{stage_dir.name}.stale-{old}-{n}")
        shutil.move(str(stage_dir), str(aside))
        what = ", ".join(changed_keys(mark.get("settings") or {}, settings)[:8]) if mark else "no record of them"
        say(f"{stage_dir.name}: settings changed since it ran ({what}); the old run is kept in {aside.name}, "
            "this stage starts again")
    stage_dir.mkdir(parents=True, exist_ok=True)
    mark_path.write_text(json.dumps({"digest": digest, "settings": settings}, indent=2, sort_keys=True, default=str)
                         + "\n", encoding="utf-8")
    return digest
