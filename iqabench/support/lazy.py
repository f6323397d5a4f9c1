"""PEP 562 lazy package exports, so that importing a package (and so ``iqabench --help``) stays cheap.

A package ``__init__`` that re-exports names from heavy submodules (torch,
diffusers, pyiqa) makes every import of any of its submodules pay for all of
them: Python runs the package ``__init__`` first. The CLI's plugin commands live
in such packages (``iqabench.adapters.acpo.cli``), so ``iqabench --help`` used to
import the whole stack (3.6 s). With ``lazy_exports`` the names load on first
attribute access, and ``from package import Name`` still works.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``{name: ".submodule"}`` on first access."""
    module_globals = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            module_globals[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(module_globals) | set(exports))

    return __getattr__, __dir__
