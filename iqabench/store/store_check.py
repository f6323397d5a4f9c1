"""``iqabench store verify``: check (and with ``--repair`` fix) a store after a crash, a full disk or a copy.

Separate from :mod:`.store` because it is a maintenance job, not part of reading and writing the cache: it
walks every file, compares the database with the disk and moves damage to ``cache/quarantine/``.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .atomic_io import atomic_write_text, is_stale_temp_file
from .store import _KEY_RE, Store


@dataclass
class StoreCheck:
    """What ``verify_store`` found (and, with ``repair``, fixed); ``problems`` counts what was wrong."""

    images_checked: int = 0
    corrupt_images: dict[str, str] = field(default_factory=dict)  # key -> why
    links: list[str] = field(default_factory=list)  # store-relative paths of symbolic links
    temp_files: int = 0
    records_without_image: list[str] = field(default_factory=list)
    images_without_record: list[str] = field(default_factory=list)
    stale_failures: list[str] = field(default_factory=list)
    database: str = "ok"
    repaired: bool = False

    @property
    def problems(self) -> int:
        return (len(self.corrupt_images) + len(self.links) + self.temp_files + len(self.records_without_image)
                + len(self.stale_failures) + (self.database != "ok"))

    def lines(self) -> list[str]:
        done = "fixed" if self.repaired else "found"
        out = [f"{self.images_checked} cached image(s) checked; database: {self.database}"]
        for key, why in sorted(self.corrupt_images.items()):
            out.append(f"damaged image {key} {why}" + (" -> moved to cache/quarantine/" if self.repaired else ""))
        for link in self.links:
            out.append(f"symbolic link {link}" + (" -> removed (target noted in cache/quarantine/)"
                                                  if self.repaired else ""))
        if self.temp_files:
            out.append(f"{self.temp_files} temporary file(s) of killed writers {done}")
        if self.records_without_image:
            out.append(f"{len(self.records_without_image)} image record(s) without an image {done}")
        if self.images_without_record:
            out.append(f"{len(self.images_without_record)} image(s) cached before size records existed"
                       + (" -> recorded" if self.repaired else " (sound; --repair records their size)"))
        if self.stale_failures:
            out.append(f"{len(self.stale_failures)} stale generation failure row(s) {done}")
        if self.problems == 0:
            out.append("no damage found")
        elif not self.repaired:
            out.append("run again with --repair to move damaged files aside (the next run regenerates them)")
        return out


def verify_store(store: Store, *, repair: bool = False) -> StoreCheck:
    """Check every cached image, link, temporary file and the database; with ``repair``, fix what can be fixed.

    Nothing is deleted that holds data: damaged images and links are moved
    to ``cache/quarantine/``; only records that point at nothing and dead
    writers' temporary files are removed.
    """
    check = StoreCheck(repaired=repair)
    quick = store._connection().execute("PRAGMA quick_check").fetchall()
    check.database = "ok" if quick == [("ok",)] else "; ".join(str(r[0]) for r in quick[:3])
    for folder, dirnames, filenames in os.walk(store.root, followlinks=False):
        base = Path(folder)
        for name in [*dirnames, *filenames]:
            if (base / name).is_symlink():
                check.links.append(str((base / name).relative_to(store.root)))
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
    linked = set(check.links)
    keys_on_disk: list[str] = []
    if store.images_dir.is_dir() and not store.images_dir.is_symlink():
        for path in sorted(store.images_dir.glob("*/*.png")):
            key = path.stem
            relative = str(path.relative_to(store.root))
            if not _KEY_RE.match(key) or relative in linked or str(path.parent.relative_to(store.root)) in linked:
                continue
            keys_on_disk.append(key)
            check.images_checked += 1
            why = store.check_image(key)
            if why is not None:
                check.corrupt_images[key] = why
    records = {row[0] for row in store._connection().execute("SELECT image_key FROM images")}
    on_disk = set(keys_on_disk)
    check.records_without_image = sorted(records - on_disk)
    check.images_without_record = sorted(k for k in on_disk - records if k not in check.corrupt_images)
    check.stale_failures = sorted(
        k for (k,) in store._connection().execute("SELECT image_key FROM failures WHERE stage = 'generate'")
        if _KEY_RE.match(k) and k in on_disk and k not in check.corrupt_images)
    tmp = [p for p in store.root.glob("**/.*.tmp") if is_stale_temp_file(p)]
    check.temp_files = len(tmp)
    if not repair:
        return check
    for key, why in check.corrupt_images.items():
        store.quarantine_image(key, why)
    store.quarantine_dir.mkdir(parents=True, exist_ok=True)
    for link in check.links:  # a link holds no data of its own: note where it pointed, then remove it
        source = store.root / link
        if source.is_symlink():
            note = store.quarantine_dir / f"link.{link.replace(os.sep, '_')}.{uuid.uuid4().hex[:6]}.txt"
            atomic_write_text(note, f"{link} -> {os.readlink(source)}\n")
            source.unlink()
    store.sweep_temp_files()
    with store._transaction() as db:
        db.executemany("DELETE FROM images WHERE image_key = ?", [(k,) for k in check.records_without_image])
        db.executemany("DELETE FROM failures WHERE image_key = ? AND stage = 'generate'",
                       [(k,) for k in check.stale_failures])
    for key in check.images_without_record:
        data = store.image_path(key).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
        with store._transaction() as db:
            store.record_image(db, key, data, size)
    return check
