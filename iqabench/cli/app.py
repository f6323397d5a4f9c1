"""The ``iqabench`` Typer app: the core commands, the shared ``train`` group, plugin commands, and ``main``."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from .common import console, user_errors
from .listing import list_command
from .plugins import mount_plugin_commands
from .report import report_command
from .run import run_command

app = typer.Typer(
    name="iqabench",
    help="Quality-aware text-to-image generation and IQA robustness benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_command)
app.command("report")(report_command)
app.command("list")(list_command)

#: Groups plugins may add commands to (``groups["train"].command("my-method")(...)``).
train_app = typer.Typer(help="Train generators and their evaluators: iqa-adapter, acpo, ipce, two-stream.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
groups: dict[str, typer.Typer] = {"train": train_app}

mount_plugin_commands(app, groups)


def main() -> None:
    try:
        app()  # usage errors are handled (and exit) inside; other exceptions come out here
    except user_errors() as exc:  # any command, mounted ones included: one sentence, no traceback
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume from the cache")
        sys.exit(130)
