"""How much of MPPI's final elite set the policy's own rollouts take, with and without noise on
them (issue 7, A5). Prints figures; not a test.

    python benchmarks/policy_noise.py RUN/checkpoint.pt [--states 200] [--stds 0,0.1]

Loads a trained MRS.Q-style checkpoint, collects states by running its agent on its env, then
plans from every state once per noise std (same states, same seeds per std) and reports the mean
number of final elites that are policy rollouts (of num_elites) and the mean squared gap between
the planned action and pi(s).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mrsq import specs
from mrsq.envs import make_env
from mrsq.registry import PLANNERS
from mrsq.training.checkpoint import load_checkpoint
from mrsq.training.loop import build_agent


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--states", type=int, default=200)
    ap.add_argument("--stds", default="0,0.1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    payload = load_checkpoint(args.checkpoint)
    spec = specs.from_yaml(payload["spec"])
    spec = spec.model_copy(update={"compile": "off", "precision": "fp32"})
    env = make_env(spec.train.env, 7)
    agent = build_agent(spec, env, torch.device("cpu"))
    agent.load_training_state(payload["agent"])
    states, obs, first = [], env.reset(), True
    while len(states) < args.states:
        states.append(obs)
        obs, _, term, trunc = env.step(agent.act(obs, explore=False, first=first))
        first = False
        if term or trunc:
            obs, first = env.reset(), True
    view = agent.acting_view()
    print(f"checkpoint step {payload['step']}, {spec.train.env}, {len(states)} states, planner "
          f"{spec.planner.type} {spec.planner.num_samples} samples / {spec.planner.num_elites} elites / "
          f"{spec.planner.num_policy_trajectories} policy rollouts")
    for std in [float(s) for s in args.stds.split(",")]:
        pspec = spec.planner.model_copy(update={"policy_noise_std": std})
        planner = PLANNERS.get(pspec.type)(pspec, env.action_dim)
        torch.manual_seed(0)
        elites, gaps = [], []
        for s in states:
            o = torch.as_tensor(s)
            a = planner.plan(view, o, first=True, explore=False)
            pi = view.policy(view.encode(o.reshape(1, -1)))[0]
            elites.append(int(planner.last_policy_elites))
            gaps.append(float((a - pi).square().mean()))
        print(f"policy_noise_std {std:4.2f}: policy rollouts among the final elites {np.mean(elites):5.1f} "
              f"of {pspec.num_elites} (median {np.median(elites):.0f}); (a - pi(s))^2 {np.mean(gaps):.4f}")


if __name__ == "__main__":
    main()
