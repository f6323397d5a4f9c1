"""The ``iqabench`` Typer app: the core commands, the shared ``train`` group, plugin commands, and ``main``."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click
import typer
from typer.core import TyperGroup

from .common import console, print_error
from .fetch import FetchCommand, fetch_command
from .listing import list_command
from .plugins import mount_plugin_commands
from .report import report_command
from .run import run_command
from .store import store_app


class BoundaryGroup(TyperGroup):
    """The root command group: every command, mounted ones included, runs inside its error boundary.

    Living in the group (not only in :func:`main`) makes ``CliRunner().invoke(app, ...)`` and ``python -m
    iqabench`` behave alike: a user error is one sentence with exit code 2, a bug its traceback plus the
    "this is a bug" line (see :mod:`.boundary`).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, typer.Exit, typer.Abort):
            raise  # click's and typer's own exits and usage errors (typer's Exit is not click's)
        except Exception as exc:
            from .boundary import EXIT_USER_ERROR, bug_report_line, user_message

            message = user_message(exc)
            if message is None:  # a bug (ours or a plugin's): the traceback is what its author needs
                traceback.print_exception(exc)
                print_error(bug_report_line(exc))
                exc.iqabench_reported = True  # type: ignore[attr-defined]
                raise
            print_error(message)
            raise typer.Exit(code=EXIT_USER_ERROR) from None


app = typer.Typer(
    cls=BoundaryGroup,
    name="iqabench",
    help="Quality-aware text-to-image generation and IQA robustness benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"iqabench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the iqabench version and exit."),
) -> None:
    """Quality-aware text-to-image generation and IQA robustness benchmarks."""


app.command("run")(run_command)
app.command("fetch", cls=FetchCommand)(fetch_command)
app.command("report")(report_command)
app.command("list")(list_command)
app.add_typer(store_app, name="store")

#: Groups plugins may add commands to (``groups["train"].command("my-method")(...)``).
train_app = typer.Typer(help="Train generators and their evaluators: iqa-adapter, acpo, ipce, two-stream.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
groups: dict[str, typer.Typer] = {"train": train_app}

mount_plugin_commands(app, groups)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the error boundary itself is :class:`BoundaryGroup` (see :mod:`iqabench.cli.boundary`)."""
    from ..execution.host_allocator import keep_freed_host_memory

    keep_freed_host_memory()  # before the pipelines' buffers: CPU steps reuse memory instead of faulting it in
    try:
        app(args=argv)  # usage errors are handled (and exit) inside; other exceptions come out here
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a run (exit 143 then, as if killed by it)
        console.print("interrupted; re-run the same command to resume from the cache")
        sys.exit(getattr(exc, "exit_code", 130))
    except Exception as exc:
        if not getattr(exc, "iqabench_reported", False):  # raised outside a command (e.g. while mounting)
            from .boundary import EXIT_USER_ERROR, bug_report_line, user_message

            message = user_message(exc)
            if message is not None:
                print_error(message)
                sys.exit(EXIT_USER_ERROR)
            traceback.print_exception(exc)
            print_error(bug_report_line(exc))
        sys.exit(1)
