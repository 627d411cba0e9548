"""Every registered encoder, critic and policy passes mrsq.testing's public contract check,
and the check itself fails on broken components."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

import mrsq.components  # noqa: F401  (registers every built-in component)
from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.policies.tanh import TanhPolicy, TanhPolicySpec
from mrsq.registry import AGENTS, AGGREGATORS, CRITICS, ENCODERS, ENVS, PLANNERS, POLICIES
from mrsq.planners.base import Planner
from mrsq.specs import Spec
from mrsq.testing import check_component


def test_registries_hold_the_builtins():
    assert {"elu", "sem"} <= set(ENCODERS.names())
    assert "ensemble" in CRITICS.names()
    assert "tanh" in POLICIES.names()


@pytest.mark.parametrize("name", ENCODERS.names(), ids=ENCODERS.names())
def test_encoder_contract(name):
    model = check_component("encoder", name)
    assert isinstance(model, ENCODERS.get(name))


@pytest.mark.parametrize("name", CRITICS.names(), ids=CRITICS.names())
def test_critic_contract(name):
    critic = check_component("critic", name)
    assert isinstance(critic, CRITICS.get(name))


@pytest.mark.parametrize("name", POLICIES.names(), ids=POLICIES.names())
def test_policy_contract(name):
    policy = check_component("policy", name)
    assert isinstance(policy, POLICIES.get(name))


@pytest.mark.parametrize("num_members", [1, 2, 10])
def test_ensemble_sizes(num_members):
    spec = EnsembleCriticSpec(num_members=num_members, hidden_dim=32)
    critic = check_component("critic", spec, input_dim=12, batch=4)
    assert critic.num_members == num_members
    x = torch.randn(4, 12)
    q = critic(x)
    assert q.shape == (num_members, 4, 1)
    # every member is the plain MLP it claims to be (and members are independently initialised)
    for i in range(num_members):
        torch.testing.assert_close(critic.member(i)(x), q[i])
    if num_members > 1:
        assert not torch.allclose(q[0], q[1])


def test_sem_encoder_with_custom_spec():
    spec = ENCODERS.spec("sem")(zs_dim=32, za_dim=8, zsa_dim=16, hidden_dim=24, group_size=4)
    model = check_component("encoder", spec, obs_dim=5, action_dim=2, batch=3)
    zs = model.zs(torch.randn(3, 5))
    torch.testing.assert_close(zs.reshape(3, 8, 4).sum(-1), torch.ones(3, 8))  # each simplex sums to 1


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="no contract check"):
        check_component("preset", "mrq")


@pytest.mark.parametrize("name", AGGREGATORS.names(), ids=AGGREGATORS.names())
def test_aggregator_contract(name):
    check_component("aggregator", name)


@pytest.mark.parametrize("name", PLANNERS.names(), ids=PLANNERS.names())
def test_planner_contract(name):
    check_component("planner", name)


@pytest.mark.parametrize("env_id", ["fake:point2", "fake:pixels32", "nchain:4-3", "gym:InvertedPendulum-v5",
                                    "dmc:cartpole-balance"])
def test_env_contract(env_id):
    check_component("env", env_id)


def test_every_env_family_has_a_checked_example():
    # dmcpix renders, so its contract check runs in a subprocess with OSMesa (test_pixels.py)
    checked = {"fake", "nchain", "gym", "dmc", "dmcpix"}
    assert set(ENVS.names()) == checked, "a new env family needs an id in test_env_contract"


# ------------------------------------------------------------------ the check can fail
class SkipLayerPolicySpec(TanhPolicySpec):
    type: Literal["test_skip_layer"] = "test_skip_layer"


class SkipLayerPolicy(TanhPolicy):
    """Broken on purpose: the middle hidden layer is built but never used."""

    def forward(self, zs):
        first, _, last = self.net.layers
        pre = last(torch.relu(first(zs)))
        return torch.tanh(pre), pre


class WrongShapeCriticSpec(EnsembleCriticSpec):
    type: Literal["test_wrong_shape"] = "test_wrong_shape"


class WrongShapeCritic(EnsembleCritic):
    """Broken on purpose: returns the member mean ``[B, 1]`` instead of ``[N, B, 1]``."""

    def forward(self, zsa):
        return super().forward(zsa).mean(0)


class DeadMemberCritic(EnsembleCritic):
    """Broken on purpose: member 1's value is replaced by a constant (no gradient reaches it)."""

    def forward(self, zsa):
        q = super().forward(zsa)
        return torch.cat([q[:1], torch.zeros_like(q[1:])], 0)


class NaNPolicy(TanhPolicy):
    def forward(self, zs):
        action, pre = super().forward(zs)
        return action, pre * float("nan")


def _register(monkeypatch, registry, name, cls, spec):
    """Register ``cls`` under ``name`` for this test only."""
    monkeypatch.setitem(registry._entries, name, (cls, spec, "broken on purpose"))


def test_check_catches_a_policy_that_ignores_a_layer(monkeypatch):
    _register(monkeypatch, POLICIES, "test_skip_layer", SkipLayerPolicy, SkipLayerPolicySpec)
    with pytest.raises(AssertionError, match=r"net\.layers\.1"):
        check_component("policy", "test_skip_layer")
    # the same spec with the real policy passes, so it is the layer skip that is caught
    check_component("policy", TanhPolicySpec())


