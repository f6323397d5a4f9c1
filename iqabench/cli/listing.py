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
    options: Annotated[bool, typer.Option("--options", help="With benchmarks: each one's --option keys.")] = False,
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
    if what == "benchmarks" and options:
        _print_benchmark_options()
        return
    table = Table("name", "description", *(["weights"] if what != "benchmarks" else []))
    for entry in registry:
        row = [entry.name, entry.description]
        if what != "benchmarks":
            row.append(entry.weights_status())
        table.add_row(*row)
    out_console.print(table)


def _print_benchmark_options() -> None:
    """Each benchmark's declared ``--option`` keys, then the options every benchmark takes."""
    from ..benchmark import CORE_OPTIONS, build_benchmark, declared_options

    table = Table("benchmark", "option", "meaning")
    for entry in BENCHMARKS:
        declared = declared_options(build_benchmark(entry.name))
        if declared is None:
            table.add_row(entry.name, "(not declared)", "any key is accepted")
        elif not declared:
            table.add_row(entry.name, "(none)", "only the options every benchmark takes")
        for key, meaning in sorted((declared or {}).items()):
            table.add_row(entry.name, key, meaning)
    for key, meaning in CORE_OPTIONS.items():
        table.add_row("(every benchmark)", key, meaning)
    out_console.print(table)
