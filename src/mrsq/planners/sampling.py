"""Shared code of the sampling planners (MPPI, CEM, random shooting).

Everything here works on plain tensors through a :class:`~mrsq.planners.base.PlanningModel`.
Action sequences are laid out ``[N, H, A]`` (sequence, time step, action dimension); the latent
start ``z0 [1, Z]`` is encoded once per action and expanded, never recomputed.

The value of a sequence (TD-MPC2's ``_estimate_value``, with a soft survival weight)::

    V = sum_{t<H} gamma^t * alive_t * r(z_t, a_t) + gamma^H * alive_H * value(z_H, pi(z_H))

with ``(r_t, term_t, z_{t+1}) = model.step(z_t, a_t)``, ``alive_0 = 1`` and
``alive_{t+1} = alive_t * (1 - term_t)`` when ``model.episodic`` (otherwise ``alive = 1``).
``model.value`` already applies the planner's aggregator over the critic ensemble.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from mrsq.compile import Compiled, mark_step
from mrsq.planners.base import Planner, PlanningModel
from mrsq.specs import Spec


# ------------------------------------------------------------------------------------ values
def _rollout(model: PlanningModel, z0: torch.Tensor, horizon: int, actions: torch.Tensor | None,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unroll ``horizon`` steps from ``z0 [N, Z]`` and score the trajectory.

    ``actions [N, H, A]`` gives the actions; ``None`` takes ``a_t = model.policy(z_t)``, plus
    ``noise[:, t]`` clamped to [-1, 1] when ``noise [N, H, A]`` is given (closed loop: the noisy
    action moves the latent, and the next policy action reacts to it).
    Returns ``(actions [N, H, A], V [N, 1])`` (the actions taken, and their value as above).
    """
    z, ret = z0, z0.new_zeros(z0.shape[0], 1)
    alive, discount = 1.0, 1.0
    taken = []
    for t in range(horizon):
        if actions is not None:
            a = actions[:, t]
        elif noise is not None:
            a = (model.policy(z) + noise[:, t]).clamp(-1, 1)
        else:
            a = model.policy(z)
        reward, term, z = model.step(z, a)
        ret = ret + discount * alive * reward
        if model.episodic:
            alive = alive * (1 - term)
        discount = discount * model.discount
        taken.append(a)
    ret = ret + discount * alive * model.value(z, model.policy(z))
    # TD-MPC2 guards its planner the same way: a non-finite value (a diverged model) must never
    # win the elite selection; it becomes the lowest finite value instead.
    ret = torch.nan_to_num(ret, nan=-1e30, posinf=-1e30, neginf=-1e30)
    return torch.stack(taken, 1), ret


