"""What every command shares: the consoles, the ``--out``/``--plugin`` options and the one-sentence error exit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..registry import RegistryError, UnknownNameError, load_plugin

console = Console(stderr=True)
out_console = Console()

DEFAULT_OUT = os.environ.get("IQABENCH_OUT", "iqabench_out")
OutOption = Annotated[Path, typer.Option("--out", help="Store folder: image cache, scores, runs.")]
PluginOption = Annotated[
    list[str] | None, typer.Option("--plugin", help="A .py file or module that registers things (repeatable).")
]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a command catches and hands to :func:`fail`, which decides: one sentence, or the traceback."""
    from ..generators import WeightsMissingError
    from ..metrics import MetricUnavailableError
    from ..prompts import PromptFileError
    from ..specs import SpecError

    return (UnknownNameError, RegistryError, WeightsMissingError, MetricUnavailableError, PromptFileError,
            SpecError, ValueError, OSError, ImportError)


def print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(exc: BaseException) -> None:
    """One sentence and exit code 2 for a user or environment error; a bug is re-raised with its traceback.

    Call it inside an ``except`` block (see :mod:`iqabench.errors` for the rule).
    """
    from ..errors import EXIT_USER_ERROR, user_message

    message = user_message(exc)
    if message is None:
        raise exc
    print_error(message)
    raise typer.Exit(code=EXIT_USER_ERROR)


def load_plugins(plugins: list[str] | None) -> None:
    """Import each ``--plugin`` file or module so its registrations exist before the command looks names up."""
    for plugin in plugins or []:
        load_plugin(plugin)
