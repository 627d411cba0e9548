"""TorchRL interop: components as TensorDictModules, the agent's actor driving torchrl envs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.agents.mrq import MRQ
from mrsq.registry import CRITICS, ENCODERS, POLICIES

OBS_DIM, ACTION_DIM = 4, 1  # InvertedPendulum-v5
TINY = ["encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
        "critic.hidden_dim=16", "policy.hidden_dim=16"]


def small_agent(seed: int = 0) -> MRQ:
    torch.manual_seed(seed)
    return MRQ(specs.load("mrq_small", TINY), OBS_DIM, ACTION_DIM)


SMALL = {"zs_dim": 16, "za_dim": 8, "zsa_dim": 16, "hidden_dim": 16}


def _small_spec(spec_cls):
    """The component's default spec with small widths where it has those fields."""
    return spec_cls(**{k: v for k, v in SMALL.items() if k in spec_cls.model_fields})


def _build(family: str, name: str):
    if family == "encoder":
        spec = _small_spec(ENCODERS.spec(name))
        return spec, ENCODERS.get(name)(spec, OBS_DIM, ACTION_DIM)
    if family == "critic":
        spec = _small_spec(CRITICS.spec(name))
        return spec, CRITICS.get(name)(spec, 16)
    spec = _small_spec(POLICIES.spec(name))
    return spec, POLICIES.get(name)(spec, 16, ACTION_DIM)


COMPONENTS = ([("encoder", n) for n in ENCODERS.names()] + [("critic", n) for n in CRITICS.names()]
              + [("policy", n) for n in POLICIES.names()])


@pytest.mark.parametrize("family,name", COMPONENTS, ids=[f"{f}-{n}" for f, n in COMPONENTS])
def test_component_as_tensordict_module(family, name):
    spec, module = _build(family, name)
    tdm = module.as_tensordict_module()
    assert isinstance(tdm, TensorDictModule)
    assert list(tdm.in_keys) == list(spec.in_keys)
    assert list(tdm.out_keys) == list(spec.out_keys)
    in_dim = OBS_DIM if family == "encoder" else 16
    x = torch.randn(5, in_dim)
    torch.manual_seed(0)  # (a stochastic policy samples: the same draws for both calls)
    td = tdm(TensorDict({spec.in_keys[0]: x}, batch_size=[5]))
    torch.manual_seed(0)
    direct = module(x)
    if family == "critic":  # the TensorDict boundary is batch-first: [N, B, 1] -> [B, N, 1]
        direct = direct.transpose(0, 1)
    direct = direct if isinstance(direct, tuple) else (direct,)
    assert len(direct) == len(spec.out_keys)
    for key, value in zip(spec.out_keys, direct):
        assert torch.equal(td[key], value), key
    # the wrapper shares the module's parameters (no copy)
    assert {id(p) for p in tdm.parameters()} == {id(p) for p in module.parameters()}


def test_critic_in_a_batched_tensordict():
    spec, module = _build("critic", "ensemble")
    td = module.as_tensordict_module()(TensorDict({"zsa": torch.randn(5, 16)}, batch_size=[5]))
    assert td["q"].shape == (5, spec.num_members, 1)
    torch.testing.assert_close(td["q"][:, 1], module(td["zsa"])[1])


def test_custom_keys_from_the_spec():
    spec = POLICIES.spec("tanh")(hidden_dim=8, in_keys=["latent"], out_keys=["act", "pre"])
    tdm = POLICIES.get("tanh")(spec, 16, 2).as_tensordict_module()
    td = tdm(TensorDict({"latent": torch.randn(3, 16)}, batch_size=[3]))
    assert td["act"].shape == (3, 2) and td["pre"].shape == (3, 2)
    torch.testing.assert_close(td["act"], torch.tanh(td["pre"]))


def test_actor_module_matches_agent_act():
    agent = small_agent()
    actor = agent.actor_module()
    assert isinstance(actor, TensorDictSequential)
    assert list(actor.in_keys) == ["observation"]
    assert {"zs", "action", "pre_activation"} <= set(actor.out_keys)
    obs = torch.randn(6, OBS_DIM)
    td = actor(TensorDict({"observation": obs}, batch_size=[6]))
    torch.testing.assert_close(td["zs"], agent.encoder.zs(obs))
    expected = torch.stack([torch.as_tensor(agent.act(o.numpy(), explore=False)) for o in obs])
    torch.testing.assert_close(td["action"], expected)
    # it is a live view of the agent's networks: training the policy changes the actor
    with torch.no_grad():
        agent.policy.net.layers[-1].bias.add_(0.5)
    assert not torch.allclose(actor(TensorDict({"observation": obs}, batch_size=[6]))["action"], td["action"])


@pytest.fixture
def pendulum_env():
    pytest.importorskip("gymnasium")
    from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

    try:
        env = TransformedEnv(GymEnv("InvertedPendulum-v5"), DoubleToFloat())  # MuJoCo obs are float64
    except Exception as exc:  # pragma: no cover - missing MuJoCo
        pytest.skip(f"InvertedPendulum-v5 unavailable: {exc}")
    env.set_seed(0)
    yield env
    env.close()


def test_actor_drives_a_torchrl_rollout(pendulum_env):
    agent = small_agent()
    actor = agent.actor_module()
    with torch.no_grad():
        td = pendulum_env.rollout(20, policy=actor, break_when_any_done=False)
    assert td.batch_size == torch.Size([20])
    action = td["action"]
    assert action.shape == (20, ACTION_DIM) and action.dtype == torch.float32
    assert torch.isfinite(action).all() and (action.abs() <= 1).all()  # within the env's [-3, 3]
    assert td["zs"].shape == (20, 16)
    assert td["next", "observation"].shape == (20, OBS_DIM)
    assert torch.isfinite(td["next", "reward"]).all()
    # actions are exactly the actor's deterministic output on the observed states
    torch.testing.assert_close(action, agent.policy.act(agent.encoder.zs(td["observation"])))


def test_actor_works_in_a_collector(pendulum_env):
    try:
        from torchrl.collectors import Collector
    except ImportError:  # torchrl < 0.13
        from torchrl.collectors import SyncDataCollector as Collector
    agent = small_agent()
    collector = Collector(pendulum_env, agent.actor_module(), frames_per_batch=16, total_frames=16,
                          auto_register_policy_transforms=False)
    try:
        batches = list(collector)
    finally:
        collector.shutdown()
    assert len(batches) == 1
    batch = batches[0]
    assert batch.numel() == 16
    assert batch["action"].shape[-1] == ACTION_DIM and (batch["action"].abs() <= 1).all()
    assert torch.isfinite(batch["next", "observation"]).all()
    with torch.no_grad():
        expected = agent.policy.act(agent.encoder.zs(batch["observation"].reshape(-1, OBS_DIM)))
    torch.testing.assert_close(batch["action"].reshape(-1, ACTION_DIM), expected)
