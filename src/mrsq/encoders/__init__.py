from mrsq.encoders import elu, pixels, sem  # noqa: F401  (registration)
from mrsq.encoders.base import EncoderSpec, LatentModel

__all__ = ["EncoderSpec", "LatentModel"]
