"""Finding a test's processes by their command line (to prove a cut left none behind)."""
from __future__ import annotations

from pathlib import Path


def pids_with(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
