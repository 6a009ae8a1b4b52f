"""Issue 14 / 15B: every CLI error is one line on stderr naming the problem (exit 2 for
usage and configuration, 1 for failed work, 130 when interrupted; ``-v`` adds the
traceback), and the silent traps are refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from odc_ndvi_plugin.cli import main
from tests.helpers.lines import LineReader
from tests.helpers.ops_bench import (
    CLI,
    REPO,
    SEASONAL_RUN,
    child_env,
    make_bench,
    odc_ndvi,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_archive, datacube_env_module):
    root = tmp_path_factory.mktemp("cli-errors")
    return make_bench(root, tiny_archive("usgs_c2"), datacube_env_module)


def _invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result, result.stderr.strip().splitlines()


def _assert_one_line(result, lines, exit_code: int, start: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    assert "Traceback" not in result.output


# -- errors that were tracebacks ------------------------------------------------------------


def test_missing_gateway_config_is_one_line(bench, tmp_path):
    result, lines = _invoke(
        "run", "--config", str(SEASONAL_RUN), "--location", tmp_path.as_uri(),
        "--gateway-config", "missing.yaml", str(bench.db),
    )  # fmt: skip
    _assert_one_line(
        result, lines, 2, "Error: gateway config 'missing.yaml': cannot read it: No such file"
    )


@pytest.mark.parametrize("kind", ["text file", "lmdb without tasks"])
def test_a_file_that_is_no_task_db_is_one_line(tmp_path, kind):
    db = tmp_path / "tasks.db"
    if kind == "text file":
        db.write_text("plugin: not a task db\n")
        why = "not an LMDB file"
    else:
        from odc.dscache import DatasetCache

        DatasetCache.create(str(db)).close()
        why = "it has no task grid (stats/config)"
    result, lines = _invoke(
        "run", "--config", str(SEASONAL_RUN), "--location", tmp_path.as_uri(), str(db)
    )
    _assert_one_line(result, lines, 1, f"Error: task db '{db}' is not an odc-stats task db: {why}")


def test_a_task_db_cut_in_half_is_one_line_not_a_sigbus(bench, tmp_path):
    """Issue 15B: LMDB maps the file and trusted its header: the run died of SIGBUS (exit
    135) with no output. In a child process: a SIGBUS would take pytest down with it."""
    half = tmp_path / "half.db"
    data = bench.db.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    args = ["run", "--config", str(SEASONAL_RUN), "--location", tmp_path.as_uri(), str(half)]
    proc = odc_ndvi(*args)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [
        f"Error: task db '{half}' is corrupt or incomplete: {len(data) // 2} bytes, but its "
        f"LMDB header counts {len(data) // 4096} pages of 4096 bytes ({len(data)} bytes); "
        f"copy or download it again"
    ]
    verbose = odc_ndvi(*args[:1], "-v", *args[1:])
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr  # -v adds the traceback
    assert verbose.stderr.splitlines()[-1] == proc.stderr.strip()


def test_product_definition_of_another_plugins_config_is_one_line(tmp_path):
    config = tmp_path / "gm.yaml"
    doc = {
        "plugin": "odc.stats.plugins.gm.StatsGMLS",
        "plugin_config": {},
        "product": {
            "name": "gm",
            "short_name": "gm",
            "version": "1.0.0",
            "producer": "example.org",
            "collections_site": "collections.example.org",
            "explorer_path": "https://explorer.example.org",
        },
        "output_location": "file:///tmp/gm",
    }
    config.write_text(yaml.safe_dump(doc))
    result, lines = _invoke("product-definition", str(config))
    _assert_one_line(
        result,
        lines,
        2,
        f"Error: run config '{config}': plugin: 'odc.stats.plugins.gm.StatsGMLS' is not "
        "odc_ndvi_plugin.NDVISeasonal",
    )


@pytest.mark.parametrize(
    "option, start",
    [
        (["--start", "2020-13-01"], "Error: Invalid value for '--start': expected a date YYYY-MM-DD, got '2020-13-01' (month must be in 1..12)"),
        (["--crs", "EPSG:99999"], "Error: Invalid value for '--crs': 'EPSG:99999' is not a CRS that PROJ knows"),
        (["--crs", "EPSG:4326"], "Error: Invalid value for '--crs': 'EPSG:4326' is not a projected CRS in metres"),
    ],
    ids=["start", "crs", "degrees"],
)  # fmt: skip
def test_synth_options_are_one_line(tmp_path, option, start):
    result, lines = _invoke("synth", "--preset", "tiny", "--out", str(tmp_path / "a"), *option)
    _assert_one_line(result, lines, 2, start)
    assert not (tmp_path / "a").exists()


# -- traps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, start",
    [
        (["--dryrun", "--from-sqs", "q"], "Error: --dryrun lists the tasks of a task db"),
        (["--gateway", "http://127.0.0.1:1", "--dryrun", "DB"], "Error: --gateway ADDRESS needs --gateway-config"),
        (["--gateway-config", str(REPO / "cfg" / "gateway-cluster.yaml"), "--threads", "2", "DB"], "Error: --threads and --memory-limit size local dask"),
        (["--overwrite", "--verify", "DB"], "Error: --verify and --incomplete decide which tasks to skip"),
        (["--incomplete", "report", "--from-sqs", "q"], "Error: --incomplete report cannot be used with --from-sqs"),
        (["--dryrun", "--report", "r.json", "DB"], "Error: --dryrun computes nothing: --report would be ignored"),
        (["--report", "/proc/no-such-dir/r.json", "DB"], "Error: --report /proc/no-such-dir/r.json: cannot write it"),
    ],
    ids=["dryrun-sqs", "gateway-alone", "threads-gateway", "verify-overwrite", "report-sqs", "dryrun-report", "report-unwritable"],
)  # fmt: skip
def test_contradictory_or_ignored_flags_are_refused(bench, tmp_path, args, start):
    """Issue 14: ``--dryrun --from-sqs`` exited 0 with no output, ``--gateway`` without
    ``--gateway-config`` quietly ran on local dask."""
    args = [str(bench.db) if a == "DB" else a for a in args]
    result, lines = _invoke(
        "run", "--config", str(SEASONAL_RUN), "--location", (tmp_path / "out").as_uri(), *args
    )
    _assert_one_line(result, lines, 2, start)
    assert not (tmp_path / "out").exists()


def test_dry_run_applies_dataset_filters(bench, tmp_path):
    """Issue 14: the dry run ignored the run config's ``dataset_filters``. The reference
    count is odc-stats' own task (unfiltered) filtered here by the dataset property."""
    from odc.stats.tasks import TaskReader

    path = sorted({s.wrs_path for s in bench.archive.scenes})[0]
    config = tmp_path / "filtered.yaml"
    doc = yaml.safe_load(SEASONAL_RUN.read_text())
    doc["dataset_filters"] = json.dumps({"landsat:wrs_path": path})
    config.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--location",
            tmp_path.as_uri(),
            "--dryrun",
            str(bench.db),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = {
        line.split()[0]: int(line.split()[2].removeprefix("ds="))
        for line in result.stdout.splitlines()
    }
    reader = TaskReader(str(bench.db))
    try:
        expected = {}
        for tile in reader.all_tiles:
            datasets = reader.datasets(tile)
            location = f"x{tile[1]:+04d}/y{tile[2]:+05d}/{tile[0]}"
            expected[location] = sum(
                ds.metadata_doc["properties"]["landsat:wrs_path"] == path for ds in datasets
            )
            assert 0 < expected[location] < len(datasets)  # the filter matters
    finally:
        reader._dscache.close()
    assert shown == expected
    assert result.stderr.strip().splitlines()[-1] == f"{len(expected)} task(s): {len(expected)} new"


