"""The CLI's one error boundary: an exception's *type* says whether it is the user's (one sentence) or a bug.

Every command, plugin commands included, runs inside :func:`iqabench.cli.app.main`, which asks
:func:`user_message` what to print. One sentence and exit code 2 for:

* :class:`~iqabench.contracts.errors.UserError` and its subclasses, raised where the user's mistake is detected;
* ``OSError`` (a missing file, a full disk, a read-only folder), with a hint per errno;
* SQLite's environment errors (a locked, full or damaged database), with a hint;
* a missing optional package (``ModuleNotFoundError`` for a module outside iqabench).

Everything else (a ``KeyError`` in an analysis, a ``zip(strict=True)`` mismatch, a plugin's ``ValueError``) is a
bug: the traceback is printed with a line asking to report it. ``IQABENCH_DEBUG=1`` shows the traceback for
everything. The type, not the innermost frame, decides: a plain ``ValueError`` raised by iqabench's own code is a
bug too.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from ..contracts.errors import EXIT_INCOMPLETE, EXIT_USER_ERROR, UserError

__all__ = ["EXIT_INCOMPLETE", "EXIT_USER_ERROR", "bug_report_line", "os_error_sentence", "user_message"]

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


BUG_LINE = "this is a bug in iqabench, please report it"


def user_message(exc: BaseException) -> str | None:
    """The one sentence to print for a user/environment error, or None for a bug (print the traceback)."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return None
    if isinstance(exc, UserError):
        return _sentence(exc)
    if isinstance(exc, OSError):
        return os_error_sentence(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return _database_sentence(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] != "iqabench":
        return f"{_sentence(exc)}: install it (pip install {exc.name.split('.')[0]}) to use this feature"
    return None


def bug_report_line(exc: BaseException) -> str:
    """The line printed under a bug's traceback."""
    return (f"{BUG_LINE} (with the traceback above; if its last frames are in a plugin, report it to the plugin's "
            f"author): {type(exc).__name__}")


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
