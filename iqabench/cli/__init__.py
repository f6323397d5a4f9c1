"""The ``iqabench`` command line: parses, prints, and calls the Python API (:mod:`iqabench.api`, registries).

One module per job: :mod:`.app` (the Typer app and ``main``), :mod:`.run`,
:mod:`.report`, :mod:`.listing` (commands), :mod:`.progress` (rich bars for the
runner), :mod:`.summary` (terminal table), :mod:`.relaunch` (``--num-processes``),
:mod:`.plugins` (commands from the ``iqabench.cli`` entry-point group).
"""

from .app import app, main

__all__ = ["app", "main"]
