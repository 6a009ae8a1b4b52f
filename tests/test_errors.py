"""One error root: the package's own errors under NDVIPluginError (keeping their built-in
bases), and the command line's contract for them and for everything else (a bug)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from odc_ndvi_plugin import errors
from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.cli._common import one_line_errors, verbose_option
from odc_ndvi_plugin.dev.index import DatacubeConfigError, EmbeddedPostgresError, IndexingError
from odc_ndvi_plugin.ops.gateway import (
    GatewayAuthError,
    GatewayClusterFailed,
    GatewayClusterNotFound,
    GatewayRefused,
    GatewayUnreachable,
    GatewayWorkersTimeout,
)


@pytest.mark.parametrize(
    ("cls", "builtin", "exit_code"),
    [
        (errors.ConfigError, ValueError, 2),
        (errors.InputReadError, RuntimeError, 1),
        (errors.TaskDbError, ValueError, 1),
        (errors.TaskDbMissing, ValueError, 2),
        (errors.MissingExtra, RuntimeError, 1),
        (errors.OutputLocationError, ValueError, 1),
        (errors.DatacubeUnavailable, RuntimeError, 1),
        (errors.S3AccessError, ValueError, 1),
        (GatewayAuthError, PermissionError, 1),
        (GatewayWorkersTimeout, TimeoutError, 1),
        (GatewayClusterFailed, RuntimeError, 1),
        (GatewayUnreachable, ConnectionError, 1),
        (GatewayRefused, ValueError, 1),
        (GatewayClusterNotFound, LookupError, 1),
        (DatacubeConfigError, RuntimeError, 1),
        (EmbeddedPostgresError, RuntimeError, 1),
        (IndexingError, RuntimeError, 1),
    ],
)
def test_every_error_has_the_root_and_keeps_its_builtin_base(cls, builtin, exit_code):
    assert issubclass(cls, errors.NDVIPluginError) and issubclass(cls, builtin)
    assert cls.exit_code == exit_code


def test_old_homes_still_export_the_errors():
    from odc_ndvi_plugin._extras import MissingExtra
    from odc_ndvi_plugin._validate import ConfigError
    from odc_ndvi_plugin.load import InputReadError
    from odc_ndvi_plugin.ops.taskdb import TaskDbError

    assert (ConfigError, InputReadError, TaskDbError, MissingExtra) == (
        errors.ConfigError,
        errors.InputReadError,
        errors.TaskDbError,
        errors.MissingExtra,
    )


def _command(error: Exception) -> click.Group:
    @click.command("boom")
    @verbose_option
    @one_line_errors
    def boom() -> None:
        raise error

    group = click.Group("odc-ndvi", commands=[boom])
    return group


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            errors.ConfigError("run config: threads", "expected an integer"),
            2,
            "run config: threads",
        ),
        (errors.TaskDbMissing("task db 'x.db' does not exist"), 2, "task db 'x.db' does not"),
        (errors.OutputLocationError("output_location 'file:///x' is not writable"), 1, "output"),
        (KeyError("seasons"), 1, "unexpected error (a bug, please report it): KeyError: 'seasons'"),
        (ValueError("odd"), 1, "unexpected error (a bug, please report it): ValueError: odd"),
    ],
)
def test_the_cli_prints_one_line_and_calls_anything_else_a_bug(error, code, line):
    group = _command(error)
    quiet = CliRunner().invoke(group, ["boom"])
    assert quiet.exit_code == code
    assert isinstance(quiet.exception, SystemExit)
    (message,) = quiet.output.strip().splitlines()
    assert message.startswith(f"Error: {line}"), message
    assert message.endswith("(-v: traceback)") == (not isinstance(error, errors.NDVIPluginError))
    verbose = CliRunner().invoke(group, ["boom", "-v"])
    assert verbose.exit_code == code
    assert "Traceback (most recent call last)" in verbose.output
    assert "(-v: traceback)" not in verbose.output


def test_every_command_takes_the_shared_verbose_option():
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert "verbose" in {p.name for p in command.params}, name


def test_a_queue_that_cannot_be_used_is_one_line_naming_it(monkeypatch):
    """odc-stats' queue lookup fails with botocore's errors (no such queue, no region or
    credentials): one line of ours, not 'a bug'."""
    import odc.aws.queue
    from botocore.exceptions import ClientError, NoRegionError

    from odc_ndvi_plugin.ops.sqs import QueueUnavailable, SqsTaskSource

    for error in (
        ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "GetQueueUrl"),
        NoRegionError(),
    ):

        def lookup(name, error=error):
            raise error

        monkeypatch.setattr(odc.aws.queue, "get_queue", lookup)
        with pytest.raises(QueueUnavailable, match="SQS queue 'ndvi-tasks' cannot be used: "):
            SqsTaskSource("ndvi-tasks", None)


# -- library errors deep in a run, met for real ----------------------------------------------


@pytest.mark.servers
def test_a_queue_url_with_no_queue_behind_it_ends_the_run_in_one_line(
    moto_env, sqs_queue, tmp_path
):
    """botocore's QueueDoesNotExist at the first receive (the URL is opened lazily): one
    line naming the queue, exit 1; not 'a bug'. A child process: the run's S3 set-up
    changes GDAL's process-wide settings (unsigned reads), which must not reach other tests."""
    from tests.helpers.ops_bench import SEASONAL_RUN, odc_ndvi

    wrong = sqs_queue.url.rsplit("/", 1)[0] + "/no-such-queue"
    result = odc_ndvi(
        "run", "--config", str(SEASONAL_RUN), "--location", tmp_path.as_uri(),
        "--from-sqs", wrong, "--threads", "1",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    said = [line for line in result.stderr.splitlines() if "WARNING" in line or "Error" in line]
    assert said[-1] == (
        f"Error: SQS queue {wrong} cannot be received from: QueueDoesNotExist: An error "
        "occurred (AWS.SimpleQueueService.NonExistentQueue) when calling the ReceiveMessage "
        "operation: The specified queue does not exist."
    ), result.stderr
    assert said[-2].endswith("Stopping on QueueUnavailable: cancelling 0 task(s) in flight")
    assert "Traceback" not in result.stderr and "Interrupted" not in result.stderr


@pytest.mark.servers
def test_an_sqs_endpoint_that_does_not_answer_is_one_line_naming_the_queue(moto_env, monkeypatch):
    from odc_ndvi_plugin.ops.sqs import QueueUnavailable, SqsTaskSource
    from odc_ndvi_plugin.storage import sqs_resource
    from tests.fixtures.servers import free_port

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    url = f"{moto_env.endpoint}/123456789012/ndvi-tasks"
    source = SqsTaskSource(sqs_resource().Queue(url), None)
    with pytest.raises(QueueUnavailable) as got:
        source.receive(busy=False)
    assert str(got.value).startswith(
        f"SQS queue {url} cannot be received from: EndpointConnectionError: "
    ), got.value
    assert "\n" not in str(got.value) and got.value.exit_code == 1


def _dead_database() -> str:
    from tests.fixtures.servers import free_port

    return f"postgresql+psycopg2://odc:s3cret-pw@127.0.0.1:{free_port()}/datacube"


def test_a_database_that_cannot_be_reached_is_one_line_naming_it():
    """A dead PostgreSQL port under datacube's index connection: DatacubeUnavailable naming
    the database (password redacted), from every index use of the dev tooling (the demo's
    one line: tests/test_configs.py::test_demo_with_an_unreachable_database_...)."""
    from odc_ndvi_plugin.dev.index import DatacubeEnv, init_index

    url = _dead_database()
    env = DatacubeEnv(db_url=url, source="test")
    for attempt in (lambda: init_index(env), env.datacube):
        with pytest.raises(errors.DatacubeUnavailable) as got:
            attempt()
        text = str(got.value)
        assert text.startswith(
            f"datacube index {url.replace('s3cret-pw', '***')} cannot be reached: "
            "OperationalError: connection to server at "
        ), text
        assert "s3cret" not in text and "\n" not in text
