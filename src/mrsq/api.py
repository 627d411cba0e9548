"""The Python API: what ``mrsq train`` and ``mrsq eval`` do, from a script or a notebook.

>>> exp = Experiment("mrq_small", env="gym:InvertedPendulum-v5", steps=2000, out="runs/ip")
>>> exp.train(callback=lambda e: e["kind"] != "eval" or e["return_mean"] < 900)  # stop early at 900
>>> exp.evaluate(episodes=5).return_mean
>>> exp.save("ip.pt"); Experiment.load("ip.pt").act(obs)

An :class:`Experiment` is one spec (a preset or YAML file plus overrides, validated as the CLI
validates them) on one environment, with its run folder: the same ``spec.yaml``, CSVs and
checkpoints as ``mrsq train``, so ``mrsq plot``/``compare``/``eval`` and ``--resume`` work on it.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from mrsq import registry, specs
from mrsq.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from mrsq.training.loop import Evaluation, RunResult, Trainer, evaluate

__all__ = ["Experiment", "PlanningActor"]


def _override_list(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """``{"critic.num_members": 5}`` or ``["critic.num_members=5"]`` -> ``["critic.num_members=5"]``."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        import yaml

        # YAML flow text, so a value reads back exactly as given (lists, bools, floats)
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return [str(item) for item in overrides]


def _temporary_run_folder() -> Path:
    """A fresh path under the temporary directory, not created: the run folder appears only if
    training writes to it (loading a saved agent to evaluate it leaves nothing behind)."""
    return Path(tempfile.gettempdir()) / f"mrsq-{uuid.uuid4().hex[:12]}"


