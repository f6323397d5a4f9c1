"""Per-process score shards: several processes share one Store without writing one SQLite file at once.

SQLite's locking relies on POSIX advisory locks (and, in WAL mode, on shared
memory), which network and parallel file systems (NFS, Lustre, GPFS) do not
always honour; SQLite's own documentation warns against concurrent writers on
them. So when a run has several processes, each process writes every row
(scores, failures, blobs) to a database file of its own,
``cache/score-shards/<run id>/<process index>.sqlite``, which nothing else
opens while the run is going. Reads during the run go to the shared database,
which nobody writes then. WAL mode needs every process on one host (its index is
shared memory in the ``-shm`` file, SQLite's "WAL does not work over a network
filesystem"), so process 0 checkpoints the WAL into the database file and switches
it to a rollback journal before the others open it (:func:`prepare_for_readers`),
and every process reads it through a ``query_only`` connection that never turns
WAL back on. Process 0's merge at the end switches it back to WAL. After the last barrier process 0, alone, merges the
shards into ``cache/scores.sqlite`` (``INSERT OR REPLACE``, so a row written
again wins, as in a single process) and deletes them. A run that died before
the merge leaves its shards behind; process 0 merges them when that run is
started again, before any process writes, so no score is lost.

Image files need none of this: each PNG is written to a temporary name and
renamed into place, which is atomic on every POSIX file system.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from .sqlite_tx import immediate_transaction
from .store import Store, safe_child

#: Tables a shard holds; the same columns as the Store's tables, merged row by row.
SHARDED_TABLES = ("scores", "failures", "blobs", "images")
#: A shard's record of what this process *deleted* (a quarantined image's scores and size record, scores
#: dropped to be recomputed): applied to the shared database before the shard's rows, so a stale score of a
#: damaged image cannot survive the merge.
_FORGOTTEN = ("CREATE TABLE IF NOT EXISTS forgotten (image_key TEXT NOT NULL, what TEXT NOT NULL, "
              "PRIMARY KEY (image_key, what))")


def shard_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """Where a run's shards live under a Store root (``run_id`` is checked like a run folder name)."""
    return safe_child(Path(root).expanduser().resolve() / "cache" / "score-shards", run_id)


def shard_path(root: str | os.PathLike[str], run_id: str, process_index: int) -> Path:
    return shard_dir(root, run_id) / f"{int(process_index)}.sqlite"


