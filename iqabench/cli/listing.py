"""``iqabench list``: what is registered, with a one-line description and whether weights are present."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..registry import BENCHMARKS, GENERATORS, METRICS
from .common import PluginOption, fail, load_plugins, out_console, user_errors


def list_command(
    what: Annotated[str, typer.Argument(help="generators, metrics, benchmarks or prompts")],
    plugin: PluginOption = None,
) -> None:
    """Show what is available, with a one-line description and whether weights are present locally."""
    from ..prompts import BUILTIN_SETS

    try:
        load_plugins(plugin)
    except user_errors() as exc:
        fail(exc)
    registries = {"generators": GENERATORS, "metrics": METRICS, "benchmarks": BENCHMARKS}
    if what == "prompts":
        table = Table("name", "description")
        for name, (description, _) in BUILTIN_SETS.items():
            table.add_row(name, description)
        out_console.print(table)
        return
    if what not in registries:
        from ..registry import unknown_name_message

        fail(ValueError(unknown_name_message("list", what, [*registries, "prompts"]).split(" Run")[0]))
    registry = registries[what]
    table = Table("name", "description", *(["weights"] if what != "benchmarks" else []))
    for entry in registry:
        row = [entry.name, entry.description]
        if what != "benchmarks":
            row.append(entry.weights_status())
        table.add_row(*row)
    out_console.print(table)
