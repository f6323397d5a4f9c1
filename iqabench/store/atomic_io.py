"""Atomic file writes: a temporary name in the same folder, fsync, then a rename over the target.

A reader (or a run killed at any instant) sees the whole old file or the whole
new one, never half of either: ``os.replace`` within one folder is atomic on
every POSIX file system, NFS included. Temporary names carry the writer's host
and pid, ``.<name>.<host>.<pid>.<8 hex>.tmp``, so a later run can tell a dead
writer's leftovers from a live one's (:func:`is_stale_temp_file`) and delete
only those, even while other processes write, on a shared file system too.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from pathlib import Path

from ..contracts.errors import UserError

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


class UnwritablePathError(UserError, OSError):
    """A path iqabench will not write a file at (a folder, a device, a file where a folder should be)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp_file(path: Path) -> bool:
    """A temporary file of a writer on this host that is dead (live writers' and other hosts' files are not)."""
    match = _TMP_RE.match(Path(path).name)
    return bool(match) and match["host"] == _HOST and not _pid_alive(int(match["pid"]))


def refuse_file_in_path(path: Path) -> None:
    """Name the file that stands where a folder of ``path`` should be (``-o report.html/x.html``): ``mkdir``
    would only say "File exists", about the folder it was asked to make."""
    for folder in Path(path).parents:
        if folder.exists():
            if not folder.is_dir():
                raise UnwritablePathError(f"{path} cannot be written: {folder} is a file, not a folder")
            return


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers see all of it or nothing.

    Only regular files are replaced: renaming over ``/dev/null`` (``report -o /dev/null`` run as root) would
    swap the device for a file, and over a folder it fails with a bare errno.
    """
    path = Path(path)
    if not path.is_symlink() and path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise UnwritablePathError(f"{path} is {kind}; iqabench only writes regular files there: give a file path")
    refuse_file_in_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_directory(folder: Path) -> None:
    """Make the renames into ``folder`` durable (its entries reach the disk), where the platform allows it.

    A file's own fsync does not persist the directory entry a rename made: after a power loss the name can be
    gone although the bytes were flushed. Windows cannot open a folder for fsync; there this does nothing."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):  # pragma: no cover - Windows
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
