"""A child process's output lines, read in a thread: wait for a line without blocking."""

from __future__ import annotations

import threading
import time

__all__ = ["LineReader"]


class LineReader:
    """Collect a pipe's lines in a thread (to wait for a line without blocking forever)."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)
