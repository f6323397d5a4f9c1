"""The Store: a content-keyed image cache, a SQLite score table and run folders.

Layout under the store root::

    cache/images/<key[:2]>/<key>.png   key = sha256(generator fingerprint, prompt, seed, params)
    cache/scores.sqlite                (image key, metric, metric fingerprint) -> value or error
    runs/<run-id>/run.json             RunSpec, versions, environment, status
    runs/<run-id>/results/             tables (CSV) and summary.json
    runs/<run-id>/report.html

Every write is atomic: images and JSON go to a per-process temporary name in the
same folder and are renamed into place (:mod:`.atomic_io`); scores are written in SQLite
transactions with WAL journaling and a busy timeout. So a run killed at any
instant leaves either the whole file or nothing, and several processes (one per
GPU) can write into one store at once.

What the store reads back it checks (issue 15): a cached PNG must be a regular
file (no symbolic links anywhere inside the store: a linked ``cache/images/ab``
would send writes outside it, a PNG linked to ``/etc/passwd`` would count as an
image), its byte size must match the record ``put_image`` wrote, and it must
decode. One that fails is moved to ``cache/quarantine/`` (never deleted: the
bytes stay for inspection), its scores are dropped, and the caller regenerates
it. ``verify_store`` runs the same checks over the whole store.

Switching a database to WAL needs an exclusive lock that ``busy_timeout`` does
not wait for, so two processes opening a new store at once could fail with
"database is locked"; WAL is therefore set once (WAL is persistent in the file)
and the switch is retried. Each transaction also checks that the database file
it opened is still the one on disk: SQLite keeps writing into a deleted file's
inode, which would lose a run's scores without a word.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from PIL import Image

from ..contracts.errors import UserError, UserInputError
from .atomic_io import atomic_write_bytes, atomic_write_text, fsync_directory, is_stale_temp_file
from .sqlite_tx import immediate_transaction, retry_locked


class StoreError(UserError, OSError):
    """The store cannot be used as it is (a symbolic link inside it, its database gone); the message says why."""


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def png_digest(data: bytes) -> str:
    """sha256 of a cached PNG's bytes: the content record that ties the file to its key (issue 26). Hashing the
    bytes already read for decoding costs 1.2-1.7 ms per 1024x1024 PNG (1.1-3.2 MB), against 15-40 ms to decode
    it (2-core dev machine)."""
    return hashlib.sha256(data).hexdigest()


def image_key(generator_fingerprint: Mapping[str, Any], item_fields: Mapping[str, Any]) -> str:
    """The cache key of one image: what made it (fingerprint) and what it is of (prompt, seed, params)."""
    return content_key("image/v1", dict(generator_fingerprint), dict(item_fields))


def safe_child(root: Path, name: str) -> Path:
    """``root / name`` for a user-given name, refusing anything that could leave ``root``."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise UserInputError(
            f"name {name!r} is not allowed here: use letters, digits, '.', '_' and '-' (no path separators)"
        )
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise UserInputError(f"name {name!r} escapes {root}")
    return path


class CorruptImageError(UserError, OSError):
    """A cached image that cannot be trusted (does not decode, wrong size, a link)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"cached image {key[:12]}... {reason}")
        self.key, self.reason = key, reason


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """WAL once: reading the mode takes no lock; only a database not yet in WAL is switched."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


def _check_store_folder(root: Path) -> None:
    """A store folder must be a folder, or creatable as one: say so before mkdir fails with a bare errno."""
    if root.exists() and not root.is_dir():
        raise StoreError(f"the store folder {root} exists but is not a folder; pass --out a folder (new or existing)")
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"the store folder {root} cannot be created: {parent} is a file, not a folder")
            break


