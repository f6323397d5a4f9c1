"""A run id is bound to the spec that first used it: another spec is refused, and two processes never share one.

Before issue 26, ``--run-id X`` with a different spec ran without a word and replaced X's run.json, tables and
report, and two different specs started at once under one id both exited 0, one overwriting the other. Now:

* :func:`spec_differences` compares the spec a run folder's ``run.json`` records with the new one, field by
  field, ignoring the fields that say *how* a run executes rather than *what* it computes (a resume may use
  another batch size or turn ``--compile`` on). It is one small function so that moving speed flags out of the
  spec (issue 22's ``Execution``) only shrinks :data:`HOW_FIELDS`.
* :func:`claim_run` takes an exclusive, non-blocking ``flock`` on ``runs/<id>/.lock`` for the whole run and then
  checks the recorded spec; a second process asking for the same id while the first holds it is refused. The
  kernel drops the lock when its holder dies (SIGKILL included), so a killed run resumes without clean-up.
  ``flock`` is advisory and per host: two hosts on a network file system are not ordered by it (the sharded
  multi-process run takes the lock in process 0 only).

``--overwrite`` (``Runner(..., overwrite=True)``) lets a different spec replace the run; the lock is taken still.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any

from ..contracts.errors import UserInputError

#: RunSpec fields that change how a run executes, never what it computes: not a spec difference.
HOW_FIELDS = frozenset({"batch_size", "device"})  # device: in run.json specs written before issue 22
#: Core options with the same role (speed switches recorded in run.json, not in image keys).
HOW_OPTIONS = frozenset({"compile", "attention_slicing", "channels_last", "fuse_qkv", "sdpa_backend",
                         "auto_batch_size"})
LOCK_FILE = ".lock"


class RunIdInUseError(UserInputError):
    """The run id belongs to another spec, or another process is running it; the message says which."""


def _what(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k not in HOW_FIELDS}
    if isinstance(out.get("options"), dict):
        out["options"] = {k: v for k, v in out["options"].items() if k not in HOW_OPTIONS}
    return out


def spec_differences(recorded: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the spec fields that differ (``options.scales`` for an option), sorted; [] when the same run."""
    old, now = _what(recorded), _what(new)
    differ = []
    for name in sorted(set(old) | set(now)):
        if name == "options" and isinstance(old.get(name), dict) and isinstance(now.get(name), dict):
            differ += [f"options.{k}" for k in sorted(set(old[name]) | set(now[name]))
                       if old[name].get(k) != now[name].get(k)]
        elif old.get(name) != now.get(name):
            differ.append(name)
    return differ


class RunJson:
    """A run folder's run.json, read once per version of the file (issue 29).

    A run start looks at run.json three times: the spec check before planning, the same check under the run's
    lock, and the resume's comparison with the finished run (``Runner._read_previous_manifest``). The document
    is kept with the file's (device, inode, size, mtime_ns, ctime_ns) and read again only when those changed.
    iqabench writes run.json by atomic rename, so every version is a new file; for a version written in between
    to look unchanged, a whole run of another process would have to fit between two ticks of the file system's
    clock. A document that failed to read is not kept: the next look reads (and fails) again.
    """

    def __init__(self, path: Path):
        self.path = path
        self._version: tuple[int, ...] | None = None
        self._document: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        """The document (do not modify it), None when there is no run.json; ValueError when it cannot be read."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):  # not a file: no run recorded (as before issue 29)
            self._version = self._document = None
            return None
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if version != self._version:
            from ..store.run_folders import read_json_document  # bounded, shape-checked read (issue 26, item 5)

            self._version = None
            self._document = read_json_document(self.path)
            self._version = version
        return self._document


def recorded_spec(run_json: Path | RunJson) -> dict[str, Any] | None:
    """The spec a run.json records; None when there is no run.json. An unreadable one is treated as foreign."""
    reader = run_json if isinstance(run_json, RunJson) else RunJson(run_json)
    document = reader.read()
    if document is None:
        return None
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise RunIdInUseError(f"{reader.path} records no spec; pass --overwrite to replace that run, or pick "
                              "another --run-id")
    return spec


def check_run_id(run_dir: Path, spec: dict[str, Any], *, overwrite: bool = False,
                 run_json: RunJson | None = None) -> None:
    """Refuse (RunIdInUseError, one sentence with the differing fields) a run id whose run.json holds another spec.
    ``run_json``: the folder's reader, shared by a run's checks so an unchanged file is read once."""
    if overwrite:
        return
    try:
        old = recorded_spec(run_json if run_json is not None else run_dir / "run.json")
    except ValueError as exc:  # unreadable run.json: another run's, perhaps damaged; never overwritten silently
        raise RunIdInUseError(f"run id {run_dir.name!r} is taken by a run whose run.json cannot be read ({exc}); "
                              "pass --overwrite to replace it, or pick another --run-id") from None
    if old is None:
        return
    differ = spec_differences(old, spec)
    if differ:
        raise RunIdInUseError(
            f"run id {run_dir.name!r} already holds a run of another spec (differing: {', '.join(differ)}); "
            "pick another --run-id, leave --run-id out (the default id is derived from the spec), or pass "
            "--overwrite to replace that run")


class RunClaim:
    """The held lock of one run folder; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def claim_run(run_dir: Path, spec: dict[str, Any], *, overwrite: bool = False,
              run_json: RunJson | None = None) -> RunClaim:
    """Lock ``run_dir`` for this process (refusing a second one), then check its recorded spec (see module doc)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunIdInUseError(f"run id {run_dir.name!r} is being run by another process (pid {holder}); wait for "
                              "it to finish, or pick another --run-id") from None
    claim = RunClaim(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        check_run_id(run_dir, spec, overwrite=overwrite, run_json=run_json)
    except BaseException:
        claim.release()
        raise
    return claim

