"""Shared by the operator-experience tests: the CLI in a child process (real exit status,
real stderr, not a terminal) and the reliability bench (tests/test_reliability.py: a
private copy of the tiny USGS archive, indexed, with the seasonal task db)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.lines import CLI, child_env, wait_until  # noqa: F401  (re-exported for the test modules)
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

REPO = Path(__file__).resolve().parents[2]


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
