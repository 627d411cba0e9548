"""Replay buffers."""

from mrsq.replay.lap import LAPReplay, ReplayBatch

__all__ = ["LAPReplay", "ReplayBatch"]
