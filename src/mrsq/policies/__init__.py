from mrsq.policies import tanh  # noqa: F401  (registration)
from mrsq.policies.tanh import TanhPolicy, TanhPolicySpec

__all__ = ["TanhPolicy", "TanhPolicySpec"]
