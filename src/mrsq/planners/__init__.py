from mrsq.planners import cem, icem, mppi, policy, random_shooting  # noqa: F401  (registration)
from mrsq.planners.base import Planner, PlanningModel
from mrsq.planners.sampling import policy_rollout, trajectory_value

__all__ = ["Planner", "PlanningModel", "policy_rollout", "trajectory_value"]
