from mrsq.policies import gaussian, tanh  # noqa: F401  (registration)
from mrsq.policies.gaussian import TanhGaussianPolicy, TanhGaussianPolicySpec
from mrsq.policies.tanh import TanhPolicy, TanhPolicySpec

__all__ = ["TanhGaussianPolicy", "TanhGaussianPolicySpec", "TanhPolicy", "TanhPolicySpec"]
