"""SQLite write transactions for the store and its per-process shards.

The connections are opened in autocommit mode (``isolation_level=None``), so
Python's ``sqlite3`` starts no transaction on its own and every write goes
through :func:`immediate_transaction`. ``BEGIN IMMEDIATE`` takes the write lock
when the transaction starts, not at its first write: a deferred transaction that
read first and then tried to upgrade its lock could fail half-way with
"database is locked" while another process writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def retry_locked(action: Callable[[], T], *, seconds: float = 60.0) -> T:
    """Run ``action`` again while SQLite says "database is locked" (busy_timeout does not cover every path)."""
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@contextmanager
def immediate_transaction(conn: sqlite3.Connection, *, retry_begin: bool = False) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception in the block (KeyboardInterrupt too) rolls it back.

    ``retry_begin`` retries the BEGIN while another process holds the lock (:func:`retry_locked`): the shared
    store has several writers; a shard has one process and needs no retry.
    """
    if retry_begin:
        retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
    else:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
