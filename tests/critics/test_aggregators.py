import pytest
import torch

from mrsq.critics.aggregators import (
    MeanMinusStdSpec, MinOfKSpec, build_aggregator, ensemble_max, ensemble_mean, ensemble_mean_minus_std,
    ensemble_min, ensemble_min_of_k)
from mrsq.registry import AGGREGATORS

# 3 members, batch 2: values[member, batch, 0]
V = torch.tensor([[[1.0], [5.0]],
                  [[4.0], [2.0]],
                  [[-2.0], [8.0]]])


def test_min_mean_max_by_hand():
    assert torch.equal(ensemble_min(V), torch.tensor([[-2.0], [2.0]]))
    assert torch.equal(ensemble_max(V), torch.tensor([[4.0], [8.0]]))
    torch.testing.assert_close(ensemble_mean(V), torch.tensor([[1.0], [5.0]]))


def test_mean_minus_std_by_hand():
    # batch 0: mean 1, population std sqrt((0 + 9 + 9) / 3) = sqrt(6)
    # batch 1: mean 5, population std sqrt((0 + 9 + 9) / 3) = sqrt(6)
    out = ensemble_mean_minus_std(V, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([[1 - 0.5 * 6 ** 0.5], [5 - 0.5 * 6 ** 0.5]]))
    torch.testing.assert_close(ensemble_mean_minus_std(V[:1], beta=3.0), V[0])  # one member: std 0


def test_min_of_k_draws_k_distinct_members():
    # members hold their own index, so the result reveals which were drawn
    n = 10
    values = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1).expand(n, 4, 1)
    torch.manual_seed(0)
    seen = set()
    for _ in range(300):
        out = ensemble_min_of_k(values, k=3)
        assert out.shape == (4, 1) and (out == out[0]).all()  # one draw per call, shared by the batch
        seen.add(int(out[0, 0]))
    # min of 3 distinct draws from 0..9 is at most 7; with replacement it could be 8 or 9
    assert max(seen) <= 7 and min(seen) == 0


def test_min_of_k_uses_k_members_exactly():
    n, k = 6, 2
    torch.manual_seed(1)
    calls = []
    original = torch.rand

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out.argsort()[:k].clone())
        return out

    values = torch.randn(n, 5, 1)
    torch.rand = spy
    try:
        out = ensemble_min_of_k(values, k=k)
    finally:
        torch.rand = original
    drawn = calls[-1]
    assert len(set(drawn.tolist())) == k
    torch.testing.assert_close(out, values[drawn].amin(0))


def test_min_of_k_with_k_above_n_raises():
    with pytest.raises(ValueError, match="exceeds the ensemble size"):
        ensemble_min_of_k(V, k=4)


def test_build_aggregator_binds_spec_parameters():
    agg = build_aggregator(MeanMinusStdSpec(beta=2.0))
    torch.testing.assert_close(agg(V), ensemble_mean_minus_std(V, beta=2.0))
    assert build_aggregator(MinOfKSpec(k=3))(V).shape == (2, 1)


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_aggregator_reduces_the_member_dim(name):
    agg = build_aggregator(AGGREGATORS.spec(name)())
    # a subset aggregator is given its k drawn members' values; one that pools atoms, M of them each
    values = torch.randn(agg.subset or 4, 7, 5 if agg.pools_atoms else 1)
    out = agg(values)
    assert out.shape == (7, 1) and torch.isfinite(out).all()
