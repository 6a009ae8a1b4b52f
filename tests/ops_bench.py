"""Shared by the operator-experience tests: the CLI in a child process (real exit status,
real stderr, not a terminal) and the reliability bench (tests/test_reliability.py: a
private copy of the tiny USGS archive, indexed, with the seasonal task db)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.test_reliability import (  # noqa: F401  (re-exported for the test modules)
    PERIODS,
    SEASONAL_RUN,
    SLOW_CLI,
    YEAR_RUN,
    Bench,
    files_in,
    make_bench,
    slow_cli,
    stac_items,
    task_dir,
    write_run_config,
)

REPO = Path(__file__).resolve().parent.parent
CLI = "from odc_ndvi_plugin.cli import main\nmain(prog_name='odc-ndvi')\n"


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def odc_ndvi(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """``odc-ndvi ARGS`` in a child process; stdout and stderr are pipes (not terminals)."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=env or child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
