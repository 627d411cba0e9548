from mrsq.agents import mrq  # noqa: F401  (registration)
from mrsq.agents.mrq import MRQ, MRQSpec

__all__ = ["MRQ", "MRQSpec"]
