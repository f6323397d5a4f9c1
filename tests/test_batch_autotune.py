"""--batch-size auto: probe growing sizes, stop at out-of-memory or saturation, remember per generator/device."""

import pytest

from iqabench.engine.batch_autotune import BatchSizeProbe, recall, remember
from iqabench.store.store import Store


def _drive(probe, seconds_per_call, oom_from=None, calls=20):
    sizes = []
    for _ in range(calls):
        size = probe.next_size()
        sizes.append(size)
        if oom_from is not None and size >= oom_from:
            probe.record_out_of_memory(size)
            continue
        probe.record(size, size, seconds_per_call(size))
    return sizes


def test_probe_stops_at_out_of_memory_and_keeps_the_fastest_size_that_fitted():
    probe = BatchSizeProbe(max_size=64)
    sizes = _drive(probe, lambda n: 1.0 + 0.1 * n, oom_from=16)  # per-image time falls with n until OOM
    assert sizes[:6] == [1, 1, 2, 4, 8, 16]  # warm-up, then doubling until 16 does not fit
    assert probe.finished and probe.out_of_memory_at == 16 and probe.chosen == 8
    assert set(sizes[6:]) == {8}


def test_probe_stops_when_throughput_saturates():
    probe = BatchSizeProbe(max_size=64)
    # images/s: 1 -> 1.0, 2 -> 1.8, 4 -> 2.5, 8 -> 2.4 (slower): keep 4
    rates = {1: 1.0, 2: 1.8, 4: 2.5, 8: 2.4}
    _drive(probe, lambda n: n / rates[n], calls=8)
    assert probe.finished and probe.out_of_memory_at is None and probe.chosen == 4


def test_probe_respects_max_size():
    probe = BatchSizeProbe(max_size=4)
    _drive(probe, lambda n: 1.0, calls=6)
    assert probe.finished and max(probe.throughput) == 4 and probe.chosen == 4


def test_out_of_memory_at_batch_one_is_an_error():
    probe = BatchSizeProbe(warmups=0)
    with pytest.raises(RuntimeError, match="does not fit"):
        probe.record_out_of_memory(1)


def test_choice_is_remembered_per_generator_and_device(tmp_path):
    store = Store(tmp_path)
    probe = BatchSizeProbe(max_size=64)
    _drive(probe, lambda n: 1.0 + 0.1 * n, oom_from=16)
    assert recall(store, {"g": 1}, "cpu") is None
    remember(store, {"g": 1}, "cpu", probe)
    assert recall(store, {"g": 1}, "cpu") == 8
    assert recall(store, {"g": 2}, "cpu") is None  # another generator probes again
    assert recall(store, {"g": 1}, "meta") is None  # another device too
    assert recall(store, {"g": 1}, "cpu", {"compile": True}) is None  # and another speed setup (fast paths)
    remember(store, {"g": 1}, "cpu", probe, {"compile": True})
    assert recall(store, {"g": 1}, "cpu", {"compile": True}) == 8


def test_auto_dtype_is_the_gpus_on_every_cuda_device_of_a_multi_gpu_run(monkeypatch):
    """Each process of a multi-GPU run gets ``cuda:N``: --dtype auto must not fall back to fp32 there (other
    keys than the single-GPU run's, and twice the memory)."""
    import torch

    from iqabench.execution.runtime import Runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert Runtime(device="cuda:1", dtype="auto", batch_size=1).dtype == "bf16"
    assert Runtime(device="cuda", dtype="auto", batch_size=1).dtype == "bf16"
