from mrsq.agents import mrq, sac, td3, tdmpc2  # noqa: F401  (registration)
from mrsq.agents.base import Agent, AgentSpec
from mrsq.agents.mrq import MRQ, MRQSpec
from mrsq.agents.sac import SAC, SACSpec
from mrsq.agents.td3 import TD3, TD3Spec

__all__ = ["Agent", "AgentSpec", "MRQ", "MRQSpec", "SAC", "SACSpec", "TD3", "TD3Spec"]
