"""The PNG writer's batch (issue 29): files, one fsync per folder, then one transaction for the whole batch."""

from pathlib import Path

from PIL import Image

from iqabench.store import store as store_module
from iqabench.store.atomic_io import fsync_directory
from iqabench.store.store import Store


def test_a_batch_syncs_each_folder_once_after_its_files_and_before_its_records(tmp_path, monkeypatch):
    store = Store(tmp_path)
    keys = ["aa" + "0" * 62, "aa" + "1" * 62, "bb" + "0" * 62]
    synced = []

    def spy(folder):
        # at this moment every file of the batch is in place and no record of it exists yet
        synced.append((Path(folder), [store.image_path(k).is_file() for k in keys],
                       [store.image_digest(k) for k in keys]))
        fsync_directory(folder)

    monkeypatch.setattr(store_module, "fsync_directory", spy)
    rows = [[(key, "entropy", "fp", float(i), None)] for i, key in enumerate(keys)]
    paths = store.put_images([(key, Image.new("RGB", (8, 8), (40 * i, 0, 0)), row)
                              for i, (key, row) in enumerate(zip(keys, rows, strict=True))])
    assert paths == [store.image_path(k) for k in keys]
    assert [folder for folder, _, _ in synced] == [store.image_path(keys[0]).parent, store.image_path(keys[2]).parent]
    assert all(all(files) and not any(records) for _, files, records in synced)
    assert all(store.image_digest(k) for k in keys)
    assert store.get_scores(keys, "entropy", "fp") == {k: float(i) for i, k in enumerate(keys)}