def test_check_catches_a_critic_with_the_wrong_output_shape(monkeypatch):
    _register(monkeypatch, CRITICS, "test_wrong_shape", WrongShapeCritic, WrongShapeCriticSpec)
    with pytest.raises(AssertionError, match="values shape"):
        check_component("critic", "test_wrong_shape")


def test_check_catches_a_member_without_gradient(monkeypatch):
    _register(monkeypatch, CRITICS, "test_wrong_shape", DeadMemberCritic, WrongShapeCriticSpec)
    with pytest.raises(AssertionError, match="gradient is exactly zero"):
        check_component("critic", WrongShapeCriticSpec(hidden_dim=16))


def test_check_catches_non_finite_outputs(monkeypatch):
    _register(monkeypatch, POLICIES, "test_skip_layer", NaNPolicy, SkipLayerPolicySpec)
    with pytest.raises(AssertionError, match="non-finite"):
        check_component("policy", SkipLayerPolicySpec(hidden_dim=16))


class NoReduceSpec(Spec):
    type: Literal["test_no_reduce"] = "test_no_reduce"


class UnboundedKSpec(Spec):
    type: Literal["test_no_reduce"] = "test_no_reduce"
    k: int = 2


def test_check_catches_an_aggregator_that_forgets_to_reduce_or_mixes_rows(monkeypatch):
    cases = [(lambda values: values, NoReduceSpec, r"returned shape \(5, 5, 1\).*\[B, 1\]"),
             (lambda values: values.mean(0) * 0 + values.mean(), NoReduceSpec, "depend on other batch rows"),
             (lambda values: values.amin(0), UnboundedKSpec, "k=0 is accepted"),
             (lambda values: values.amin(0).detach(), NoReduceSpec, "no gradient reaches the values")]
    for fn, spec, message in cases:
        monkeypatch.setitem(AGGREGATORS._entries, "test_no_reduce", (fn, spec, "broken on purpose"))
        with pytest.raises(AssertionError, match=message):
            check_component("aggregator", "test_no_reduce")
    monkeypatch.setitem(AGGREGATORS._entries, "test_no_reduce", (lambda values: values.amin(0), NoReduceSpec, "ok"))
    check_component("aggregator", "test_no_reduce")  # fixed: passes


class StatefulSpec(Spec):
    type: Literal["test_stateful"] = "test_stateful"


class ForgetfulPlanner(Planner):
    """Broken on purpose: its warm start survives reset()."""

    def __init__(self, spec, action_dim):
        super().__init__()
        self.calls, self.action_dim = 0, action_dim

    def plan(self, model, obs, first=False, explore=True):
        self.calls += 1
        return torch.full((self.action_dim,), 0.1 * self.calls)


class WildPlanner(ForgetfulPlanner):
    def reset(self):
        self.calls = 0

    def plan(self, model, obs, first=False, explore=True):
        return torch.full((self.action_dim,), 2.0)


def test_check_catches_planners_with_stale_state_or_wild_actions(monkeypatch):
    monkeypatch.setitem(PLANNERS._entries, "test_stateful", (ForgetfulPlanner, StatefulSpec, "broken"))
    with pytest.raises(AssertionError, match="reset must clear"):
        check_component("planner", "test_stateful")
    monkeypatch.setitem(PLANNERS._entries, "test_stateful", (WildPlanner, StatefulSpec, "broken"))
    with pytest.raises(AssertionError, match=r"outside \[-1, 1\]"):
        check_component("planner", "test_stateful")


def test_check_catches_an_env_with_float64_observations(monkeypatch):
    from mrsq.testing import PointEnv

    class Float64Env(PointEnv):
        def _obs(self):
            return super()._obs().astype(np.float64)

    monkeypatch.setitem(ENVS._entries, "test64", (lambda name, seed: Float64Env(seed=seed), None, "broken"))
    with pytest.raises(AssertionError, match="float64 observations, expected float32"):
        check_component("env", "test64:x")


def test_broken_components_do_not_leak_into_the_registry():
    assert "test_skip_layer" not in POLICIES
    assert "test_wrong_shape" not in CRITICS


@pytest.mark.parametrize("name", AGENTS.names(), ids=AGENTS.names())
def test_agent_contract(name):
    agent = check_component("agent", name)
    assert isinstance(agent, AGENTS.get(name))


@pytest.mark.parametrize("preset", ["mrsq", "mrq_mpc", "tdmpc2_ens10_min", "redq", "td3_ens10_min"])
def test_agent_contract_presets(preset):
    """Presets whose aggregators or planners differ from their agent's default."""
    from mrsq import specs
    spec = specs.load(preset)
    data = {k: v for k, v in specs.to_dict(spec).items() if k in ("aggregators", "updates_per_step", "policy_delay")}
    overrides = [f"{k}={v}" for k, v in _flatten(data)]
    overrides += [f"critic.num_members={spec.critic.num_members}", f"planner.type={spec.planner.type}"]
    check_component("agent", spec.type, overrides=tuple(overrides), steps=12)


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
