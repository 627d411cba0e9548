"""Two-hot reward encoding (mrsq.twohot): bins, encode/decode round trip, clamping, cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrsq.twohot import TwoHot, symexp, symlog

TINY = 1e-30  # log(0) guard; float32 keeps it (min normal ~1e-38) and it is negligible after softmax


@pytest.fixture(scope="module")
def th() -> TwoHot:
    return TwoHot()  # MR.Q's defaults: 65 bins, symexp(linspace(-10, 10))


def test_default_bins_are_symexp_of_linspace(th):
    expected = np.sign(np.linspace(-10, 10, 65)) * np.expm1(np.abs(np.linspace(-10, 10, 65)))
    assert th.bins.shape == (65,)
    np.testing.assert_allclose(th.bins.numpy(), expected, rtol=1e-6)
    assert th.bins[32].item() == 0.0  # middle bin is exactly zero
    assert th.bins[-1].item() == pytest.approx(math.exp(10) - 1, rel=1e-6)  # ~22025.47
    assert th.bins[0].item() == pytest.approx(-(math.exp(10) - 1), rel=1e-6)
    assert th.bins[33].item() == pytest.approx(math.expm1(20 / 64), rel=1e-6)  # spacing 20/64 in symlog space
    assert (th.bins[1:] > th.bins[:-1]).all()
    torch.testing.assert_close(th.bins, -th.bins.flip(0))  # symmetric


def test_symlog_symexp_inverse():
    x = torch.tensor([-1000.0, -3.5, -1e-3, 0.0, 1e-3, 2.0, 1000.0])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-6, atol=1e-7)
    assert symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)
    assert symlog(torch.tensor(-(math.e - 1))).item() == pytest.approx(-1.0)


def _values(th: TwoHot) -> torch.Tensor:
    inside = th.bins[(th.bins >= -1000) & (th.bins <= 1000)]  # exact bin values (incl. 0)
    grid = torch.linspace(-1000, 1000, 2001)  # integers, 0 included
    small = torch.tensor([-1e-3, 1e-3, -0.37, 0.37, 1.5, -1.5, 999.9, -999.9])
    return torch.cat([inside, grid, small])


def test_encode_rows_are_two_hot_and_interpolate(th):
    x = _values(th)
    enc = th.encode(x)
    assert enc.shape == (x.numel(), 65)
    assert (enc >= 0).all()
    torch.testing.assert_close(enc.sum(-1), torch.ones(x.numel()), rtol=0, atol=1e-6)
    nonzero = enc > 0
    assert (nonzero.sum(-1) <= 2).all()
    assert (nonzero.sum(-1) >= 1).all()
    for row in nonzero:
        idx = row.nonzero().flatten()
        if idx.numel() == 2:
            assert idx[1] - idx[0] == 1, f"non-adjacent bins {idx.tolist()}"
    # the weights are linear interpolation: the expectation over bins is x itself
    torch.testing.assert_close(enc @ th.bins, x, rtol=1e-5, atol=1e-4)


def test_exact_bin_values_are_one_hot(th):
    for k in (0, 1, 20, 31, 32, 33, 50, 63, 64):
        enc = th.encode(th.bins[k : k + 1])[0]
        assert enc[k].item() == pytest.approx(1.0, abs=1e-6), k
        assert enc.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert (enc > 1e-6).sum() == 1, k


def test_encode_hand_values(th):
    # bins[32] = 0, bins[33] = expm1(0.3125) ~ 0.3668, bins[34] = expm1(0.625) ~ 0.8682
    b33, b34 = math.expm1(20 / 64), math.expm1(40 / 64)
    enc = th.encode(torch.tensor([0.2, -0.2, 0.5]))
    assert enc[0, 32].item() == pytest.approx(1 - 0.2 / b33, rel=1e-5)
    assert enc[0, 33].item() == pytest.approx(0.2 / b33, rel=1e-5)
    # -0.2: mirror image, between bins[31] and bins[32]
    assert enc[1, 31].item() == pytest.approx(0.2 / b33, rel=1e-5)
    assert enc[1, 32].item() == pytest.approx(1 - 0.2 / b33, rel=1e-5)
    # 0.5: between bins[33] and bins[34]
    w = (0.5 - b33) / (b34 - b33)  # ~0.2656
    assert enc[2, 33].item() == pytest.approx(1 - w, rel=1e-5)
    assert enc[2, 34].item() == pytest.approx(w, rel=1e-5)
    assert w == pytest.approx(0.26557, abs=1e-4)


def test_round_trip_decode_of_log_encode(th):
    x = _values(th)
    decoded = th.decode(torch.log(th.encode(x) + TINY))
    assert decoded.shape == (x.numel(), 1)
    torch.testing.assert_close(decoded[:, 0], x, rtol=1e-5, atol=1e-4)


def test_batched_shapes(th):
    x = torch.randn(4, 3) * 50
    enc = th.encode(x)
    assert enc.shape == (4, 3, 65)
    dec = th.decode(torch.log(enc + TINY))
    assert dec.shape == (4, 3, 1)
    torch.testing.assert_close(dec[..., 0], x, rtol=1e-5, atol=1e-4)
    assert th.cross_entropy(torch.zeros(4, 3, 65), x).shape == (4, 3)


def test_values_beyond_the_ends_clamp(th):
    x = torch.tensor([1e6, 22026.0, -1e6, -22026.0, float(th.bins[-1]), float(th.bins[0])])
    enc = th.encode(x)
    for row, end in zip(enc, (64, 64, 0, 0, 64, 0)):
        assert row[end].item() == pytest.approx(1.0, abs=1e-6)
        assert row.sum().item() == pytest.approx(1.0, abs=1e-6)
    decoded = th.decode(torch.log(enc + TINY))[:, 0]
    top = math.exp(10) - 1
    torch.testing.assert_close(decoded, torch.tensor([top, top, -top, -top, top, -top]), rtol=1e-5, atol=1e-2)


def test_decode_is_softmax_expectation():
    th = TwoHot(num_bins=5, lower=-2.0, upper=2.0)
    bins = [-math.expm1(2), -math.expm1(1), 0.0, math.expm1(1), math.expm1(2)]
    torch.testing.assert_close(th.bins, torch.tensor(bins, dtype=torch.float32))
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    z = sum(math.exp(v) for v in range(5))
    expected = sum(math.exp(v) / z * b for v, b in zip(range(5), bins))
    assert th.decode(logits).item() == pytest.approx(expected, rel=1e-5)
    # uniform logits: symmetric bins average to 0
    assert th.decode(torch.zeros(5)).item() == pytest.approx(0.0, abs=1e-5)


def test_cross_entropy_hand_computation():
    th = TwoHot(num_bins=5, lower=-2.0, upper=2.0)
    # bins: [-(e^2-1), -(e-1), 0, e-1, e^2-1]; x = 0.5 sits between bin 2 (=0) and bin 3 (=e-1)
    w_hi = 0.5 / (math.e - 1)  # 0.290988...
    w_lo = 1 - w_hi
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 0.5, 0.0, 2.0]])
    x = torch.tensor([0.5, -10.0])  # -10 clamps to bin 0 (= -(e^2 - 1) ~ -6.389)
    lse0 = math.log(sum(math.exp(v) for v in (0.0, 1.0, 2.0, 3.0, 4.0)))  # 4.451914
    lse1 = math.log(sum(math.exp(v) for v in (1.0, -1.0, 0.5, 0.0, 2.0)))
    ce0 = -(w_lo * (2.0 - lse0) + w_hi * (3.0 - lse0))  # ~2.160923
    ce1 = -(1.0 - lse1)
    assert ce0 == pytest.approx(2.160923, abs=1e-5)
    out = th.cross_entropy(logits, x)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([ce0, ce1]), rtol=1e-6, atol=1e-6)


def test_cross_entropy_is_minimised_by_the_target(th):
    x = torch.tensor([3.7, -120.0, 0.0])
    target_logits = torch.log(th.encode(x) + TINY)
    best = th.cross_entropy(target_logits, x)
    other = th.cross_entropy(target_logits + torch.randn(3, 65, generator=torch.Generator().manual_seed(0)), x)
    assert (best[:2] < other[:2]).all()
    # CE of the exact target equals its entropy: 0 for a one-hot (x = 0 is exactly bin 32)
    assert best[2].item() == pytest.approx(0.0, abs=1e-5)
