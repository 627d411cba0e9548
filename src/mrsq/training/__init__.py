from mrsq.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mrsq.training.loop import RunResult, Trainer, evaluate

__all__ = ["CheckpointError", "RunResult", "Trainer", "evaluate", "load_checkpoint", "save_checkpoint"]
