"""Issue 15, probe groups 4, 7, 8, 9, 10 (store, spec and prompt parts): one sentence per bad input, no damage."""

import io
import multiprocessing as mp
import os
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqabench.contracts.specs import GeneratorSpec, SpecError, parse_seeds, parse_value
from iqabench.io.csv_safety import escape_frame, unescape_frame
from iqabench.io.prompts import PromptFileError, load_prompts
from iqabench.store.store import CorruptImageError, Store, StoreError
from iqabench.store.store_check import verify_store

KEY = "ab" * 32


def _png(size=(8, 8), value=7) -> Image.Image:
    return Image.fromarray(np.full((*size, 3), value, dtype=np.uint8))


# -- group 4: non-finite spec values ------------------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_spec_option_is_refused(value):
    with pytest.raises(SpecError, match="guidance_scale.*finite number") as info:
        GeneratorSpec.parse(f"tiny-sd[guidance_scale={value}]")
    assert "\n" not in str(info.value)


def test_non_finite_option_value_is_refused():
    with pytest.raises(SpecError, match="'alpha' is 'nan'|NaN and Infinity"):
        parse_value("NaN", key="alpha")
    assert parse_value("1.5") == 1.5 and parse_value("nan-ish") == "nan-ish"


# -- group 8: duplicate keys ----------------------------------------------------------------
def test_duplicate_spec_key_is_refused():
    with pytest.raises(SpecError, match=r"option 'steps' is given twice in spec 'tiny-sd\[steps=2,steps=3\]'"):
        GeneratorSpec.parse("tiny-sd[steps=2,steps=3]")


# -- group 7: unbounded inputs ----------------------------------------------------------------
def test_huge_seed_range_is_refused_before_expanding():
    with pytest.raises(SpecError, match=r"100,000,001 seeds asked for, more than the limit of 10,000.*"
                                        r"split the seeds over several runs"):  # issue 26: no override allows it
        parse_seeds("0-100000000")
    with pytest.raises(SpecError, match=r"20,000 seeds .* IQABENCH_MAX_SEEDS=20000"):
        parse_seeds("0-19999")


def test_seed_limit_override(monkeypatch):
    monkeypatch.setenv("IQABENCH_MAX_SEEDS", "20000")
    assert len(parse_seeds("0-19999")) == 20000
    with pytest.raises(SpecError, match="limit of 3"):
        parse_seeds("0,1,2,3", limit=3)


def test_overflowing_seed_is_refused():
    with pytest.raises(SpecError, match="seed 4294967296 is too large: seeds go from 0 to 4294967295"):
        parse_seeds("4294967296")


def test_dev_zero_as_prompt_file_stops_at_the_limit(monkeypatch, tmp_path):
    # issue 26: prompt inputs must be regular files (a FIFO hung), so /dev/zero is refused before any read; the
    # size bound still stops a huge regular file (a sparse one here)
    monkeypatch.setenv("IQABENCH_MAX_PROMPT_MB", "1")
    with pytest.raises(PromptFileError, match=r"'/dev/zero' is not a regular file"):
        load_prompts("/dev/zero")
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as handle:
        handle.truncate(2**31)
    with pytest.raises(PromptFileError, match=r"huge.txt' is larger than the limit of 1 MiB.*IQABENCH_MAX_PROMPT_MB"):
        load_prompts(str(huge))


def test_too_many_prompts_names_the_override(tmp_path, monkeypatch):
    path = tmp_path / "p.txt"
    path.write_text("".join(f"prompt {i}\n" for i in range(50)), encoding="utf-8")
    monkeypatch.setenv("IQABENCH_MAX_PROMPTS", "40")
    with pytest.raises(PromptFileError, match="holds 50 prompts, more than the limit of 40.*IQABENCH_MAX_PROMPTS=50"):
        load_prompts(str(path))
    monkeypatch.setenv("IQABENCH_MAX_PROMPTS", "50")
    assert len(load_prompts(str(path))) == 50


