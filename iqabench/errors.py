"""The CLI's one error boundary: which exceptions are the user's (one sentence) and which are bugs (traceback).

A user or environment error (a bad spec, a missing file, a full disk, a
read-only folder) is printed as one sentence and exits with code 2. A
programming error, in iqabench or in a plugin, keeps its traceback: catching
every ``ValueError`` turned a plugin bug deep in pandas into
"error: All arrays must be of the same length", with nothing to debug from.

The rule: our own error classes and every ``OSError`` are user/environment
errors; a plain ``ValueError``/``TypeError``/``KeyError`` counts as one only
when iqabench's own code raised it (its messages are written for users);
raised from inside a library or a plugin file it is a bug and keeps its
traceback. ``IQABENCH_DEBUG=1`` shows the traceback for everything.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sqlite3
from functools import cache
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3
DEBUG_ENV = "IQABENCH_DEBUG"

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or point --out at another disk) and re-run; "
                  "finished images and scores are kept",
    errno.EDQUOT: "the disk quota is exhausted: free some space and re-run; finished work is kept",
    errno.EROFS: "the file system is read-only: pick a writable --out folder",
    errno.EACCES: "permission denied: pick a folder you can write to, or fix its permissions",
    errno.EPERM: "permission denied: pick a folder you can write to, or fix its permissions",
    errno.ENOTDIR: "a part of this path is a file, not a folder: pick another path",
    errno.EISDIR: "this path is a folder where a file is needed: give a file name",
    errno.EEXIST: "this path already exists as a file: pick another path",
}


@cache
def _own_roots() -> tuple[str, ...]:
    """Folders holding iqabench's own code (the editable layout maps subpackages to sibling folders)."""
    roots = []
    for package in ("iqabench", "iqabench.adapters", "iqabench.benchmarks", "iqabench.reports"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.append(str(Path(location).resolve()) + os.sep)
    return tuple(roots)


def raised_by_iqabench(exc: BaseException) -> bool:
    """True when the innermost frame of the traceback is iqabench's own code (not a library, not a plugin)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    return filename.startswith(_own_roots())


def os_error_sentence(exc: OSError) -> str:
    """``cannot write /x/y: No space left on device (the disk is full: ...)``: what, where, what to do."""
    if exc.errno is None or not exc.strerror:
        text = " ".join(str(exc).split())
        if isinstance(exc, FileNotFoundError) and text and " " not in text:  # libraries raise it with a bare path
            return f"{text}: no such file or folder"
        return text or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    hint = _OS_HINTS.get(exc.errno)
    text = f"{where}: {exc.strerror}" if where else exc.strerror
    return f"{text} ({hint})" if hint else text


def user_error_classes() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is always written for the user, wherever they are raised."""
    from .atomic_io import UnwritablePathError
    from .benchmark import UnknownOptionError
    from .generators import WeightsMissingError
    from .metrics import MetricContractError, MetricUnavailableError
    from .prompts import PromptFileError
    from .registry import PluginImportError, RegistryError, UnknownNameError
    from .specs import SpecError
    from .store import CorruptImageError, StoreError

    return (UnknownNameError, RegistryError, WeightsMissingError, MetricUnavailableError, MetricContractError,
            PromptFileError, SpecError, StoreError, UnwritablePathError, CorruptImageError, UnknownOptionError,
            PluginImportError, ImportError, OSError)


def user_message(exc: BaseException) -> str | None:
    """The one sentence to print for a user/environment error, or None for a bug (print the traceback)."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return None
    from .atomic_io import UnwritablePathError
    from .store import CorruptImageError, StoreError

    if isinstance(exc, OSError) and not isinstance(exc, (StoreError, UnwritablePathError, CorruptImageError)):
        return os_error_sentence(exc)
    if isinstance(exc, user_error_classes()):
        return _sentence(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return _database_sentence(exc)
    if isinstance(exc, (ValueError, TypeError, KeyError)) and (exc.__traceback__ is None or raised_by_iqabench(exc)):
        return _sentence(exc)  # no traceback: built by the CLI itself to be printed
    return None


_SQLITE_HINTS = {
    "disk is full": "the disk is full: free some space and re-run; finished images and scores are kept",
    "readonly database": "the store is read-only: pick a writable --out folder",
    "unable to open database file": "the store's cache folder cannot be written: check --out and its permissions",
    "disk i/o error": "the disk reported an I/O error: check it, then re-run",
    "database is locked": "another process held the database for over a minute: re-run when it is done",
    "file is not a database": "cache/scores.sqlite is damaged: move it aside and re-run to recompute the scores "
                              "(cached images are kept)",
    "malformed": "cache/scores.sqlite is damaged: move it aside and re-run to recompute the scores "
                 "(cached images are kept)",
}


def _database_sentence(exc: sqlite3.DatabaseError) -> str | None:
    """SQLite's environment errors (a full disk, a damaged file) are one sentence; SQL mistakes are bugs."""
    text = str(exc).lower()
    for needle, hint in _SQLITE_HINTS.items():
        if needle in text:
            return f"the score database failed: {exc} ({hint})"
    return None


def _sentence(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__
