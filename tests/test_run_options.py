"""``odc-ndvi run``'s conflict rules, on the frozen options object (no click, no run)."""

from __future__ import annotations

import dataclasses

import pytest

from odc_ndvi_plugin.cli import RunOptions, run_command

BASE = {"config_path": "run.yaml", "filedb": "tasks.db"}


def test_a_plain_run_has_no_problems():
    assert RunOptions(**BASE).problems() == []
    assert RunOptions(config_path="run.yaml", from_sqs="queue", idle_timeout=5).problems() == []
    gateway = RunOptions(**BASE, gateway_config="gw.yaml", gateway_address="http://gw")
    assert gateway.problems() == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"config_path": "run.yaml"}, "FILEDB (the task db from save-tasks) is required"),
        ({"from_sqs": "q", "tasks": ("x1y1",)}, "give either TASKS or --from-sqs, not both"),
        ({"idle_timeout": 3.0}, "--idle-timeout applies to --from-sqs runs only"),
        ({"gateway_address": "http://gw"}, "--gateway ADDRESS needs --gateway-config"),
        ({"gateway_config": "gw.yaml", "threads": 2}, "--threads and --memory-limit size local"),
        ({"gateway_config": "gw.yaml", "memory_limit": "4GiB"}, "--threads and --memory-limit"),
        ({"from_sqs": "q", "incomplete": "report"}, "--incomplete report cannot be used with"),
        ({"overwrite": True, "verify": True}, "--overwrite skips none"),
        ({"overwrite": True, "incomplete": "redo"}, "--overwrite skips none"),
        ({"dryrun": True, "from_sqs": "q"}, "--dryrun lists the tasks of a task db"),
        ({"dryrun": True, "retries": 0}, "--dryrun computes nothing: --retries would be ignored"),
        (
            {"dryrun": True, "threads": 1, "report_path": "r.json"},
            "--dryrun computes nothing: --threads, --report would be ignored",
        ),
    ],
)
def test_each_conflict_is_one_line_naming_the_options(options, problem):
    given = {**BASE, **options} if "config_path" not in options else options
    problems = RunOptions(**given).problems()
    assert len(problems) == 1 and problem in problems[0], problems


def test_every_conflict_is_reported_not_only_the_first():
    options = RunOptions(config_path="c", from_sqs="q", tasks=("t",), incomplete="report")
    assert len(options.problems()) == 2


def test_the_options_are_frozen_and_cover_every_option_of_run():
    options = RunOptions(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.verify = True  # type: ignore[misc]
    params = {p.name for p in run_command.params} - {"verbose"}
    assert params == {f.name for f in dataclasses.fields(RunOptions)}
