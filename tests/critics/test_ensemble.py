import copy

import pytest
import torch

from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.nn import hard_update_


def make(n, hidden=32, input_dim=24):
    torch.manual_seed(n)
    return EnsembleCritic(EnsembleCriticSpec(num_members=n, hidden_dim=hidden), input_dim)


@pytest.mark.parametrize("n", [1, 2, 10])
def test_vectorized_equals_separate_members(n):
    critic = make(n)
    x = torch.randn(17, 24)
    out = critic(x)
    assert out.shape == (n, 17, 1)
    for i in range(n):
        torch.testing.assert_close(out[i], critic.member(i)(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [2, 10])
def test_per_member_inputs(n):
    critic = make(n)
    x = torch.randn(n, 9, 24)
    out = critic(x)
    for i in range(n):
        torch.testing.assert_close(out[i], critic.member(i)(x[i]), atol=1e-5, rtol=1e-5)


def test_members_differ_at_initialisation():
    critic = make(10)
    for w in critic.weights:
        flat = w.reshape(10, -1)
        dists = torch.cdist(flat, flat)
        assert (dists + torch.eye(10) * 1e9).min() > 1e-3  # no two members share weights
    out = critic(torch.randn(4, 24))
    assert out.std(0).min() > 0


def test_member_init_is_xavier_per_slice():
    critic = make(4, hidden=64, input_dim=64)
    bound = (6 / (64 + 64)) ** 0.5 * (2 ** 0.5)  # xavier-uniform, ReLU gain, fans of one member
    w = critic.weights[1]
    assert w.abs().max() <= bound + 1e-6
    assert w.abs().max() > 0.9 * bound  # not the (much smaller) bound a stacked-fan init gives
    assert all((b == 0).all() for b in critic.biases)


def test_hard_target_update_equals_per_member_copy():
    critic = make(5)
    target = copy.deepcopy(critic).requires_grad_(False)
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(torch.randn_like(p))
    hard_update_(target, critic)
    for i in range(5):
        for lt, lc in zip(target.member(i).layers, critic.member(i).layers):
            assert torch.equal(lt.weight, lc.weight) and torch.equal(lt.bias, lc.bias)
    assert all(not p.requires_grad for p in target.parameters())


def test_soft_target_update_formula():
    from mrsq.nn import soft_update_

    critic, tau = make(3), 0.01
    target = copy.deepcopy(critic)
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    soft_update_(target, critic, tau)
    for b, t, c in zip(before, target.parameters(), critic.parameters()):
        torch.testing.assert_close(t, (1 - tau) * b + tau * c)


def test_num_members_bounds():
    from pydantic import ValidationError

    for bad in (0, 33):
        with pytest.raises(ValidationError, match="num_members"):
            EnsembleCriticSpec(num_members=bad)
    EnsembleCriticSpec(num_members=32)
