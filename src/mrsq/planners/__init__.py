from mrsq.planners import policy  # noqa: F401  (registration)
from mrsq.planners.base import Planner, PlanningModel

__all__ = ["Planner", "PlanningModel"]
