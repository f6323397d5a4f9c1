"""Is a run that run.json calls ``running`` still running? pid + host + a heartbeat file say.

Light on purpose (no torch): ``iqabench list runs`` reads it for every run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
from collections.abc import Iterator
from typing import Any

HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_S = 30.0
#: A run on another host whose heartbeat is older than this is shown as dead (several missed beats).
STALE_AFTER_S = 10 * HEARTBEAT_S


def owner() -> dict[str, Any]:
    """Who writes this run: process id and host, recorded in run.json while it runs."""
    return {"pid": os.getpid(), "host": platform.node()}


class Heartbeat:
    """Touches ``runs/<id>/heartbeat`` every :data:`HEARTBEAT_S` seconds while a run works (a daemon thread).

    ``list runs`` reads it with the pid and host in run.json: a run whose process is gone (same host) or whose
    heartbeat stopped (another host sharing the store) is shown as dead, never as running forever.
    """

    def __init__(self, run_dir: Any, every: float = HEARTBEAT_S):
        import threading

        self.path = run_dir / HEARTBEAT_FILE
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="iqabench-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.path.touch()
            except OSError:  # a full or vanished disk must not kill the run; list runs then calls it stale
                pass


def _pid_alive(pid: int) -> bool:
    if not 0 < pid < 2**31:  # a damaged or crafted run.json: no such process (os.kill would overflow)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def liveness(data: dict[str, Any], run_dir: Any, now: float | None = None) -> str:
    """The status to show: run.json's, except a ``running`` run whose writer is gone, which is ``dead``.

    Same host: the recorded pid no longer exists, or exists but the heartbeat is older than
    :data:`STALE_AFTER_S` (the pid was reused). Another host: no heartbeat for :data:`STALE_AFTER_S`.
    """
    import time

    status = str(data.get("status", ""))
    if status != "running":
        return status
    who = data.get("owner") if isinstance(data.get("owner"), dict) else {}  # a damaged run.json: no owner
    beat = run_dir / HEARTBEAT_FILE
    age = (now or time.time()) - beat.stat().st_mtime if beat.is_file() else None
    if who.get("host") == platform.node() and isinstance(who.get("pid"), int) and not isinstance(who["pid"], bool):
        if not _pid_alive(who["pid"]):
            return f"dead (process {who['pid']} is gone; re-run to resume)"
        if age is None or age <= STALE_AFTER_S:
            return status
        # the pid exists but the heartbeat thread stopped long ago: another process got the pid (containers
        # restart pids from 1), so the run's writer is gone
        return f"dead (process {who['pid']} has not beaten for {age / 60:.0f} min; re-run to resume)"
    if age is None or age > STALE_AFTER_S:
        since = "never" if age is None else f"{age / 60:.0f} min ago"
        return f"dead (last heartbeat {since}; re-run to resume)"
    return status


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's scancel or time limit, ``docker stop``, ``kill``) raised as an interrupt, so the run ends
    down the Ctrl-C path: run.json says ``interrupted``, and a re-run resumes from the cache."""

    exit_code = 128 + signal.SIGTERM

    def __init__(self) -> None:
        super().__init__("SIGTERM")


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While a run works, SIGTERM raises :class:`Terminated` (the default would end the process at once and
    leave run.json ``running``); the previous handler is put back afterwards. Only the main thread can install
    handlers: elsewhere (a run started from a worker thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
