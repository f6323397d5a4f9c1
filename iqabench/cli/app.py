"""The ``iqabench`` Typer app: the core commands, the shared ``train`` group, plugin commands, and ``main``."""

from __future__ import annotations

import sys

import typer

from .common import console, print_error
from .listing import list_command
from .plugins import mount_plugin_commands
from .report import report_command
from .run import run_command
from .store import store_app

app = typer.Typer(
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
    """The one error boundary of every command, mounted ones included (see :mod:`iqabench.errors`)."""
    from ..errors import EXIT_USER_ERROR, user_message

    try:
        app(args=argv)  # usage errors are handled (and exit) inside; other exceptions come out here
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume from the cache")
        sys.exit(130)
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise  # a bug (ours or a plugin's): the traceback is what its author needs
        print_error(message)
        sys.exit(EXIT_USER_ERROR)
