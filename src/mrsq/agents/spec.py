"""Spec sections shared by agents: losses, optimisers, replay, training run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mrsq.registry import AGGREGATORS
from mrsq.specs import STRICT, component, no_bool_for_numbers

# numpy and dm_control seed with 32-bit integers; the evaluation env uses seed + 100
MAX_SEED = 2**32 - 1 - 100


class Section(BaseModel):
    model_config = ConfigDict(**STRICT)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info):
        return no_bool_for_numbers(cls, value, info)


class LossWeights(Section):
    """Encoder-loss weights (MR.Q: 1, 0.1, 0.1; MRS.Q: 20, 0.1, 1) and the policy penalty."""

    dynamics: float = Field(1.0, ge=0)
    reward: float = Field(0.1, ge=0)
    termination: float = Field(0.1, ge=0)
    pre_activation: float = Field(1e-5, ge=0, description="weight of mean(pre_tanh^2) in the policy loss")


class OptimSpec(Section):
    """AdamW for every network (fused kernels on CPU and GPU)."""

    encoder_lr: float = Field(1e-4, gt=0)
    critic_lr: float = Field(3e-4, gt=0)
    policy_lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    critic_grad_clip: float = Field(20.0, gt=0, description="max grad norm of the critic ensemble")
    fused: bool = True


class ReplaySpec(Section):
    """LAP: prioritized by max-over-critics TD error, clamped at min_priority, raised to alpha."""

    capacity: int = Field(1_000_000, ge=1)
    prioritized: bool = True
    alpha: float = Field(0.4, ge=0)
    min_priority: float = Field(1.0, gt=0)


class AggregatorChoice(Section):
    """Which aggregator each consumer of the critic ensemble uses."""

    target: component(AGGREGATORS) = Field(default_factory=lambda: {"type": "min"}, validate_default=True)
    policy: component(AGGREGATORS) = Field(default_factory=lambda: {"type": "mean"}, validate_default=True)
    planner: component(AGGREGATORS) = Field(default_factory=lambda: {"type": "min"}, validate_default=True)


class TwoHotSpec(Section):
    """Reward bins: evenly spaced in symlog space in [lower, upper], then symexp'd."""

    lower: float = -10.0
    upper: float = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> "TwoHotSpec":
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


GYM_STEPS = 1_000_000  # MR.Q's Gym MuJoCo protocol (algorithm facts), also TD3's and SAC's
DMC_STEPS = 500_000  # MR.Q's DMC protocol: 1M frames at action repeat 2 (also used for every other env)


class TrainSpec(Section):
    """The run: environment, seed, length, evaluation and logging cadence."""

    @model_validator(mode="after")
    def _protocol_length(self):
        # A length never given follows the env's protocol. Resolved after validation and again on
        # every assignment (validate_assignment), so `spec.train.env = "gym:..."` moves it too;
        # written to __dict__, so `steps` stays out of the fields set: a partial `train:` section
        # merged with a default (specs.Spec._partial_components) re-resolves it. spec.yaml holds
        # the number (model_dump writes every field).
        if "steps" not in self.model_fields_set:
            self.__dict__["steps"] = GYM_STEPS if self.env.startswith("gym:") else DMC_STEPS
        return self

    env: str = Field("dmc:cartpole-swingup", description="<prefix>:<id>, e.g. dmc:cheetah-run, gym:Hopper-v5")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int = Field(500_000, ge=1, description="environment (agent) steps; unset: MR.Q's protocol for "
                                                 "train.env (gym: 1M; else 500k: DMC's 1M frames at action "
                                                 "repeat 2)")
    eval_every: int = Field(5_000, ge=1)
    eval_episodes: int = Field(10, ge=1)
    log_every: int = Field(1_000, ge=1, description="train.csv row every this many steps")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's choice)")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    checkpoint_minutes: float = Field(10.0, ge=0, description="also checkpoint when this many minutes passed "
                                      "since the last one (bounds the work a kill loses; 0: off)")
    loggers: list[Literal["csv", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["csv"],
        description="where train.csv / eval.csv rows also go (csv is always written): tensorboard (RUN/tensorboard), "
                    "wandb (offline unless WANDB_MODE or an API key says otherwise); each an optional extra")
    wandb_project: str = Field("mrsq", min_length=1, description="the W&B project of the wandb logger")
    video_every: int = Field(0, ge=0, description="record one deterministic episode as RUN/videos/step_<k>.mp4 "
                                                  "every this many evaluations (0: never; needs a renderer: "
                                                  "libosmesa6, or MUJOCO_GL=egl on a GPU machine)")
    video_size: int = Field(256, ge=16, le=2048, description="video frame width and height in pixels (even)")
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every this many steps "
                                         "(checkpoints are always written at each evaluation)")
