"""The one Jinja environment factory: every HTML page iqabench writes is rendered with autoescaping on.

Reports, the comparison page and the study page share these settings (autoescape, undefined names fail
loudly, block tags leave no blank lines); one environment per template package is kept per process, so
templates compile once.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import jinja2


@functools.cache
def html_environment(package: str | None = None, folder: str = "templates") -> jinja2.Environment:
    """An autoescaping environment loading ``package``'s ``folder`` (``None``: templates given as strings)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, folder) if package else None,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