# -- group 9: CSV formulas ----------------------------------------------------------------------
def test_csv_cells_that_start_a_formula_are_escaped_and_read_back_intact():
    texts = ['=HYPERLINK("http://evil/","x")', "+1+1", "-cmd", "@SUM(A1)", "'quoted", "plain", "\tTab"]
    frame = pd.DataFrame({"prompt": texts, "score": [-0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    written = escape_frame(frame).to_csv(index=False)
    cells = pd.read_csv(io.StringIO(written), keep_default_na=False)["prompt"].tolist()
    assert all(not c.startswith(("=", "+", "-", "@", "\t")) for c in cells)
    assert "-0.5" in written  # numbers stay numbers
    back = unescape_frame(pd.read_csv(io.StringIO(written)))
    assert back["prompt"].tolist() == texts and back["score"].tolist() == frame["score"].tolist()


# -- group 9: symbolic links inside the store ------------------------------------------------------
def test_symlinked_image_folder_refuses_writes_outside_the_store(tmp_path):
    store = Store(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.images_dir / KEY[:2]).symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="is a symbolic link inside the store; the store refuses links"):
        store.put_image(KEY, _png())
    assert list(outside.iterdir()) == []


def test_png_symlinked_to_a_system_file_does_not_count_as_an_image(store):
    path = store.image_path(KEY)
    path.parent.mkdir(parents=True)
    path.symlink_to("/etc/passwd")
    assert not store.has_image(KEY)
    assert store.check_image(KEY) == "is a symbolic link"
    with pytest.raises(CorruptImageError):
        store.load_image(KEY)


# -- group 1: corrupt cached images ---------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "same-size garbage"])
def test_damaged_image_is_detected_and_quarantined_not_deleted(store, damage):
    store.put_image(KEY, _png())
    store.put_scores([(KEY, "piqe", "fp", 1.0, None)])
    path = store.image_path(KEY)
    good = path.read_bytes()
    bad = {"truncated": good[: len(good) // 2], "garbage": b"not a png" * 10, "empty": b"",
           "same-size garbage": bytes(len(good))}[damage]
    path.write_bytes(bad)
    why = store.check_image(KEY)
    assert why is not None and ("bytes, its record says" in why or "does not decode" in why
                                or "sha256" in why)  # issue 26: same-size bytes are caught by the content hash
    moved = store.quarantine_image(KEY, why)
    assert moved.read_bytes() == bad and not path.exists()  # the bytes are kept for inspection
    assert store.get_scores([KEY], "piqe", "fp") == {}  # scores of the damaged bytes are forgotten


def test_image_without_a_record_is_still_checked_by_decoding(store):
    path = store.image_path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    assert "does not decode" in store.check_image(KEY)


def test_store_verify_reports_then_repairs(tmp_path):
    store = Store(tmp_path / "store")
    store.put_image(KEY, _png())
    other = "cd" * 32
    store.put_image(other, _png(value=9))
    store.image_path(KEY).write_bytes(b"garbage")
    link = store.root / "runs" / "elsewhere"
    link.symlink_to(tmp_path, target_is_directory=True)
    store.record_failure(other, "generate", "RuntimeError: old")
    check = verify_store(store)
    assert list(check.corrupt_images) == [KEY] and check.links == ["runs/elsewhere"]
    assert check.stale_failures == [other] and check.problems == 3 and check.images_checked == 2
    assert store.image_path(KEY).exists() and link.is_symlink()  # a plain check changes nothing
    assert verify_store(store, repair=True).problems == 3
    again = verify_store(store)
    assert again.problems == 0 and "no damage found" in again.lines()
    assert not store.image_path(KEY).exists() and not link.exists() and tmp_path.is_dir()
    assert len(list(store.quarantine_dir.glob(f"{KEY}.*.png"))) == 1


# -- group 10: the database ---------------------------------------------------------------------------
def test_deleted_database_is_noticed_before_rows_are_lost(store):
    store.put_scores([("k1", "m", "fp", 1.0, None)])
    os.remove(store.root / "cache" / "scores.sqlite")
    with pytest.raises(StoreError, match="was deleted or replaced while this run was using it; .* re-run"):
        store.put_scores([("k2", "m", "fp", 2.0, None)])


def test_wal_is_set_once_by_whoever_creates_the_database(tmp_path):
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "cache" / "scores.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def _open_new_store(root, barrier):
    barrier.wait()
    s = Store(root)
    s.put_scores([(f"k{os.getpid()}", "m", "fp", 1.0, None)])
    s.close()


def test_processes_opening_a_new_store_at_the_same_moment(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_new_store, args=(tmp_path, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert Store(tmp_path).count_scores() == 4


def test_locked_wal_switch_is_retried(tmp_path, monkeypatch):
    """Fault injection: the first two PRAGMA journal_mode=WAL calls meet a lock, as under load."""
    from iqabench.store import store as store_module

    calls = []
    real = store_module._ensure_wal

    def flaky(conn):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        real(conn)

    monkeypatch.setattr(store_module, "_ensure_wal", flaky)
    Store(tmp_path).close()
    assert len(calls) == 3


# -- group 8: adapter tensors of the wrong dtype ---------------------------------------------------
def test_int8_adapter_tensors_are_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from iqabench.adapters.iqa_adapter.checkpoint import read_checkpoint
    from iqabench.adapters.iqa_adapter.projection import CheckpointError

    path = tmp_path / "q.safetensors"
    save_file({"image_proj.proj.weight": torch.ones(4, 2, dtype=torch.int8),
               "ip_adapter.1.to_k_ip.weight": torch.ones(4, 4)}, str(path))
    with pytest.raises(CheckpointError, match=r"1 non-floating-point tensor\(s\) \(e.g. 'image_proj.proj.weight' is "
                                              r"int8\); IQA-Adapter weights must be float32, float16 or bfloat16"):
        read_checkpoint(path)


def test_float64_adapter_tensors_are_cast_with_a_message(tmp_path, caplog):
    import torch
    from safetensors.torch import save_file

    from iqabench.adapters.iqa_adapter.checkpoint import read_checkpoint

    path = tmp_path / "d.safetensors"
    save_file({"image_proj.proj.weight": torch.ones(4, 2, dtype=torch.float64),
               "ip_adapter.1.to_k_ip.weight": torch.ones(4, 4, dtype=torch.float16)}, str(path))
    with caplog.at_level("WARNING", logger="iqabench"):
        tensors, _ = read_checkpoint(path)
    assert tensors["image_proj.proj.weight"].dtype == torch.float32
    assert tensors["ip_adapter.1.to_k_ip.weight"].dtype == torch.float16  # half stays half
    assert "1 tensor(s) are float64; cast to float32" in caplog.text


# -- group 3: the metric output contract --------------------------------------------------------------
def _shape_metric(name, make):
    import torch
    from torch import nn

    from iqabench.metrics import register_metric

    @register_metric(name, lower_better=False, overwrite=True)
    def build(device):
        class Shaped(nn.Module):
            def forward(self, x):
                return make(x, torch)

        return Shaped()


@pytest.mark.parametrize("make, shape", [
    (lambda x, t: x.mean(dim=(2, 3)), "[2, 3]"),  # one number per channel: column 0 used to be kept silently
    (lambda x, t: x.mean(), "[]"),  # a batch mean used to be copied to every image
    (lambda x, t: x.mean(dim=(1, 2, 3))[:1], "[1]"),
])
def test_metric_with_the_wrong_output_shape_is_a_clear_error(make, shape):
    import torch

    from iqabench.contracts.registry import METRICS
    from iqabench.metrics import MetricContractError, build_metric

    _shape_metric("shape_test", make)
    try:
        with pytest.raises(MetricContractError, match=rf"metric 'shape_test' returned shape {re.escape(shape)} for 2 "
                                                      r"image\(s\); a metric must return one number per image"):
            build_metric("shape_test").score(torch.rand(2, 3, 8, 8))
    finally:
        METRICS.remove("shape_test")


def test_metric_returning_n_by_1_is_accepted():
    import torch

    from iqabench.contracts.registry import METRICS
    from iqabench.metrics import build_metric

    _shape_metric("column_test", lambda x, t: x.mean(dim=(1, 2, 3)).unsqueeze(1))
    try:
        images = torch.stack([torch.full((3, 4, 4), 0.25), torch.full((3, 4, 4), 0.5)])
        assert build_metric("column_test").score(images).tolist() == [0.25, 0.5]
    finally:
        METRICS.remove("column_test")


def test_reliability_catalogue_names_only_tests_that_exist():
    """docs/reliability.md is the probe catalogue: every test it names must exist (and every group be there)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "reliability.md").read_text("utf-8")
    defined = set()
    for path in (root / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text("utf-8"), flags=re.M))
    named = set(re.findall(r"`(test_\w+)", doc))
    assert len(named) >= 50 and named <= defined, sorted(named - defined)
    assert [int(n) for n in re.findall(r"^### (\d+)\. ", doc, flags=re.M)] == list(range(1, 11))


# -- group 6: the error boundary's rule ------------------------------------------------------------------
def test_error_boundary_rule():
    """Ours or the environment's: one sentence. Raised inside a library: a bug (None = keep the traceback)."""
    import errno

    from iqabench.cli.boundary import user_message

    def raised(make):
        try:
            make()
        except Exception as exc:  # noqa: BLE001 - the point is to classify any exception
            return exc

    ours = raised(lambda: parse_seeds("x"))
    library = raised(lambda: pd.DataFrame({"a": [1], "b": [1, 2]}))
    assert user_message(ours).startswith("cannot parse seeds 'x'")
    assert user_message(library) is None
    disk = OSError(errno.ENOSPC, "No space left on device", "/data/x.png")
    assert user_message(disk).startswith("/data/x.png: No space left on device (the disk is full")
    full = sqlite3.OperationalError("database or disk is full")
    assert user_message(full) == ("the score database failed: database or disk is full (the disk is full: free some "
                                  "space and re-run; finished images and scores are kept)")
    assert user_message(sqlite3.OperationalError("no such column: x")) is None  # an SQL bug stays a bug
    assert user_message(FileNotFoundError("/x/scores.parquet")) == "/x/scores.parquet: no such file or folder"


def test_fetch_and_unsafe_checkpoint_errors_are_one_sentence(tmp_path):
    """A download the server refuses (``FetchError``) and a cached pickle that holds objects
    (``UnsafeCheckpointError``) are the environment's, not bugs: the boundary prints their sentence. Both used to
    be plain RuntimeError / UnpicklingError subclasses, shown with a traceback and "this is a bug"."""
    import collections
    import pickle
    from fractions import Fraction

    import torch

    from iqabench.cli.boundary import user_message
    from iqabench.engine.fetch import FetchError, download_url
    from iqabench.io.safe_load import UnsafeCheckpointError, load_checkpoint

    with pytest.raises(FetchError) as refused:
        download_url((tmp_path / "absent.bin").as_uri(), tmp_path / "out.bin")
    assert user_message(refused.value).startswith(f"{(tmp_path / 'absent.bin').as_uri()} could not be downloaded")

    torch.save({"x": collections.OrderedDict(a=Fraction(1, 3))}, tmp_path / "bad.pt")  # a Fraction: not a tensor
    with pytest.raises(UnsafeCheckpointError) as unsafe:
        load_checkpoint(tmp_path / "bad.pt")
    assert isinstance(unsafe.value, pickle.UnpicklingError)  # callers catching the loader's error still do
    assert user_message(unsafe.value).startswith(f"{tmp_path / 'bad.pt'} holds pickled objects other than tensors")
