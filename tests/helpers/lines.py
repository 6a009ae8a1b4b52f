"""Child processes of the tests: the ``odc-ndvi`` command line as a child runs it, the
environment it gets, its output lines read in a thread (wait for a line without blocking),
and polling a condition up to a deadline."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["CLI", "LineReader", "child_env", "wait_until"]

#: ``python -c CLI ARGS`` runs ``odc-ndvi ARGS`` (the console script may be missing in a
#: plain checkout)
CLI = "from odc_ndvi_plugin.cli import main; main(prog_name='odc-ndvi')"


def child_env(**extra: str) -> dict[str, str]:
    """This process' environment (moto's variables included, when set) for a child, with
    byte code cached (PYTHONDONTWRITEBYTECODE would make every child compile for seconds)."""
    env = {**os.environ, **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


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


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed (then one
    last look): waits in tests are on conditions, with generous deadlines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
