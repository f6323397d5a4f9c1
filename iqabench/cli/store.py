"""``iqabench store verify [--repair]``: audit a store's cached images, links, temporary files and database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..contracts.errors import UserInputError
from .common import DEFAULT_OUT, OutOption, out_console

store_app = typer.Typer(help="Check and repair a store (image cache, scores, runs).", no_args_is_help=True)


@store_app.command("verify")
def verify_command(
    out: OutOption = Path(DEFAULT_OUT),
    repair: Annotated[bool, typer.Option("--repair", help="Move damaged images and links to cache/quarantine/ "
                                         "(the next run regenerates them) and drop stale records.")] = False,
) -> None:
    """Check every cached image (size record and full decode), links, leftovers and the database.

    Exits 0 when the store is sound (or was repaired), 3 when damage was found and left in place.
    """
    from ..contracts.errors import EXIT_INCOMPLETE
    from ..store.store import Store
    from ..store.store_check import verify_store

    if not out.is_dir():
        raise UserInputError(f"no store at {out}: pass --out the folder a run wrote")
    check = verify_store(Store(out), repair=repair)
    for line in check.lines():
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    if check.problems and not repair:
        raise typer.Exit(EXIT_INCOMPLETE)
