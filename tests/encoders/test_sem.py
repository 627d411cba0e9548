import pytest
import torch

from mrsq.encoders.sem import SemEncoder, SemEncoderSpec
from mrsq.nn import simplicial_embedding
from mrsq.specs import SpecError, load


def small_sem(group_size=8):
    spec = SemEncoderSpec(zs_dim=32, za_dim=8, zsa_dim=16, hidden_dim=16, group_size=group_size)
    return spec, SemEncoder(spec, obs_dim=5, action_dim=2)


@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_sem_outputs_are_simplices(group_size):
    spec, enc = small_sem(group_size)
    obs, act = torch.randn(64, 5) * 3, torch.rand(64, 2) * 2 - 1
    zs = enc.zs(obs)
    _, next_zs, _ = enc.model_all(zs, act)
    for z in (zs, next_zs):
        groups = z.reshape(64, spec.zs_dim // group_size, group_size)
        assert (groups >= 0).all()
        torch.testing.assert_close(groups.sum(-1), torch.ones(64, spec.zs_dim // group_size))


def test_simplicial_embedding_by_hand():
    x = torch.tensor([[0.0, 0.0, 1.0, 3.0]])
    out = simplicial_embedding(x, 2)
    e = torch.tensor(2.0).exp()
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5, 1 / (1 + e), e / (1 + e)]]))


def test_gradients_flow_through_sem():
    _, enc = small_sem()
    obs = torch.randn(8, 5)
    zs = enc.zs(obs)
    _, next_zs, _ = enc.model_all(zs, torch.rand(8, 2) * 2 - 1)
    # a full group sums to 1 (zero gradient), so take every 3rd / 5th feature instead
    (zs[:, ::3].sum() + next_zs[:, 1::5].sum()).backward()
    for name, p in enc.named_parameters():
        if name.startswith(("f.", "g.", "za.", "head.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_elu_encoder_has_no_simplex_constraint():
    spec = load("mrq_small").encoder
    from mrsq.encoders.elu import EluEncoder

    zs = EluEncoder(spec, 5, 2).zs(torch.randn(16, 5))
    assert (zs < 0).any()  # ELU output is not a probability vector


def test_group_size_must_divide_zs_dim():
    with pytest.raises(SpecError, match="divisible by group_size"):
        load("mrsq", ["encoder.group_size=7"])


def test_layer_norm_affine_is_learnable_by_default_and_switchable():
    spec, enc = small_sem()
    assert spec.layer_norm_affine  # the references' choice
    names = {n for n, _ in enc.named_parameters()}
    assert {"zs_norm.weight", "zs_norm.bias", "dynamics_norm.weight", "dynamics_norm.bias"} <= names
    # the affine is applied before the softmax: doubling the scale sharpens every simplex
    obs = torch.randn(16, 5)
    before = enc.zs(obs)
    with torch.no_grad():
        enc.zs_norm.weight.mul_(2.0)
    sharper = enc.zs(obs)
    g = spec.group_size
    peak = lambda z: z.reshape(*z.shape[:-1], -1, g).amax(-1)  # noqa: E731 - each simplex's largest entry
    assert (peak(sharper) >= peak(before) - 1e-6).all() and (peak(sharper) > peak(before)).float().mean() > 0.9
    # and it receives gradients
    enc.zs(obs)[:, ::3].sum().backward()
    assert enc.zs_norm.weight.grad.abs().sum() > 0 and enc.zs_norm.bias.grad.abs().sum() > 0

    plain = load("mrsq", ["encoder.layer_norm_affine=false"]).encoder
    assert not plain.layer_norm_affine
    enc_plain = SemEncoder(plain, obs_dim=5, action_dim=2)
    assert not any("norm" in n for n, _ in enc_plain.named_parameters())
