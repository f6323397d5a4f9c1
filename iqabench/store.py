"""The Store: a content-keyed image cache, a SQLite score table and run folders.

Layout under the store root::

    cache/images/<key[:2]>/<key>.png   key = sha256(generator fingerprint, prompt, seed, params)
    cache/scores.sqlite                (image key, metric, metric fingerprint) -> value or error
    runs/<run-id>/run.json             RunSpec, versions, environment, status
    runs/<run-id>/results/             tables (CSV) and summary.json
    runs/<run-id>/report.html

Every write is atomic: images and JSON go to a per-process temporary name in the
same folder and are renamed into place; scores are written in SQLite
transactions with WAL journaling and a busy timeout. So a run killed at any
instant leaves either the whole file or nothing, and several processes (one per
GPU) can write into one store at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def image_key(generator_fingerprint: Mapping[str, Any], item_fields: Mapping[str, Any]) -> str:
    """The cache key of one image: what made it (fingerprint) and what it is of (prompt, seed, params)."""
    return content_key("image/v1", dict(generator_fingerprint), dict(item_fields))


# Temporary names carry host and pid so a later run can tell a dead writer's leftovers from a live one's.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
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


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def safe_child(root: Path, name: str) -> Path:
    """``root / name`` for a user-given name, refusing anything that could leave ``root``."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise ValueError(
            f"name {name!r} is not allowed here: use letters, digits, '.', '_' and '-' (no path separators)"
        )
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise ValueError(f"name {name!r} escapes {root}")
    return path


class Store:
    """Files plus SQLite; nothing to start. Safe for several writer processes."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.images_dir = self.root / "cache" / "images"
        self.runs_dir = self.root / "runs"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._db_path = self.root / "cache" / "scores.sqlite"
        self._local = threading.local()
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS scores (image_key TEXT NOT NULL, metric TEXT NOT NULL, "
                "metric_fp TEXT NOT NULL, value REAL, error TEXT, PRIMARY KEY (image_key, metric, metric_fp))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS failures (image_key TEXT NOT NULL, stage TEXT NOT NULL, "
                "detail TEXT NOT NULL, PRIMARY KEY (image_key, stage))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL)"
            )

    # -- SQLite ----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self._db_path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _transaction(self):
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def sweep_temp_files(self) -> int:
        """Delete half-written temporary files left by killed writers on this host; returns how many.

        Files of live processes and of other hosts (a shared file system) are
        left alone, so this is safe while other processes write.
        """
        removed = 0
        for path in self.root.glob("**/.*.tmp"):
            match = _TMP_RE.match(path.name)
            if match and match["host"] == _HOST and not _pid_alive(int(match["pid"])):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- images ----------------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not an image key: {key!r}")
        return self.images_dir / key[:2] / f"{key}.png"

    def has_image(self, key: str) -> bool:
        return self.image_path(key).is_file()

    def put_image(self, key: str, image: Image.Image) -> Path:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = self.image_path(key)
        atomic_write_bytes(path, buffer.getvalue())
        with self._transaction() as db:
            db.execute("DELETE FROM failures WHERE image_key = ? AND stage = 'generate'", (key,))
        return path

    def load_image(self, key: str) -> Image.Image:
        with Image.open(self.image_path(key)) as img:
            return img.convert("RGB")

    def image_bytes(self, key: str) -> bytes:
        return self.image_path(key).read_bytes()

    # -- scores ----------------------------------------------------------------------
    def put_scores(self, rows: Iterable[tuple[str, str, str, float | None, str | None]]) -> None:
        """Rows of (image key, metric, metric fingerprint, value or None, error or None)."""
        rows = list(rows)
        if not rows:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO scores (image_key, metric, metric_fp, value, error) VALUES (?,?,?,?,?)",
                rows,
            )

    def get_scores(self, keys: Iterable[str], metric: str, metric_fp: str) -> dict[str, float | None]:
        """Scores present for these keys (None where scoring failed); absent keys are not in the dict."""
        keys = list(keys)
        out: dict[str, float | None] = {}
        conn = self._connection()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in conn.execute(
                f"SELECT image_key, value FROM scores WHERE metric = ? AND metric_fp = ? AND image_key IN ({marks})",
                (metric, metric_fp, *chunk),
            ):
                out[key] = value
        return out

    def get_score_errors(self, keys: Iterable[str], metric: str, metric_fp: str) -> dict[str, str]:
        keys = list(keys)
        out: dict[str, str] = {}
        conn = self._connection()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, error in conn.execute(
                f"SELECT image_key, error FROM scores WHERE metric = ? AND metric_fp = ? AND error IS NOT NULL "
                f"AND image_key IN ({marks})",
                (metric, metric_fp, *chunk),
            ):
                out[key] = error
        return out

    def count_scores(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    # -- failures --------------------------------------------------------------------
    def record_failure(self, key: str, stage: str, detail: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO failures VALUES (?,?,?)", (key, stage, detail))

    def failures(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        rows = self._connection().execute("SELECT image_key, stage, detail FROM failures").fetchall()
        wanted = None if keys is None else set(keys)
        # A generation failure whose image now exists is stale: a later run made the image and was killed
        # between renaming the PNG into place and deleting the failure row (put_image).
        return {k: f"{s}: {d}" for k, s, d in rows
                if (wanted is None or k in wanted) and not (s == "generate" and _KEY_RE.match(k) and self.has_image(k))}

    # -- blobs (cached features and other arrays, as raw bytes; never pickles) --------
    def put_blob(self, key: str, kind: str, data: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?,?,?)", (key, kind, sqlite3.Binary(data)))

    def get_blob(self, key: str) -> bytes | None:
        row = self._connection().execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- runs ------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return safe_child(self.runs_dir, run_id)

    def write_run_json(self, run_id: str, manifest: Mapping[str, Any]) -> Path:
        path = self.run_dir(run_id) / "run.json"
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return path

    def read_run_json(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id) / "run.json"
        if not path.is_file():
            raise FileNotFoundError(f"no run {run_id!r} in {self.runs_dir} (missing {path.name})")
        return json.loads(path.read_text("utf-8"))
