"""Import every built-in component family so their registrations run, then plug-ins."""

from mrsq import agents, critics, encoders, envs, planners, policies, testing  # noqa: F401
from mrsq.registry import load_entry_points

load_entry_points()
