"""Issue 26, item 1: a cached image is what its key says. Each image's PNG bytes are hashed (sha256) when cached;
a *valid* PNG of another image with the same byte size planted over it is caught on reuse, when scored and by
``store verify``: quarantined and regenerated, and no score of the planted pixels is stored under the key."""

import io
import zlib

import pytest
from PIL import Image

from iqabench.api import run
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_fingerprint
from iqabench.store.store import CorruptImageError, Store
from iqabench.store.store_check import verify_store

SPEC = dict(benchmark="scores", generators=["tiny-sd[steps=1]"], metrics=["piqe"], prompts="smoke", limit=1,
            seeds=[0], batch_size=2)


def same_size_other_png(good: bytes) -> bytes:
    """A valid PNG of *other* pixels (a flat grey image) padded with a text chunk to exactly ``len(good)`` bytes:
    the size record and PIL's verify() both pass it; only the content hash can tell."""
    size = Image.open(io.BytesIO(good)).size
    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 90, 200)).save(buffer, format="PNG")
    planted = buffer.getvalue()
    pad = len(good) - len(planted) - 12 - 2  # chunk length+type+crc, keyword + NUL
    assert pad >= 0
    body = b"tEXt" + b"p\0" + b"x" * pad
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    end = planted.rindex(b"IEND") - 4
    out = planted[:end] + chunk + planted[end:]
    assert len(out) == len(good)
    with Image.open(io.BytesIO(out)) as img:
        img.verify()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    outcome = run(RunSpec(**SPEC), out=root, report=False)
    assert outcome.complete
    return root


def _planted_copy(finished, tmp_path):
    import shutil

    shutil.copytree(finished, tmp_path / "s")
    store = Store(tmp_path / "s")
    key = next(store.images_dir.glob("*/*.png")).stem
    good = store.image_path(key).read_bytes()
    store.image_path(key).write_bytes(same_size_other_png(good))
    return store, key, good


def test_put_image_records_the_sha256_of_the_png_bytes(finished):
    import hashlib

    store = Store(finished)
    key = next(store.images_dir.glob("*/*.png")).stem
    assert store.image_digest(key) == hashlib.sha256(store.image_path(key).read_bytes()).hexdigest()


def test_planted_same_size_png_is_refused_by_every_reader(finished, tmp_path):
    store, key, _ = _planted_copy(finished, tmp_path)
    assert "sha256" in store.check_image(key, decode="verify")
    assert "sha256" in store.check_image(key)
    with pytest.raises(CorruptImageError, match="sha256"):
        store.load_image(key)
    check = verify_store(store)
    assert key in check.corrupt_images and check.problems == 1
    verify_store(store, repair=True)
    assert not store.has_image(key) and len(list(store.quarantine_dir.glob("*.png"))) == 1


def test_planted_png_with_scores_cached_is_quarantined_and_regenerated(finished, tmp_path):
    store, key, good = _planted_copy(finished, tmp_path)
    fp = metric_fingerprint("piqe")
    before = store.get_scores([key], "piqe", fp)[key]
    logs = []
    outcome = run(RunSpec(**SPEC), out=tmp_path / "s", log=logs.append, report=False)
    assert outcome.complete
    assert any("sha256" in m and "regenerating it" in m for m in logs)
    assert store.image_path(key).read_bytes() == good  # the same pixels regenerated, not the planted ones
    assert store.get_scores([key], "piqe", fp)[key] == pytest.approx(before)


def test_planted_png_without_scores_is_never_scored_under_the_key(finished, tmp_path):
    """The issue's case: scores deleted, so the run scores the cached file; the planted pixels' score (piqe 100)
    must never be stored under the original key."""
    store, key, good = _planted_copy(finished, tmp_path)
    fp = metric_fingerprint("piqe")
    before = store.get_scores([key], "piqe", fp)[key]
    store.delete_scores([key])
    outcome = run(RunSpec(**SPEC), out=tmp_path / "s", report=False)
    assert outcome.complete
    assert store.image_path(key).read_bytes() == good
    assert store.get_scores([key], "piqe", fp)[key] == pytest.approx(before)


def test_store_from_before_content_hashes_is_migrated(tmp_path):
    """An images table without the sha256 column gains it; the old record is hashed on its first verified reuse."""
    import sqlite3

    store = Store(tmp_path / "s")
    key = "ab" * 32
    store.put_image(key, Image.new("RGB", (8, 8), (1, 2, 3)))
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "cache" / "scores.sqlite")
    db.executescript("CREATE TABLE old AS SELECT image_key, nbytes, width, height FROM images; DROP TABLE images; "
                     "ALTER TABLE old RENAME TO images;")
    db.close()
    store = Store(tmp_path / "s")
    assert store.image_digest(key) is None
    assert store.check_image(key, decode="verify") is None
    assert store.image_digest(key) is not None
