"""``odc-ndvi``: thin click commands over the rooms (runner, demo, synthetic, product).

Every problem ends as ONE line on stderr, ``Error: <what, where, what would be valid>``,
with exit status :data:`EXIT_USAGE` (2) for a wrong command line or configuration,
:data:`EXIT_FAILED` (1) when the work failed (a task, a task db that is corrupt, a gateway
that refuses) and :data:`EXIT_INTERRUPTED` (130) after Ctrl-C or SIGTERM; ``-v`` prints
the traceback before it. Commands import the runner, odc-stats and dask only when they run.

The group and what every command shares are here and in :mod:`._common` (``-v`` and the
one-line error wrapper, :func:`~._common.verbose_option` and
:func:`~._common.one_line_errors`); the commands are in :mod:`.run` (``run`` and its
:class:`~.run.RunOptions`), :mod:`.config` (``check-config``, ``product-definition``,
``init-config``, ``ows-config``) and :mod:`.tools` (``demo``, ``serve``, ``mosaic``,
``synth``, ``sweep-staging``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .._startup import skip_unused_imports
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CommandError, one_line, redacted
from .config import (
    check_config_command,
    init_config_command,
    ows_config_command,
    product_definition_command,
)
from .run import RunOptions, run_command
from .tools import (
    demo_command,
    mosaic_command,
    serve_command,
    sweep_staging_command,
    synth_command,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "RunOptions",
    "main",
    "run_command",
]


class _OneLineErrors(click.Group):
    """The command group: usage errors, config errors and failures as one line each.

    Commands defined in ``dev/`` are imported when they are asked for (by name, or for
    ``--help``), not when the CLI starts: ``odc-ndvi run`` never imports the demo tooling.
    """

    lazy_commands: dict[str, Callable[[], click.Command]] = {"synth": synth_command}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            return self.lazy_commands[cmd_name]()
        return super().get_command(ctx, cmd_name)

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as err:
            message = err.format_message()
            ctx = getattr(err, "ctx", None)
            if isinstance(err, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            click.echo(f"Error: {one_line(redacted(message))}", err=True)
            sys.exit(err.exit_code)
        except click.Abort as err:
            interrupted = isinstance(err.__context__, KeyboardInterrupt)
            click.echo("interrupted" if interrupted else "Aborted.", err=True)
            sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="odc-ndvi-plugin")
def main() -> None:
    """Cloud-masked seasonal NDVI statistics with odc-stats."""
    skip_unused_imports()  # before odc-stats/eodatasets3 pull jsonschema in (see _startup)


for _command in (
    run_command,
    check_config_command,
    product_definition_command,
    demo_command,
    ows_config_command,
    serve_command,
    mosaic_command,
    init_config_command,
    sweep_staging_command,
):
    main.add_command(_command)