# -- SIGTERM while a gateway cluster waits for its workers ------------------------------------


def _clusters(gateway_server) -> set[str]:
    with gateway_server.gateway() as gw:
        return {c.name for c in gw.list_clusters()}


@pytest.mark.servers
def test_sigterm_while_the_gateway_cluster_waits_for_workers_shuts_it_down(
    bench, gateway_server, tmp_path
):
    """Issue 14: SIGTERM was handled only once tasks ran: a cluster being created or
    waiting for workers was left running. 8 GiB workers exceed what the test gateway
    allows a cluster (6 GiB), so the workers never come and the run waits."""
    before = _clusters(gateway_server)
    gateway_yaml = gateway_server.write_cluster_config(
        tmp_path / "gateway.yaml",
        "NDVI_TEST_GATEWAY_PASSWORD",
        cluster_options={"worker_memory": 8.0},
        workers=1,
        wait_timeout=600,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "run", "--config", str(SEASONAL_RUN)]
        + ["--location", (tmp_path / "out").as_uri(), "--gateway-config", str(gateway_yaml)]
        + [str(bench.db)],
        env=child_env(NDVI_TEST_GATEWAY_PASSWORD=gateway_server.password),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = LineReader(proc.stderr)
    created: set[str] = set()

    def waiting_for_workers() -> bool:
        """Our cluster is running (its scheduler is up) and the run waits for workers."""
        with gateway_server.gateway() as gw:
            running = {c.name for c in gw.list_clusters() if c.status.name == "RUNNING"}
        created.update(running - before)
        return bool(created)

    try:
        assert wait_until(waiting_for_workers, 180, 0.2), err.text()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = _clusters(gateway_server) & created
        if leftover:  # the old behaviour: stop them so later tests are not affected
            with gateway_server.gateway() as gw:
                for name in leftover:
                    gw.stop_cluster(name)
    stderr = err.text()
    assert rc == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted"), stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(created) == 1
    assert wait_until(lambda: not (_clusters(gateway_server) & created), 60), "cluster left running"
    assert not leftover


def test_interrupt_during_cluster_submission_is_held_until_the_name_is_known():
    """The signal handler holds an interrupt inside ``interrupts_deferred`` (the gateway's
    submit call) and raises it when the block ends."""
    import os

    from odc_ndvi_plugin.ops import signals
    from odc_ndvi_plugin.ops.signals import interrupts_deferred, interrupts_raise

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_raise():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                # the handler has run (and held the interrupt): nothing was raised here
                assert wait_until(lambda: signals._state.pending == signal.SIGTERM, 30)
                steps.append("name known")
            steps.append("not reached")
    assert steps == ["name known"]
