"""`agent-rl serve` as a real subprocess on loopback, for the tests that talk to it."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 180  # loading from the converted cache; generous for a loaded 2-core CI box


class ServerProcess:
    """`python -m agent_rl.cli serve --port 0`, with the URL it prints."""

    def __init__(self, log_path: Path, batch_wait_ms: int = 20, command: list[str] | None = None) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self._log = open(log_path, "w")
        # `command`: another server subcommand that prints "... at http://..." the same way (gateway).
        args = command or ["serve", "--port", "0", "--batch-wait-ms", str(batch_wait_ms)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent_rl.cli", *args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_for_url()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if " at http://" in line:
                return line.split(" at ", 1)[1].split()[0].strip()
        self.stop()
        raise RuntimeError(f"agent-rl serve did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