class ShardedStore(Store):
    """A Store whose writes go to this process's own SQLite shard; reads still see the shared database.

    Create the shared database first (``Store(root)`` in process 0, then a
    barrier), so that its tables exist before any other process reads them.
    """

    def __init__(self, root: str | os.PathLike[str], run_id: str, process_index: int):
        self._shard_path = shard_path(root, run_id, process_index)
        self._shard_path.parent.mkdir(parents=True, exist_ok=True)
        self._shard_local = threading.local()  # one connection per thread (the PNG writer thread writes too)
        self._shard_conns: list[sqlite3.Connection] = []
        self._shard_lock = threading.Lock()
        self._reader_local = threading.local()  # per-thread read-only connections to the shared database
        self.sharding = True
        super().__init__(root)  # creates the tables in the shard (writes go there), not in the shared database
        with self._transaction() as db:
            db.execute(_FORGOTTEN)

    @property
    def shard_file(self) -> Path:
        return self._shard_path

    def _thread_connection(self, local: threading.local, path: Path, pragma: str) -> sqlite3.Connection:
        """This thread's connection to ``path`` (opened once per thread and process, with ``pragma``), tracked so
        :meth:`_close_shard` closes every thread's."""
        if getattr(local, "conn", None) is None or getattr(local, "pid", None) != os.getpid():
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute(pragma)
            conn.execute("PRAGMA busy_timeout=60000")
            local.conn, local.pid = conn, os.getpid()
            with self._shard_lock:
                self._shard_conns.append(conn)
        return local.conn

    def _shard_connection(self) -> sqlite3.Connection:
        # One process, nothing else opens the file: a plain rollback journal, no WAL shared memory (no NFS
        # trouble); the busy timeout orders this process's own threads.
        return self._thread_connection(self._shard_local, self._shard_path, "PRAGMA journal_mode=DELETE")

    def _connection(self) -> sqlite3.Connection:
        """While sharding: a read-only connection to the shared database, left in its rollback journal."""
        if not self.sharding:
            return super()._connection()
        if getattr(self._reader_local, "conn", None) is None:
            self.refuse_symlinks(self._db_path)
        # query_only: every write of a sharded run goes to the shard
        return self._thread_connection(self._reader_local, self._db_path, "PRAGMA query_only=ON")

    def _forget(self, keys: list[str], what: str) -> None:
        if self.sharding and keys:
            with self._transaction() as db:
                db.executemany("INSERT OR IGNORE INTO forgotten VALUES (?, ?)", [(k, what) for k in keys])

    def quarantine_image(self, key: str, reason: str) -> Path | None:
        """As the Store's, and remembered in the shard so the merge drops the shared copies of its rows too."""
        target = super().quarantine_image(key, reason)
        self._forget([key], "image")
        return target

    def delete_scores(self, keys) -> None:
        keys = list(keys)
        super().delete_scores(keys)
        self._forget(keys, "scores")

    def _close_shard(self) -> None:
        with self._shard_lock:
            for conn in self._shard_conns:
                conn.close()
            self._shard_conns.clear()
        self._shard_local = threading.local()
        self._reader_local = threading.local()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        if not self.sharding:
            return super()._transaction()
        return immediate_transaction(self._shard_connection())  # one writer process (threads: busy_timeout)

    def close(self) -> None:
        self._close_shard()
        super().close()

    def finish_sharding(self) -> None:
        """Stop writing to the shard (process 0 after merging: it is then the only writer left)."""
        self._close_shard()
        self.sharding = False


def prepare_for_readers(store: Store) -> str:
    """Move the shared database out of WAL mode before the other processes of a sharded run open it.

    Process 0 calls this alone (before the barrier that lets the others in): the WAL is checkpointed into the
    database file and the journal becomes a plain rollback journal, which needs no shared memory across hosts.
    Leaving WAL needs every other connection closed; when something else has the store open (another run, a
    notebook), the database stays in WAL and the run goes on as before. Returns the journal mode now in force
    ("delete", or "wal" when it could not be switched).
    """
    conn = Store._connection(store)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return str(conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
    except sqlite3.OperationalError:  # "database is locked": another connection is open
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def merge_shards(store: Store, run_id: str) -> int:
    """Merge every shard of ``run_id`` into the shared database and delete it; returns the rows merged.

    Only process 0 calls this, and only while no other process of the run is
    writing (before the first stage and after the last barrier).
    """
    folder = shard_dir(store.root, run_id)
    if not folder.is_dir():
        return 0
    merged = 0
    conn = Store._connection(store)  # the shared database, read-write and back in WAL, whatever ``store`` is
    for path in sorted(folder.glob("*.sqlite"), key=lambda p: p.name):
        conn.execute("ATTACH DATABASE ? AS shard", (str(path),))  # ATTACH is not allowed inside a transaction
        try:
            present = {row[0] for row in conn.execute("SELECT name FROM shard.sqlite_master WHERE type='table'")}
            with immediate_transaction(conn):
                if "forgotten" in present:  # deletions first, then the shard's rows (written after them) win
                    conn.execute("DELETE FROM main.scores WHERE image_key IN (SELECT image_key FROM shard.forgotten)")
                    conn.execute("DELETE FROM main.images WHERE image_key IN "
                                 "(SELECT image_key FROM shard.forgotten WHERE what = 'image')")
                for table in SHARDED_TABLES:
                    if table in present:
                        # by column name: a shard written before a column was added (images.sha256) still merges
                        columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA shard.table_info({table})"))
                        merged += conn.execute(f"INSERT OR REPLACE INTO main.{table} ({columns}) "
                                               f"SELECT {columns} FROM shard.{table}").rowcount
        finally:
            conn.execute("DETACH DATABASE shard")
        for leftover in (path, path.with_name(path.name + "-journal")):
            leftover.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else appeared there; leave it
    return merged
