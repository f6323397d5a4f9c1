"""Quality input: stats, target syntax, z-scoring, positional-encoding layout, flag/L inference."""

from __future__ import annotations

import math

import pytest
import torch

from iqabench.adapters.iqa_adapter.conditioning import (
    MetricStats,
    QualityEncoding,
    TargetError,
    load_stats,
    read_stats_csv,
    resolve_target,
    write_stats_csv,
)


def test_vendored_cc3m_stats_have_the_released_metrics():
    stats = load_stats()
    for name in ("topiq_nr", "hyperiqa", "laion_aes"):
        assert name in stats
    topiq = stats["topiq_nr"]
    assert topiq.mean == pytest.approx(0.5492246687400396)
    assert topiq.std == pytest.approx(0.09879883073803575)
    assert topiq.percentile(99) == pytest.approx(0.7479046231508255)
    assert topiq.percentile(0) == pytest.approx(0.028465598821640015)  # min_val is p0


def test_targets_percentile_z_and_raw():
    s = MetricStats("m", mean=2.0, std=0.5, quantiles={0: 0.0, 50: 2.0, 90: 3.0, 100: 4.0})
    assert resolve_target("p90", [s]) == [pytest.approx(2.0)]           # (3 - 2) / 0.5
    assert resolve_target("p70", [s]) == [pytest.approx(1.0)]           # interpolated raw 2.5
    assert resolve_target("z=-1.5", [s]) == [-1.5]
    assert resolve_target("3.0", [s]) == [pytest.approx(2.0)]
    assert resolve_target(3.0, [s]) == [pytest.approx(2.0)]
    t = MetricStats("t", mean=0.0, std=2.0, quantiles={0: -4.0, 100: 4.0})
    assert resolve_target("p50", [s, t]) == [pytest.approx(0.0), pytest.approx(0.0)]   # one term for all
    assert resolve_target("p90/z=1", [s, t]) == [pytest.approx(2.0), 1.0]              # per metric


@pytest.mark.parametrize("bad, match", [("q99", "cannot read"), ("p101", "outside 0..100"),
                                        ("p50/p50", "has 2 terms"), (True, "not a percentile")])
def test_bad_targets_fail_with_one_sentence(bad, match):
    s = MetricStats("m", 0.0, 1.0, {0: -1.0, 100: 1.0})
    with pytest.raises(TargetError, match=match):
        resolve_target(bad, [s])


def test_zero_std_is_refused():
    with pytest.raises(TargetError, match="positive std"):
        MetricStats("flat", 1.0, 0.0)


def test_positional_encoding_layout_matches_released_code():
    enc = QualityEncoding(n_scores=2, use_flag=False, pos_frequencies=3)
    x = torch.tensor([[0.3, -1.2]])
    out = enc.encode(x)
    assert out.shape == (1, 2 * (1 + 2 * 3)) and enc.input_dim == 14
    expected = [0.3, -1.2]
    expected += [math.sin(2**k * math.pi * v) for v in (0.3, -1.2) for k in range(3)]  # sines, input-major
    expected += [math.cos(2**k * math.pi * v) for v in (0.3, -1.2) for k in range(3)]  # then cosines
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)


def test_flag_is_appended_before_encoding_and_unconditional_is_zero():
    enc = QualityEncoding(n_scores=1, use_flag=True, pos_frequencies=1)
    out = enc.encode(torch.tensor([[0.5]]))
    assert out[0, :2].tolist() == [0.5, 1.0]
    assert out.shape[1] == enc.input_dim == 6
    assert torch.equal(enc.unconditional(3), torch.zeros(3, 6))


@pytest.mark.parametrize("n, flag, L", [(1, False, 0), (1, True, 0), (2, False, 10), (2, True, 10), (3, True, 4)])
def test_flag_and_frequencies_are_recovered_from_width(n, flag, L):
    width = QualityEncoding(n, flag, L).input_dim
    assert QualityEncoding.infer(width, n) == QualityEncoding(n, flag, L)


def test_impossible_width_fails_clearly():
    with pytest.raises(TargetError, match="does not fit 2 score"):
        QualityEncoding.infer(4, 2)


def test_stats_csv_round_trip():
    stats = {"a": MetricStats("a", 1.5, 0.25, {0: 0.1, 5: 0.9, 50: 1.5, 100: 2.0})}
    again = read_stats_csv(write_stats_csv(stats))
    assert again["a"] == stats["a"]
