"""odc-stats' private parts in one module (``_compat``), and its one patch applied when a
run starts: a plain ``odc-stats run``, not a notebook or ``odc-ndvi check-config``."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import odc.stats.proc

REPO = Path(__file__).resolve().parent.parent


def test_odc_stats_asks_for_the_worker_plugin_when_its_run_starts_its_cluster():
    """The hook the patch hangs on (see _compat's doc): odc-stats 1.9's runner reads the
    plugin's ``dask_worker_plugin`` when it starts the run's dask cluster."""
    source = inspect.getsource(odc.stats.proc.TaskRunner._init_dask)
    assert "self.proc.dask_worker_plugin" in source
    run = inspect.getsource(odc.stats.proc.TaskRunner._run)
    assert run.index("self.client()") < run.index("sink.dump(")  # the cluster first


def test_only_a_run_starting_patches_odc_stats():
    """In a fresh interpreter: a plugin made, ``check-config`` and odc-ndvi's own runner
    set-up leave odc-stats' sink alone; odc-stats' runner starting its cluster patches it."""
    script = textwrap.dedent(f"""
        from click.testing import CliRunner
        from odc_ndvi_plugin import NDVISeasonal
        from odc_ndvi_plugin._compat import cogs_encoded_on_workers
        from odc_ndvi_plugin.cli import main

        result = CliRunner().invoke(main, ["check-config", {str(REPO / "cfg" / "run-usgs-c2-year.yaml")!r}])
        assert result.exit_code == 0, result.output
        plugin = NDVISeasonal(preset="usgs_c2")
        assert plugin.measurements and not cogs_encoded_on_workers()
        # odc-stats' TaskRunner._init_dask registers what it gets: the workers' memory care
        assert type(plugin.dask_worker_plugin).__name__ == "MemoryHygiene"
        assert cogs_encoded_on_workers()
        print("ok")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
