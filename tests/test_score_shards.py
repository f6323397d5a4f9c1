"""Per-process score shards: two processes write at once without touching the shared SQLite file."""

import hashlib
import multiprocessing

from iqabench.store.score_shards import ShardedStore, merge_shards, shard_dir
from iqabench.store.store import Store, content_key

RUN = "scores-abc"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _worker(root, index, n, barrier):
    store = ShardedStore(root, RUN, index)
    barrier.wait()  # both processes write at the same time
    for i in range(n):
        key = content_key("img", index, i)
        store.put_scores([(key, "piqe", "fp", float(i), None), (key, "entropy", "fp", None, "boom")])
        if i % 5 == 0:
            store.record_failure(key, "generate", f"failed {i}")
    store.put_blob(content_key("blob", index), "test", bytes([index]))
    store.close()


def test_two_processes_write_their_own_shards_and_process_0_merges(tmp_path):
    main = Store(tmp_path)  # process 0 creates the shared database before the others start
    main.put_scores([(content_key("old"), "piqe", "fp", 1.0, None)])
    main.close()
    db = tmp_path / "cache" / "scores.sqlite"
    before = _digest(db)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_worker, args=(tmp_path, i, 20, barrier)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert _digest(db) == before, "the shared database must not be written while shards are in use"
    assert sorted(p.name for p in shard_dir(tmp_path, RUN).iterdir()) == ["0.sqlite", "1.sqlite"]

    merged_into = Store(tmp_path)
    assert merge_shards(merged_into, RUN) == 2 * (20 * 2 + 4 + 1)
    assert not shard_dir(tmp_path, RUN).exists()
    assert merged_into.count_scores() == 1 + 2 * 20 * 2
    keys = [content_key("img", w, i) for w in range(2) for i in range(20)]
    assert merged_into.get_scores(keys, "piqe", "fp") == {k: float(keys.index(k) % 20) for k in keys}
    assert set(merged_into.get_score_errors(keys, "entropy", "fp").values()) == {"boom"}
    assert len(merged_into.failures()) == 8
    assert merged_into.get_blob(content_key("blob", 1)) == b"\x01"


def test_a_sharded_store_reads_the_shared_database_and_can_stop_sharding(tmp_path):
    Store(tmp_path).put_scores([(content_key("a"), "piqe", "fp", 2.0, None)])
    store = ShardedStore(tmp_path, RUN, 0)
    assert store.get_scores([content_key("a")], "piqe", "fp") == {content_key("a"): 2.0}
    store.put_scores([(content_key("b"), "piqe", "fp", 3.0, None)])
    assert store.shard_file.is_file()
    assert merge_shards(store, RUN) == 1
    store.finish_sharding()
    store.put_scores([(content_key("c"), "piqe", "fp", 4.0, None)])  # straight into the shared database now
    assert Store(tmp_path).count_scores() == 3


def test_during_a_sharded_run_the_shared_database_is_read_without_wal_and_never_written(tmp_path):
    """WAL needs every process on one host (shared memory): over NFS/Lustre readers on other nodes must not use
    it. Process 0 leaves WAL before the others open the database; their connections cannot write; the merge at
    the end turns WAL back on."""
    import sqlite3

    import pytest

    from iqabench.store.score_shards import prepare_for_readers

    shared = Store(tmp_path)
    shared.put_scores([(content_key("a"), "piqe", "fp", 2.0, None)])
    assert prepare_for_readers(shared) == "delete"
    shared.close()
    db = tmp_path / "cache" / "scores.sqlite"
    assert not (tmp_path / "cache" / "scores.sqlite-wal").exists()
    store = ShardedStore(tmp_path, RUN, 1)
    assert store.get_scores([content_key("a")], "piqe", "fp") == {content_key("a"): 2.0}
    store.put_scores([(content_key("b"), "piqe", "fp", 3.0, None)])  # into the shard
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        store._connection().execute("DELETE FROM scores")
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "delete", "reading must not switch the shared database back to WAL"
    store.close()
    assert merge_shards(store, RUN) == 1  # through the sharded store itself: no plain Store opened in between
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_leaving_wal_with_the_store_open_elsewhere_keeps_wal_instead_of_failing(tmp_path):
    import time

    from iqabench.store.score_shards import prepare_for_readers

    other = Store(tmp_path)
    other.count_scores()  # another user of the store, connection open
    main = Store(tmp_path)
    start = time.monotonic()
    assert prepare_for_readers(main) == "wal"
    assert time.monotonic() - start < 30  # it does not sit out the 60 s busy timeout
    other.close()
    assert prepare_for_readers(main) == "delete"


def test_a_quarantine_in_a_shard_reaches_the_shared_database(tmp_path):
    """Scores of an image quarantined during a sharded run must not survive the merge (the image will be made
    again and must be scored again), and size records written in a shard are merged too."""
    from PIL import Image

    shared = Store(tmp_path)
    damaged, kept = content_key("damaged"), content_key("kept")
    shared.put_image(damaged, Image.new("RGB", (8, 8)))
    shared.put_scores([(damaged, "piqe", "fp", 1.0, None), (kept, "piqe", "fp", 2.0, None)])
    shared.close()
    store = ShardedStore(tmp_path, RUN, 1)
    assert store.get_scores([damaged], "piqe", "fp") == {damaged: 1.0}
    store.quarantine_image(damaged, "test: damaged bytes")
    fresh = content_key("fresh")
    store.put_image(fresh, Image.new("RGB", (4, 4)))
    store.close()
    merged = Store(tmp_path)
    merge_shards(merged, RUN)
    assert merged.get_scores([damaged, kept], "piqe", "fp") == {kept: 2.0}
    assert merged.image_record(damaged) is None and merged.image_record(fresh) is not None


def test_merging_when_nothing_was_sharded_is_a_no_op(tmp_path):
    assert merge_shards(Store(tmp_path), RUN) == 0