class Store:
    """Files plus SQLite; nothing to start. Safe for several writer processes."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        _check_store_folder(self.root)
        self.images_dir = self.root / "cache" / "images"
        self.runs_dir = self.root / "runs"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.quarantine_dir = self.root / "cache" / "quarantine"
        self._db_path = self.root / "cache" / "scores.sqlite"
        self._local = threading.local()
        self._quarantined: set[str] = set()
        self.refuse_symlinks(self.images_dir)
        self.refuse_symlinks(self.runs_dir)
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
            db.execute(
                "CREATE TABLE IF NOT EXISTS images (image_key TEXT PRIMARY KEY, nbytes INTEGER NOT NULL, "
                "width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT)"
            )
            if "sha256" not in {row[1] for row in db.execute("PRAGMA table_info(images)")}:
                db.execute("ALTER TABLE images ADD COLUMN sha256 TEXT")  # a store from before content hashes

    # -- symbolic links ---------------------------------------------------------------
    def refuse_symlinks(self, path: Path) -> None:
        """Raise StoreError when ``path`` or a folder between the store root and it is a symbolic link."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                raise StoreError(
                    f"{current} is a symbolic link inside the store; the store refuses links (they could send "
                    f"writes outside it): remove it, or run `iqabench store verify --repair --out {self.root}`"
                )

    # -- SQLite ----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            self.refuse_symlinks(self._db_path)
            conn = sqlite3.connect(self._db_path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA synchronous=NORMAL")
            retry_locked(lambda: _ensure_wal(conn))
            self._local.conn = conn
            self._local.pid = os.getpid()
            self._local.inode = _inode(self._db_path)
        return conn

    def _check_database_present(self) -> None:
        """Refuse to write into a database file that was deleted or replaced since it was opened."""
        opened = getattr(self._local, "inode", None)
        if opened is not None and _inode(self._db_path) != opened:
            self.close()
            raise StoreError(
                f"the score database {self._db_path} was deleted or replaced while this run was using it; "
                "scores written since then are not in the store: re-run the same command to recompute them"
            )

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        conn = self._connection()
        self._check_database_present()
        return immediate_transaction(conn, retry_begin=True)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.inode = None

    def sweep_temp_files(self) -> int:
        """Delete half-written temporary files left by killed writers on this host; returns how many.

        Files of live processes and of other hosts (a shared file system) are
        left alone, so this is safe while other processes write.
        """
        removed = 0
        for path in self.root.glob("**/.*.tmp"):
            if is_stale_temp_file(path):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- images ----------------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not an image key: {key!r}")
        return self.images_dir / key[:2] / f"{key}.png"

    def has_image(self, key: str) -> bool:
        """The image file is there as a regular file (a symbolic link does not count); see check_image."""
        try:
            return stat.S_ISREG(os.lstat(self.image_path(key)).st_mode)
        except FileNotFoundError:
            return False

    def put_image(self, key: str, image: Image.Image) -> Path:
        return self.put_images([(key, image, [])])[0]

    def put_images(self, entries: Sequence[tuple[str, Image.Image, Sequence[tuple]]]) -> list[Path]:
        """Write a batch of (key, image, score rows): every PNG atomically and durably (fsync, rename, then one
        fsync of each folder the batch renamed into), then the image records, cleared failures and in-memory
        scores of the whole batch in **one** transaction.

        Files before records, as for one image: a crash in between leaves PNGs without records, which the next
        reuse verifies by decoding (the unrecorded-image path), never records without files (the folders' fsync
        keeps that true across a power loss too: the renames are on disk before the commit). One commit and one
        fsync per folder per batch, instead of two commits per image, keep the writer thread from competing with
        the pipeline (issue 29).
        """
        written = []
        for key, image, _ in entries:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            path = self.image_path(key)
            self.refuse_symlinks(path.parent)
            data = buffer.getvalue()
            atomic_write_bytes(path, data)
            written.append((key, data, image.size, path))
        for folder in dict.fromkeys(path.parent for *_, path in written):
            fsync_directory(folder)
        rows = [row for _, _, batch_rows in entries for row in batch_rows]
        with self._transaction() as db:
            for key, data, size, _ in written:
                db.execute("DELETE FROM failures WHERE image_key = ? AND stage = 'generate'", (key,))
                self.record_image(db, key, data, size)
            if rows:
                db.executemany("INSERT OR REPLACE INTO scores (image_key, metric, metric_fp, value, error) "
                               "VALUES (?,?,?,?,?)", rows)
        return [path for *_, path in written]

    @staticmethod
    def record_image(db: sqlite3.Connection, key: str, data: bytes, size: tuple[int, int]) -> None:
        """Write the image record: byte size, pixel size and the sha256 of the PNG bytes (inside ``db``'s
        transaction), so a later read can tell the cached file is the one written under ``key``."""
        db.execute("INSERT OR REPLACE INTO images (image_key, nbytes, width, height, sha256) VALUES (?,?,?,?,?)",
                   (key, len(data), *size, png_digest(data)))

    def image_record(self, key: str) -> tuple[int, int, int] | None:
        """(bytes, width, height) as put_image wrote them; None for images cached before records existed."""
        row = self._connection().execute(
            "SELECT nbytes, width, height FROM images WHERE image_key = ?", (key,)).fetchone()
        return None if row is None else tuple(row)

    def image_digest(self, key: str) -> str | None:
        """The sha256 put_image recorded for the PNG bytes of ``key``; None when none was recorded."""
        row = self._connection().execute("SELECT sha256 FROM images WHERE image_key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def read_checked_bytes(self, key: str) -> bytes:
        """The PNG bytes of ``key``, refused (CorruptImageError) when they are not the bytes put_image wrote.

        The one read of the file serves both the hash and the decode, so the check costs a sha256 of bytes
        already in memory (see :func:`png_digest`), not a second read.
        """
        path = self.image_path(key)
        if path.is_symlink():
            raise CorruptImageError(key, "is a symbolic link")
        data = path.read_bytes()
        why = self._digest_mismatch(key, data)
        if why is not None:
            raise CorruptImageError(key, why)
        return data

    def _digest_mismatch(self, key: str, data: bytes) -> str | None:
        recorded = self.image_digest(key)
        if recorded is None or recorded == png_digest(data):
            return None
        return ("is not the image written under its key (sha256 of its bytes differs from the one recorded when "
                "it was cached: replaced or tampered with)")

    def check_image(self, key: str, *, decode: bool | str = True) -> str | None:
        """Why the cached image cannot be trusted, or None when it is sound (or absent: see has_image).

        Cheap checks first (link, size against the record); ``decode`` then
        reads the whole PNG (chunk CRCs and pixel data), which catches garbage
        of the right length too. ``decode="unrecorded"`` decodes only images
        cached before size records existed, and records them once they pass.
        ``decode="verify"`` (a run's reuse check) does the same for unrecorded
        images and runs PIL's ``verify()`` on recorded ones: PNG structure and
        every chunk's CRC, without inflating the pixels, so a same-size garbage
        file is caught even when its scores are cached and it is never decoded
        for scoring (3.0 ms for a 1024x1024 PNG of 2.7 MB, against 55 ms for a
        full decode, measured on the 2-core dev machine).
        """
        path = self.image_path(key)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return "is a symbolic link"
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file"
        try:
            self.refuse_symlinks(path.parent)
        except StoreError:
            return f"lies under a symbolic link ({path.parent.relative_to(self.root)})"
        record = self.image_record(key)
        if record is not None and record[0] != info.st_size:
            return f"has {info.st_size} bytes, its record says {record[0]}"
        if not decode or (decode == "unrecorded" and record is not None):
            return None
        data = path.read_bytes()  # one read: hashed, then verified or decoded from memory
        why = self._digest_mismatch(key, data)
        if why is not None:
            return why
        if decode == "verify" and record is not None:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.verify()
            except Exception as exc:  # UnidentifiedImageError, SyntaxError (bad CRC), OSError, struct.error...
                return f"is damaged ({type(exc).__name__}: {str(exc).strip()[:200]})"
            if self.image_digest(key) is None:  # recorded before content hashes: record this one now
                with self._transaction() as db:
                    db.execute("UPDATE images SET sha256 = ? WHERE image_key = ? AND sha256 IS NULL",
                               (png_digest(data), key))
            return None
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                size = img.size
        except Exception as exc:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError...)
            return f"does not decode ({type(exc).__name__}: {str(exc).strip()[:200]})"
        if record is not None and (record[1], record[2]) != size:
            return f"is {size[0]}x{size[1]} pixels, its record says {record[1]}x{record[2]}"
        if record is None and decode in ("unrecorded", "verify"):
            with self._transaction() as db:
                db.execute("INSERT OR IGNORE INTO images (image_key, nbytes, width, height, sha256) "
                           "VALUES (?,?,?,?,?)", (key, info.st_size, *size, png_digest(data)))
        return None

    def quarantine_image(self, key: str, reason: str) -> Path | None:
        """Move a damaged cached image to ``cache/quarantine/`` and forget its scores, so it is regenerated.

        Returns the new path, or None when the file was already gone (another
        process moved it). Scores of the key are dropped because they were
        computed from (or failed on) the damaged bytes.
        """
        path = self.image_path(key)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self.refuse_symlinks(self.quarantine_dir)
        target = self.quarantine_dir / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.{uuid.uuid4().hex[:6]}.png"
        try:
            os.replace(path, target)  # renames a link itself, never what it points to
        except FileNotFoundError:
            target = None
        atomic_write_text(self.quarantine_dir / f"{target.name if target else key}.why.txt", reason + "\n")
        with self._transaction() as db:
            db.execute("DELETE FROM scores WHERE image_key = ?", (key,))
            db.execute("DELETE FROM images WHERE image_key = ?", (key,))
        self._quarantined.add(key)
        return target

    def load_image(self, key: str) -> Image.Image:
        """The cached image of ``key``, decoded; CorruptImageError when its bytes are not the ones recorded."""
        with Image.open(io.BytesIO(self.read_checked_bytes(key))) as img:
            return img.convert("RGB")

    def image_bytes(self, key: str) -> bytes:
        return self.read_checked_bytes(key)

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

    def delete_scores(self, keys: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM scores WHERE image_key = ?", [(k,) for k in keys])

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
        """The run's run.json, read bounded and shape-checked (RunFolderError naming the file when it is not
        a JSON object iqabench could have written; see :mod:`.run_folders`)."""
        from .run_folders import read_run_manifest

        path = self.run_dir(run_id) / "run.json"
        if not path.is_file():
            raise FileNotFoundError(f"no run {run_id!r} in {self.runs_dir} (missing {path.name})")
        return read_run_manifest(path)

