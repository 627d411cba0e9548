"""Kernel launches per training step, by part: what CUDA graphs on the losses save, what is left.

    python benchmarks/launch_count.py [--preset mrsq] [--env dmc:cheetah-run]

Counts the aten operations one steady-state MR.Q update dispatches in eager mode (on a GPU each
is at least one kernel launch), split into the parts of ``MRQ.update``: the replay draw, the
host-to-device batch, each loss's forward + backward, gradient clipping, each optimiser step,
the priority update; and the same for one planning action. With the losses (and the search)
as CUDA graphs, each loss's forward and backward become two graph replays: the table gives
launches per env step eager and with graphs, so the part a CUDA-graph optimiser step could still
remove is measured rather than guessed. Runs on any machine (the counts do not depend on it).
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.envs import make_env
from mrsq.envs.base import fill_with_random_actions
from mrsq.replay import LAPReplay
from mrsq.runtime import Runtime
from mrsq.training.loop import build_agent


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket).split(".")[-1]] += 1
        return func(*args, **(kwargs or {}))


def count(fn) -> tuple[int, Counter]:
    with Count() as c:
        fn()
    return sum(c.ops.values()), c.ops


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="mrsq")
    p.add_argument("--env", default="dmc:cheetah-run")
    args = p.parse_args(argv)
    spec = specs.load(args.preset, [f"train.env={args.env}", "train.device=cpu"])
    env = make_env(args.env, 0)
    agent = build_agent(spec, env, torch.device("cpu"), Runtime(compile=False, device_name="count"))
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=3_000, horizon=agent.replay_horizon, seed=0)
    obs = fill_with_random_actions(env, replay, 2_000)
    agent.update(replay)  # the burst and target copy; what follows is a steady-state step
    s = agent.hp
    parts: dict[str, int] = {}
    batch = None

    def draw():
        nonlocal batch
        batch = replay.sample(s.batch_size, horizon=s.value_horizon)

    parts["replay draw + gather"], _ = count(draw)
    noise = agent.target_noise(s.batch_size)
    from mrsq.critics.aggregators import draw_members
    members = draw_members(agent.target_aggregate, agent.num_members, agent.device)
    out = {}

    def critic_fwd():
        out["c"] = agent.critic_loss_terms(batch.obs[:, 0], batch.action[:, 0], batch.reward, batch.terminated,
                                           batch.next_obs[:, -1], noise, members)

    parts["critic loss forward"], _ = count(critic_fwd)
    agent.critic_optim.zero_grad(set_to_none=True)
    parts["critic loss backward"], _ = count(lambda: out["c"][0].backward())
    parts["grad clip (foreach)"], _ = count(lambda: torch.nn.utils.clip_grad_norm_(
        agent.critic.parameters(), s.critic_grad_clip, foreach=True))
    parts["critic AdamW step (fused)"], _ = count(agent.critic_optim.step)
    q, target = out["c"][1].detach(), out["c"][2]
    parts["td error + priority update"], _ = count(lambda: replay.update_priority(batch.indices,
                                                                                  agent.critic.td_error(q, target)))
    zs = out["c"][3].detach()
    from mrsq.agents.base import frozen

    def policy_fwd():
        with frozen(agent.encoder, agent.critic):
            out["p"] = agent.policy_loss_terms(zs, agent._policy_members())

    parts["policy loss forward"], _ = count(policy_fwd)
    agent.policy_optim.zero_grad(set_to_none=True)
    parts["policy loss backward"], _ = count(lambda: out["p"][0].backward())
    parts["policy AdamW step (fused)"], _ = count(agent.policy_optim.step)
    parts["metrics (detach, dict)"], _ = count(lambda: [out["c"][0].detach(), q.mean(), out["p"][0].detach()])
    parts["plan one action (eager)"], _ = count(lambda: agent.act(obs, explore=True))
    graphed = {k for k in parts if "loss forward" in k or "loss backward" in k}
    eager_total = sum(v for k, v in parts.items() if k != "plan one action (eager)")
    graph_total = sum(1 if k in graphed else v for k, v in parts.items() if k != "plan one action (eager)")
    print(f"launches (aten ops) per steady-state update of {args.preset} on {args.env}:\n")
    print("| part | eager | with CUDA-graph losses |\n|---|---:|---:|")
    for k, v in parts.items():
        if k == "plan one action (eager)":
            continue
        print(f"| {k} | {v} | {1 if k in graphed else v} |")
    print(f"| **update total** | **{eager_total}** | **{graph_total}** |")
    print(f"| plan one action | {parts['plan one action (eager)']} | 1 graph replay + ~8 (input copies, output clones) |")


if __name__ == "__main__":
    main()
