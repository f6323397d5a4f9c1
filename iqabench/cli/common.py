"""What every command shares: the consoles, the ``--out``/``--plugin`` options and the error line's format.

Errors are not caught here: every command runs inside the one boundary, :class:`iqabench.cli.app.BoundaryGroup`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..contracts.registry import load_plugin

console = Console(stderr=True)
out_console = Console()

DEFAULT_OUT = os.environ.get("IQABENCH_OUT", "iqabench_out")
OutOption = Annotated[Path, typer.Option("--out", help="Store folder: image cache, scores, runs.")]
PluginOption = Annotated[
    list[str] | None, typer.Option("--plugin", help="A .py file or module that registers things (repeatable).")
]


def print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def load_plugins(plugins: list[str] | None) -> None:
    """Import each ``--plugin`` file or module so its registrations exist before the command looks names up."""
    for plugin in plugins or []:
        load_plugin(plugin)
