"""`scripts/demo`'s job (`odc-ndvi demo`), as a person reads it: progress and results."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.ops_bench import odc_ndvi


@pytest.mark.integration
def test_the_demo_shows_progress_and_results_not_dask_logs(datacube_env, tmp_path):
    """The tiny demo on a fresh datacube of the session's PostgreSQL (the demo uses a
    configured datacube as it would yours): every step, progress with totals, the results;
    no `distributed.*` log records and none of save-tasks' query chatter (both are -v's)."""
    workdir = tmp_path / "demo"
    proc = odc_ndvi(
        "demo", "--size", "tiny", "--workdir", str(workdir), env=datacube_env.subprocess_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if "distributed." in line], lines
    assert not [line for line in lines if re.search(r"TTFB|per second|config from yaml", line)]
    steps = [line[:5] for line in lines if re.match(r"\[\d/5\] ", line)]
    assert steps == [f"[{n}/5]" for n in range(1, 6)], lines
    assert any(line.startswith("[2/2 100%, done=2") for line in lines), lines  # task progress
    assert "      Total of 2 spatial tiles" in lines  # save-tasks' result lines stay
    assert "Tasks: done 2, skipped 0, failed 0, in flight 0" in lines
    pictures = [Path(line.split(": ", 1)[1]) for line in lines if line.startswith("Quicklook: ")]
    assert len(pictures) == 2 and all(p.stat().st_size > 1000 for p in pictures)
    assert len(lines) < 50, "\n".join(lines)
