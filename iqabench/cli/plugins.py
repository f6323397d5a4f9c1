"""Commands contributed by plugin packages through the ``iqabench.cli`` entry-point group.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."iqabench.cli"]
    my-tool = "my_package.cli:mount"

and ``mount(app, groups)`` adds its commands to the root ``app`` or to a shared
group such as ``groups["train"]``. The core CLI imports no plugin package by
name; a broken plugin costs a warning, never the whole CLI. Plugin command
modules import their heavy dependencies (torch, diffusers) inside the commands,
so ``iqabench --help`` stays fast.
"""

from __future__ import annotations

import importlib.metadata

import typer
from rich.markup import escape

from .common import console

ENTRY_POINT_GROUP = "iqabench.cli"


def mount_plugin_commands(app: typer.Typer, groups: dict[str, typer.Typer]) -> list[str]:
    """Call every ``iqabench.cli`` entry point's ``mount(app, groups)``; returns the names mounted."""
    mounted = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            ep.load()(app, groups)
        except Exception as exc:
            console.print(f"[yellow]warning:[/] could not load CLI plugin {escape(ep.name)!r} "
                          f"({escape(ep.value)}): {escape(str(exc))}", highlight=False)
            continue
        mounted.append(ep.name)
    return mounted
