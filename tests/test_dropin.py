"""``odc-ndvi run`` is a drop-in for ``odc-stats run`` 1.9.7: every option of the real
``odc-stats run --help`` is one of ours, taking a value exactly when odc-stats' does (the
pixel-for-pixel comparison of both CLIs on the same arguments is in test_end_to_end.py);
the Kubernetes jobs probe the heartbeat file their runner writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CFG_DIR

#: an option line of click's help: "  --name[ / --no-name] [TYPE]  help..."
_OPTION = re.compile(r"^\s{2}(--[\w-]+)(?: / (--[\w-]+))?(?: ([A-Z][A-Z ]*?))?(?:\s{2,}|$)")


def _options(help_text: str) -> dict[str, bool]:
    """Option name -> whether it takes a value, from a click ``--help`` text."""
    found = {}
    for line in help_text.splitlines():
        match = _OPTION.match(line)
        if match:
            takes_value = bool(match.group(3))
            found[match.group(1)] = takes_value
            if match.group(2):
                found[match.group(2)] = takes_value
    return found


def test_every_odc_stats_run_option_is_an_odc_ndvi_run_option():
    odc_stats = Path(sys.executable).with_name("odc-stats")
    theirs = _options(
        subprocess.run(
            [str(odc_stats), "run", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )
    # the option list odc-stats 1.9.7 documents (so a parse that finds nothing fails)
    assert {"--plugin-config", "--heartbeat-filepath", "--no-public", "--from-sqs"} <= set(theirs)
    assert len(theirs) == 19  # 18 options (one a --x/--no-x pair) and --help
    from click.testing import CliRunner

    from odc_ndvi_plugin.cli import main

    ours = _options(CliRunner().invoke(main, ["run", "--help"], terminal_width=200).output)
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"odc-ndvi run lacks odc-stats run's {missing}"
    differ = sorted(name for name, value in theirs.items() if ours[name] != value)
    assert not differ, f"these take a value in one CLI and not the other: {differ}"


@pytest.mark.parametrize("job", sorted(p.name for p in (CFG_DIR / "k8s").glob("*.yaml")))
def test_kubernetes_jobs_probe_the_heartbeat_their_runner_writes(job):
    from odc_ndvi_plugin.cli import run_command

    doc = yaml.safe_load((CFG_DIR / "k8s" / job).read_text())
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    ctx = run_command.make_context("run", list(container["args"]))
    heartbeat = ctx.params["heartbeat_filepath"]
    assert heartbeat
    probe = container["livenessProbe"]
    command = " ".join(probe["exec"]["command"])
    assert heartbeat in command
    # the probe allows more than the longest pause between two heartbeats (a poll)
    assert probe["initialDelaySeconds"] >= 60 and probe["periodSeconds"] >= 30


def test_the_liveness_probe_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_one(tmp_path):
    import os
    import time

    doc = yaml.safe_load((CFG_DIR / "k8s" / "sqs-runner-job.yaml").read_text())
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    command = list(container["livenessProbe"]["exec"]["command"])
    beat = tmp_path / "heartbeat"
    command = [sys.executable if c == "python" else c for c in command]
    command = [c.replace("/tmp/odc-ndvi.heartbeat", str(beat)) for c in command]
    beat.write_text("2026-12-07 07:00:00")
    assert subprocess.run(command, check=False).returncode == 0
    old = time.time() - 600
    os.utime(beat, (old, old))
    assert subprocess.run(command, check=False).returncode == 1
    beat.unlink()
    assert subprocess.run(command, check=False, capture_output=True).returncode != 0