def trajectory_value(model: PlanningModel, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Value of each action sequence from one latent start.

    ``z0 [1, Z]`` (or ``[N, Z]``), ``actions [N, H, A]`` -> ``V [N, 1]`` (see the module doc).
    """
    n = actions.shape[0]
    return _rollout(model, z0.expand(n, -1), actions.shape[1], actions)[1]


def reference_action(model: PlanningModel, z0: torch.Tensor) -> torch.Tensor:
    """The deterministic policy action at ``z0 [1, Z]`` -> ``[A]`` (fp32): ``model.reference``
    if the model has one (a stochastic policy's mean), else ``model.policy``."""
    return getattr(model, "reference", model.policy)(z0)[0].float()


def policy_rollout(model: PlanningModel, z0: torch.Tensor, horizon: int,
                   noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's own ``horizon``-step plans from ``z0 [1, Z]``, scored like any sequence.

    Without ``noise`` returns ``(actions [1, H, A], V [1, 1])``: the policy is deterministic, so
    one rollout stands for all of a planner's policy trajectories. With ``noise [P, H, A]``
    returns ``P`` closed-loop rollouts ``a_t = clamp(pi(z_t) + noise_t)`` -> ``([P, H, A], [P, 1])``.
    The terminal value always uses the noiseless ``pi(z_H)``, like every other sequence.
    """
    if noise is not None:
        z0 = z0.expand(noise.shape[0], -1)
    return _rollout(model, z0, horizon, None, noise)


# ------------------------------------------------------------------------------------ helpers
def policy_noise(std: float, rollouts: int, horizon: int, action_dim: int, device, dtype=torch.float32):
    """Noise for ``rollouts`` noisy policy rollouts (``[P, H, A]`` of ``N(0, std^2)``), or
    ``None`` when ``std`` is 0 (one deterministic rollout then stands for all of them)."""
    if std <= 0:
        return None
    return std * torch.randn(rollouts, horizon, action_dim, device=device, dtype=dtype)


def shift_mean(mean: torch.Tensor) -> torch.Tensor:
    """Warm start: ``mean [H, A]`` advanced by one step, the last step set to 0 -> ``[H, A]``."""
    return torch.cat([mean[1:], torch.zeros_like(mean[:1])], 0)


def weighted_stats(actions: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std of ``actions [K, H, A]`` under ``weights [K]`` (summing to 1).

    Returns ``(mean [H, A], std [H, A])`` with ``std = sqrt(sum_k w_k (a_k - mean)^2)``.
    """
    w = weights.reshape(-1, 1, 1)
    mean = (w * actions).sum(0)
    std = (w * (actions - mean).square()).sum(0).sqrt()
    return mean, std


def draw_index(weights: torch.Tensor) -> torch.Tensor:
    """One index drawn with probabilities ``weights [K]`` (Gumbel-max; no host sync) -> ``[]``."""
    u = torch.rand_like(weights).clamp_(min=1e-20)
    return (weights.clamp(min=1e-30).log() - (-u.log()).log()).argmax()


# ------------------------------------------------------------------------------------ specs
class SampleCountSpec(Spec):
    """Fields every sampling planner has (``type`` is set by each subclass)."""

    horizon: int = Field(3, ge=1, description="planning horizon H (model steps per sequence)")
    num_samples: int = Field(512, ge=1, description="sequences scored per iteration, policy ones included")
    num_policy_trajectories: int = Field(24, ge=0, description="of num_samples, rollouts of the policy")
    policy_noise_std: float = Field(
        0.0, ge=0, description="std of Gaussian noise added to the policy's actions in its rollouts "
                               "(0: all policy rollouts are one identical plan)")

    @model_validator(mode="after")
    def _check_counts(self):
        if self.num_policy_trajectories >= self.num_samples:
            raise ValueError(f"num_policy_trajectories ({self.num_policy_trajectories}) must be smaller than "
                             f"num_samples ({self.num_samples}): at least one sequence must be sampled")
        return self


class IterativeSpec(SampleCountSpec):
    """Fields of the iterative refit planners (MPPI, CEM); defaults are TD-MPC2's."""

    iterations: int = Field(6, ge=1, description="sample-score-refit rounds per action")
    extra_iterations_large_action: int = Field(
        2, ge=0, description="added to iterations when action_dim >= 20 (as TD-MPC2)")
    num_elites: int = Field(64, ge=1, description="best sequences the refit uses")
    min_std: float = Field(0.05, gt=0, description="lower clamp of the sampling std")
    max_std: float = Field(2.0, gt=0, description="upper clamp, and the std every search starts from")

    @model_validator(mode="after")
    def _check_elites(self):
        if self.num_elites > self.num_samples:
            raise ValueError(f"num_elites ({self.num_elites}) must be at most num_samples ({self.num_samples})")
        if self.min_std > self.max_std:
            raise ValueError(f"min_std ({self.min_std}) must be at most max_std ({self.max_std})")
        return self


LARGE_ACTION_DIM = 20  # TD-MPC2 adds iterations from this action dimension on


# ------------------------------------------------------------------------------------ planner
class IterativeSamplingPlanner(Planner):
    """Sample around a Gaussian, score, keep elites, refit; warm-started across steps.

    Subclasses choose the elite weights (:meth:`elite_weights`) and the executed action
    (:meth:`choose`); one whose ``choose`` reads ``explore`` sets ``USES_EXPLORE = True``. State: buffer ``mean [H, A]``, the last refit mean (not in checkpoints:
    it is per-episode state, cleared by :meth:`reset`).
    """

    USES_EXPLORE = False

    def __init__(self, spec: IterativeSpec, action_dim: int) -> None:
        super().__init__()
        self.spec, self.action_dim = spec, action_dim
        extra = spec.extra_iterations_large_action if action_dim >= LARGE_ACTION_DIM else 0
        self.iterations = spec.iterations + extra
        # plain values for the hot loop (no pydantic reads inside plan)
        self.horizon, self.num_samples = spec.horizon, spec.num_samples
        self.num_policy, self.num_elites = spec.num_policy_trajectories, spec.num_elites
        self.min_std, self.max_std = spec.min_std, spec.max_std
        self.policy_noise_std = spec.policy_noise_std
        self.register_buffer("mean", torch.zeros(spec.horizon, action_dim), persistent=False)
        self._score, self._policy_rollout, self._search = trajectory_value, policy_rollout, self.search

    def set_runtime(self, runtime) -> None:
        """``compile_scope "scoring"`` (CPU): compile the trajectory scoring (fuses the networks'
        elementwise work; the loop around it is cheap). ``"search"`` (CUDA, or
        :func:`mrsq.runtime.cuda_branch` on a CPU): compile the whole search, as CUDA graphs
        where the runtime has them (one graph replay per action, no kernel launched from Python
        per iteration)."""
        self._runtime = runtime
        if runtime.compile_scope == "search":
            self._search = Compiled(self.search, runtime, f"{type(self).__name__} search", cuda_graphs=True)
        else:
            self._score = Compiled(trajectory_value, runtime, "planner scoring")
            self._policy_rollout = Compiled(policy_rollout, runtime, "planner policy rollout")

    def reset(self) -> None:
        self.mean.zero_()

    def initial_mean(self, first: bool = False) -> torch.Tensor:
        """Where the search starts: zeros if ``first``, else the stored mean shifted -> ``[H, A]``."""
        return torch.zeros_like(self.mean) if first else shift_mean(self.mean)

    def sample(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` sequences from ``N(mean, std)`` clamped to [-1, 1] -> ``[n, H, A]``."""
        return (mean + std * torch.randn(n, *mean.shape, device=mean.device, dtype=mean.dtype)).clamp_(-1, 1)

    def elite_weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        """``elite_values [K]`` -> refit weights ``[K]`` summing to 1."""
        raise NotImplementedError

    def choose(self, elite_actions: torch.Tensor, elite_values: torch.Tensor, weights: torch.Tensor,
               mean: torch.Tensor, explore: bool) -> torch.Tensor:
        """The executed sequence ``[H, A]`` (its first action is taken) from the final
        ``elite_actions [K, H, A]``, ``elite_values [K]``, ``weights [K]`` and refit ``mean [H, A]``."""
        raise NotImplementedError

    @torch.no_grad()
    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        mark_step(getattr(self, "_runtime", None))
        mean0 = self.initial_mean(first)
        # `explore` reaches the (compiled) search only for a planner whose choice uses it:
        # dynamo specialises on a Python bool, so passing it would compile every search twice
        args = (explore,) if self.USES_EXPLORE else ()
        action, mean, std, sequence, policy_elites, reference = self._search(model, obs.reshape(1, -1), mean0, *args)
        # outputs are fresh tensors (a CUDA-graph search clones them: mrsq.compile.Compiled)
        self.mean.copy_(mean)
        self.last_std = std  # [H, A]: the final refit std (TD-MPC2 explores with std[0])
        self.last_sequence = sequence  # [H, A]: the executed elite's whole sequence
        self.last_policy_elites = policy_elites  # []: final elites that are policy rollouts
        self.last_reference = reference  # [A]: the deterministic pi(z0) (the divergence metric)
        return action

    def search(self, model: PlanningModel, obs: torch.Tensor, mean: torch.Tensor,
               explore: bool = False) -> tuple[torch.Tensor, ...]:
        """One action's search from ``obs [1, obs]`` and the start ``mean [H, A]``.

        Returns ``(action [A], final mean [H, A], final std [H, A], executed elite's sequence
        [H, A], number of the final elites that are policy rollouts [] (a diagnostic),
        reference action [A])``; the reference is the deterministic policy's ``pi(z0)`` (the
        policy-vs-search divergence compares with it, so acting costs no second encode). Pure
        tensor code with no host synchronisation: compiled (and CUDA-graph captured) as a whole
        on GPUs. ``explore`` is passed only when ``USES_EXPLORE``."""
        n, p, k, h = self.num_samples, self.num_policy, self.num_elites, self.horizon
        z0 = model.encode(obs)  # [1, Z]
        std = torch.full_like(mean, self.max_std)
        actions = mean.new_empty(n, h, self.action_dim)  # rows [:p]: the policy's plan
        values = mean.new_empty(n, 1)
        if p > 0:
            noise = policy_noise(self.policy_noise_std, p, h, self.action_dim, mean.device, mean.dtype)
            # a stochastic policy (TD-MPC2's) gives p different rollouts; a deterministic one without
            # noise gives one rollout that stands for all p
            stochastic = noise is None and getattr(model, "stochastic_policy", False)
            pi_actions, pi_value = self._policy_rollout(model, z0.expand(p, -1) if stochastic else z0, h, noise)
            actions[:p] = pi_actions
            values[:p] = pi_value
        for _ in range(self.iterations):
            actions[p:] = self.sample(mean, std, n - p)
            values[p:] = self._score(model, z0, actions[p:])
            elite_values, idx = values[:, 0].topk(k)
            elite_actions = actions.index_select(0, idx)  # [K, H, A]
            weights = self.elite_weights(elite_values)
            mean, std = weighted_stats(elite_actions, weights)
            std = std.clamp(self.min_std, self.max_std)
        chosen = self.choose(elite_actions, elite_values, weights, mean, explore)
        if p > 0 and noise is None and not stochastic:
            reference = pi_actions[0, 0]  # the deterministic rollout's first action is pi(z0)
        else:
            reference = reference_action(model, z0)
        return chosen[0], mean, std, chosen, (idx < p).sum(), reference

