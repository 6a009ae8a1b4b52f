"""What every ``odc-ndvi`` command shares: exit statuses, the one-line error contract
(:func:`one_line_errors`), ``-v`` (:func:`verbose_option`), reading a YAML file, logging."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from ..errors import EXIT_FAILED, EXIT_USAGE

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "one_line",
    "one_line_errors",
    "plugin_of",
    "read_yaml",
    "redacted",
    "setup_logging",
    "verbose_option",
    "verbose_param",
]

EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """A one-line error with its exit status (``ClickException`` exits 1 only)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def redacted(text: str) -> str:
    from .._redact import redact_text, secret_values_from_environ

    return redact_text(text, secret_values_from_environ())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def errors(verbose: bool) -> Iterator[None]:
    """Exceptions of a command as one-line :class:`CommandError` s (``verbose``: after
    the traceback). The package's own errors (:class:`~odc_ndvi_plugin.errors.NDVIPluginError`)
    are their message, with their exit status (2: usage or configuration, 1: the work
    failed); anything else is a bug, and the line says so."""
    from ..errors import NDVIPluginError

    try:
        yield
    except (click.ClickException, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - every error becomes one line
        if verbose:
            click.echo(redacted(traceback.format_exc()).rstrip(), err=True)
        if isinstance(err, NDVIPluginError):
            raise CommandError(str(err), err.exit_code) from err
        text = f"unexpected error (a bug, please report it): {type(err).__name__}: {err}"
        raise CommandError(text + ("" if verbose else " (-v: traceback)"), EXIT_FAILED) from err


_VERBOSE: dict[str, Any] = {"is_flag": True, "help": "Log progress details; tracebacks on errors."}


def verbose_option(fn: F) -> F:
    """``-v/--verbose``: progress details in the log, tracebacks with errors."""
    return click.option("-v", "--verbose", **_VERBOSE)(fn)


def verbose_param() -> click.Option:
    """:func:`verbose_option` for a command made elsewhere (``params=[..., verbose_param()]``)."""
    return click.Option(["-v", "--verbose"], **_VERBOSE)


def one_line_errors(fn: F) -> F:
    """The command's exceptions as one line each (:func:`errors`; the traceback before it
    with ``-v``). Goes under :func:`verbose_option`; a command that does not take
    ``verbose`` itself does not get it."""
    takes_verbose = "verbose" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = kwargs["verbose"] if takes_verbose else kwargs.pop("verbose", False)
        with errors(bool(verbose)):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_yaml(path: str, what: str) -> dict[str, Any]:
    from ..errors import ConfigError

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{what} {path!r}", f"cannot read it: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path!r}", f"not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {path!r}", "must be a YAML mapping of keys to values")
    return doc


def setup_logging(verbose: bool) -> None:
    from .._redact import RedactingFilter

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def plugin_of(cfg: Any, config_path: str) -> Any:
    """The run config's plugin instance; a name that resolves to nothing or a
    ``plugin_config`` it refuses is a configuration error naming the key."""
    from odc.stats.plugins import resolve

    from ..errors import ConfigError

    try:
        make = resolve(cfg.plugin)
    except (ValueError, ImportError) as err:
        raise ConfigError(
            f"run config {config_path!r}: plugin",
            f"{cfg.plugin!r} cannot be resolved ({err}); use ndvi-seasonal or "
            f"odc_ndvi_plugin.NDVISeasonal",
        ) from err
    try:
        return make(**cfg.plugin_config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"run config {config_path!r}", str(err)) from err