class Experiment:
    """Build an agent from a preset or YAML spec with overrides, train it, evaluate it, save it.

    Args:
        source: a preset name (``mrsq list preset``) or a YAML spec path.
        env, seed, steps: shortcuts for ``train.env``, ``train.seed``, ``train.steps``.
        overrides: ``{"critic.num_members": 5}`` or ``["critic.num_members=5"]``, as ``--set``.
        out: the run folder (default: ``<temp dir>/mrsq-<random>``, e.g. /tmp/mrsq-3f9a..., created only
            when :meth:`train` first writes to it; a full run there is ~10 MB per 100k steps of
            replay: give ``out=`` to keep runs where you want them).
        imports: modules that register your own components (as ``--import``).
        progress: show progress bars.
    """

    def __init__(self, source: str | Path = "mrsq_small", env: str | None = None, *, seed: int | None = None,
                 steps: int | None = None, overrides: Mapping[str, Any] | Iterable[str] | None = None,
                 out: str | Path | None = None, imports: Iterable[str] = (), progress: bool = True,
                 _trainer: Trainer | None = None) -> None:
        registry.import_modules(imports)
        if _trainer is None:
            items = _override_list(overrides)
            items += [f"train.{k}={v}" for k, v in (("env", env), ("seed", seed), ("steps", steps)) if v is not None]
            spec = specs.load(source, items)
            out = Path(out) if out is not None else _temporary_run_folder()
            _trainer = Trainer(spec, out, progress=progress, preset=Path(str(source)).stem, imports=list(imports))
        self.trainer = _trainer

    # ------------------------------------------------------------------------------ what it holds
    @property
    def spec(self):
        """The fully resolved, validated spec (``mrsq show``)."""
        return self.trainer.spec

    @property
    def agent(self):
        """The :class:`mrsq.agents.Agent` (an ``nn.Module``): its networks, ``act``, ``update``."""
        return self.trainer.agent

    @property
    def out(self) -> Path:
        """The run folder."""
        return self.trainer.out

    # ------------------------------------------------------------------------------ verbs
    def train(self, callback: Callable[[dict], Any] | None = None) -> RunResult:
        """Train to ``train.steps``, writing the run folder. ``callback(event)`` gets every
        train.csv row (``event["kind"] == "train"``: step, losses, ...) and every evaluation
        (``"eval"``: step, return_mean, value error, ...); returning ``False`` stops the run
        with a final checkpoint (resume it with :meth:`load` on the folder, or ``mrsq train
        --resume``). A second call continues where the first stopped."""
        if self.trainer.state.step > 0 or (self.out / CHECKPOINT).exists():
            self.trainer = Trainer.resume(self.out, progress=self.trainer.progress)
        return self.trainer.run(callback=callback)

    def evaluate(self, episodes: int = 10, env: str | None = None, seed: int | None = None) -> Evaluation:
        """Deterministic episodes (no exploration): return mean/std and the value-error and
        divergence diagnostics. ``env`` must have the same observation and action sizes."""
        from mrsq.envs import make_env

        if episodes < 1:
            raise ValueError(f"episodes={episodes}: evaluate at least one episode")
        t = self.spec.train
        with make_env(env or t.env, t.seed + 100 if seed is None else seed) as eval_env:
            if (eval_env.obs_dim, eval_env.action_dim) != (self.agent.obs_dim, self.agent.action_dim):
                raise ValueError(f"{env}: observations of {eval_env.obs_dim} and actions of {eval_env.action_dim}; "
                                 f"the agent takes {self.agent.obs_dim} and {self.agent.action_dim}")
            return evaluate(self.agent, eval_env, episodes)

    def act(self, obs: np.ndarray, explore: bool = False, first: bool = False) -> np.ndarray:
        """One observation ``[obs_dim]`` -> one action in ``[-1, 1]`` through the agent's planner
        (``first=True`` at an episode's first step resets the planner's warm start)."""
        if first:
            self.agent.planner.reset()
        return self.agent.act(obs, explore=explore, first=first)

    def save(self, path: str | Path) -> Path:
        """Write the agent and its spec to one file (``mrsq eval PATH`` and :meth:`load` read it;
        the run folder's own checkpoints are what resumes training)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, spec_yaml=self.trainer.spec_yaml, agent_state=self.agent.training_state(),
                        step=self.trainer.state.step,
                        extra={"obs_dim": self.agent.obs_dim, "action_dim": self.agent.action_dim})
        return path

    @classmethod
    def load(cls, path: str | Path, imports: Iterable[str] = (), progress: bool = True) -> "Experiment":
        """From a file written by :meth:`save` (or any checkpoint), or from a run folder, which
        resumes exactly where it stopped (:meth:`train` continues it)."""
        registry.import_modules(imports)
        path = Path(path)
        if path.is_dir():
            return cls(_trainer=Trainer.resume(path, progress=progress))
        payload = load_checkpoint(path)
        spec = specs.from_yaml(payload["spec"], where=f"{path} (spec)")
        exp = cls(_trainer=Trainer(spec, _temporary_run_folder(), progress=progress))  # nothing on disk until train()
        exp.agent.load_training_state(payload["agent"])
        exp.trainer.state.step = int(payload["step"])
        return exp

    # ------------------------------------------------------------------------------ TorchRL
    def actor(self, planning: bool = False):
        """A TensorDict module ``"observation" -> "action"`` for TorchRL collectors and envs.

        ``planning=False``: the agent's own ``actor_module()`` (MR.Q: encoder -> policy), batched,
        differentiable, actions in ``[-1, 1]``, **no search and no exploration noise**.
        ``planning=True``: :class:`PlanningActor`, the action the agent actually takes (its
        planner: MPPI for MRS.Q), one search per observation, no gradients."""
        from tensordict.nn import TensorDictModule

        if planning:
            return TensorDictModule(PlanningActor(self.agent), in_keys=["observation"], out_keys=["action"])
        actor = getattr(self.agent, "actor_module", None)
        if actor is None:
            raise NotImplementedError(f"agent {self.spec.type!r} has no actor_module(); use actor(planning=True)")
        return actor()


class PlanningActor(nn.Module):
    """``observation [..., obs_dim] -> action [..., action_dim]`` through the agent's planner,
    one search per observation (a planner searches from one state), deterministic (evaluation
    mode), in ``[-1, 1]``. The planner's warm start carries over between calls, as in an episode."""

    def __init__(self, agent) -> None:
        super().__init__()
        self.agent = agent

    @torch.no_grad()
    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        flat = observation.reshape(-1, observation.shape[-1]).detach().to(self.agent.device, torch.float32)
        actions = torch.stack([self.agent.act_on_device(o, explore=False) for o in flat])
        # on the observation's device, as a TorchRL actor's output is expected to be (no host
        # round trip when the agent is there too)
        return actions.to(observation.device).reshape(*observation.shape[:-1], -1)
