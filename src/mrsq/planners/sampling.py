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

from typing import Literal

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
    """Warm start: ``mean [..., H, A]`` advanced by one step, the last step set to 0 -> same shape."""
    return torch.cat([mean[..., 1:, :], torch.zeros_like(mean[..., :1, :])], -2)


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
    """Fields of the iterative refit planners (MPPI, CEM, iCEM); defaults are TD-MPC2's."""

    iterations: int = Field(6, ge=1, description="sample-score-refit rounds per action")
    extra_iterations_large_action: int = Field(
        2, ge=0, description="added to iterations when action_dim >= 20 (as TD-MPC2)")
    num_elites: int = Field(64, ge=1, description="best sequences the refit uses")
    min_std: float = Field(0.05, gt=0, description="lower clamp of the sampling std")
    max_std: float = Field(2.0, gt=0, description="upper clamp, and the std every search starts from")
    center: Literal["mean", "policy"] = Field(
        "mean", description="what candidates are drawn around. mean: action sequences from N(mean, std), the mean "
                            "warm-started from the previous action's search (TD-MPC2, MRS.Q); policy: policy-guided, "
                            "closed-loop residuals a_t = clamp(pi(z_t) + e_t), e ~ N(mean, std), each candidate "
                            "following the policy's feedback along its own latent rollout")
    knots: int = Field(0, ge=0, description="0: one sampled value per step; K >= 1: K knots evenly spaced over the "
                                            "horizon, linearly interpolated between (one knot: held constant), so "
                                            "the search is over K x A numbers instead of H x A (the spline "
                                            "parameterisation of MJPC's sampling planners, Howell et al. 2022)")
    rescore_policy_trajectories: bool | Literal["auto"] = Field(
        "auto", description="score the policy's trajectories again at every iteration, with the other sequences "
                            "in one call (TD-MPC2); auto: when the model's values are random (stochastic_value: a "
                            "sampled terminal action, members drawn per call), where the first score alone "
                            "would be one lucky or unlucky draw; otherwise a second score equals the first")

    @model_validator(mode="after")
    def _check_elites(self):
        if self.num_elites > self.num_samples:
            raise ValueError(f"num_elites ({self.num_elites}) must be at most num_samples ({self.num_samples})")
        if self.min_std > self.max_std:
            raise ValueError(f"min_std ({self.min_std}) must be at most max_std ({self.max_std})")
        if self.knots > self.horizon:
            raise ValueError(f"knots ({self.knots}) must be at most horizon ({self.horizon}) (0: one per step)")
        return self


def knot_matrix(horizon: int, knots: int) -> torch.Tensor:
    """``W [H, K]``: the action at step t is ``sum_k W[t, k] * knot_k`` (hat functions over knots
    evenly spaced on [0, H - 1]; rows sum to 1). ``knots`` 0 or H: the identity."""
    if knots in (0, horizon):
        return torch.eye(horizon)
    if knots == 1:
        return torch.ones(horizon, 1)
    spacing = (horizon - 1) / (knots - 1)
    t = torch.arange(horizon, dtype=torch.float64)[:, None]
    positions = torch.arange(knots, dtype=torch.float64)[None] * spacing
    return (1 - (t - positions).abs() / spacing).clamp(min=0).float()


def shift_matrix(horizon: int, knots: int) -> torch.Tensor:
    """``S [K, K]``: the warm start in knot space, the least-squares knots of the previous plan
    advanced by one step (its last step 0). With one knot per step it is :func:`shift_mean`'s
    shift exactly."""
    w = knot_matrix(horizon, knots).double()
    step = torch.diag(torch.ones(horizon - 1, dtype=torch.float64), 1)  # (step @ x)[t] = x[t + 1], last row 0
    return (torch.linalg.pinv(w) @ step @ w).float()


LARGE_ACTION_DIM = 20  # TD-MPC2 adds iterations from this action dimension on


# ------------------------------------------------------------------------------------ planner
class IterativeSamplingPlanner(Planner):
    """Sample around a Gaussian, score, keep elites, refit; warm-started across steps.

    The Gaussian is over ``params [L, A]``: the action sequence itself (``center: mean``, ``L =
    H``), its knots (``knots: K``, ``L = K``), or residuals on the policy's closed-loop actions
    (``center: policy``). Subclasses choose the elite weights (:meth:`elite_weights`), the
    executed action (:meth:`choose`) and the sampling noise (:meth:`noise`); one whose
    ``choose`` reads ``explore`` sets ``USES_EXPLORE = True``. State: buffer ``mean [L, A]``, the
    last refit mean (not in checkpoints: it is per-episode state, cleared by :meth:`reset`).
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
        self.policy_centred = spec.center == "policy"
        self.rescore = spec.rescore_policy_trajectories
        self.num_params = spec.knots or spec.horizon  # L
        self.interpolated = self.num_params != spec.horizon  # (one knot over one step is the identity)
        self.register_buffer("mean", torch.zeros(self.num_params, action_dim), persistent=False)
        if self.interpolated:
            self.register_buffer("knot_weights", knot_matrix(spec.horizon, spec.knots), persistent=False)
            self.register_buffer("knot_pinv", torch.linalg.pinv(self.knot_weights.double()).float(), persistent=False)
            self.register_buffer("knot_shift", shift_matrix(spec.horizon, spec.knots), persistent=False)
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

    # -------------------------------------------------------------- the search distribution
    def initial_mean(self, first: bool = False) -> torch.Tensor:
        """Where the search starts: zeros if ``first``, else the stored mean shifted by one step
        (in knot space: the least-squares knots of the shifted plan) -> ``[L, A]``."""
        return torch.zeros_like(self.mean) if first else self.shift(self.mean)

    def shift(self, params: torch.Tensor) -> torch.Tensor:
        """``params [..., L, A]`` advanced by one step (the last step 0; in knot space the
        least-squares knots of the shifted plan): the warm start of the mean and of iCEM's elites."""
        return self.knot_shift @ params if self.interpolated else shift_mean(params)

    def noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """Unit-variance sampling noise ``[n, L, A]`` (white here; iCEM colours it in time)."""
        return torch.randn(n, *like.shape, device=like.device, dtype=like.dtype)

    def sample(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` parameter sets from ``N(mean, std)`` -> ``[n, L, A]``: clamped to [-1, 1] when
        they are actions or knots (a knot interpolation then stays in the box); residuals on the
        policy are not (the actions they make are)."""
        params = mean + std * self.noise(n, mean)
        return params if self.policy_centred else params.clamp_(-1, 1)

    def to_steps(self, params: torch.Tensor) -> torch.Tensor:
        """``params [N, L, A]`` -> per-step values ``[N, H, A]`` (the knot interpolation)."""
        return self.knot_weights @ params if self.interpolated else params

    def to_params(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-step values ``[N, H, A]`` -> the params that fit them best ``[N, L, A]``."""
        return self.knot_pinv @ steps if self.interpolated else steps

    def evaluate(self, model: PlanningModel, z0: torch.Tensor, params: torch.Tensor):
        """Candidates from ``params [N, L, A]``: ``(actions [N, H, A], values [N, 1])``."""
        steps = self.to_steps(params)
        if self.policy_centred:  # closed loop: a_t = clamp(pi(z_t) + e_t) along each rollout
            return self._policy_rollout(model, z0, self.horizon, steps)
        return steps, self._score(model, z0, steps)

    def score_candidates(self, model: PlanningModel, z0: torch.Tensor, params: torch.Tensor, policy, rescore: bool):
        """Score sampled ``params [N, L, A]`` with the policy's plans ``policy = (actions [P, H, A],
        params [P, L, A], values [P, 1])`` (or None) in front -> ``(actions, values, params)`` over
        all ``P + N``. Re-scored policy plans share one call with the others when the candidates are
        action sequences, so one draw of a random value ranks them all (TD-MPC2)."""
        if policy is None:
            return (*self.evaluate(model, z0, params), params)
        pi_actions, pi_params, pi_values = policy
        if rescore and not self.policy_centred:
            actions = torch.cat([pi_actions, self.to_steps(params)])
            values = self._score(model, z0, actions)
        else:
            actions, values = self.evaluate(model, z0, params)
            fresh = self._score(model, z0, pi_actions) if rescore else pi_values
            actions, values = torch.cat([pi_actions, actions]), torch.cat([fresh, values])
        return actions, values, torch.cat([pi_params, params])

    def rescores(self, model: PlanningModel) -> bool:
        """Whether the policy's trajectories are scored again at every iteration."""
        if self.rescore == "auto":
            return bool(getattr(model, "stochastic_value", False))
        return bool(self.rescore)

    def policy_candidates(self, model: PlanningModel, z0: torch.Tensor):
        """The policy's own plans: ``(actions [P, H, A], params [P, L, A], values [P, 1],
        reference [A] or None)``; the reference is ``pi(z0)`` when the plans show it (a
        deterministic policy without noise)."""
        p, h = self.num_policy, self.horizon
        noise = policy_noise(self.policy_noise_std, p, h, self.action_dim, z0.device)
        # a stochastic policy (TD-MPC2's) gives p different rollouts; a deterministic one without
        # noise gives one rollout that stands for all p
        stochastic = noise is None and getattr(model, "stochastic_policy", False)
        actions, values = self._policy_rollout(model, z0.expand(p, -1) if stochastic else z0, h, noise)
        reference = actions[0, 0] if noise is None and not stochastic else None
        actions, values = actions.expand(p, -1, -1), values.expand(p, -1)
        if self.policy_centred:  # as residuals on the policy: zero, or the noise they carry
            params = actions.new_zeros(p, self.num_params, self.action_dim) if noise is None else self.to_params(noise)
        else:
            params = self.to_params(actions)
        return actions, params, values, reference

    def elite_weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        """``elite_values [K]`` -> refit weights ``[K]`` summing to 1."""
        raise NotImplementedError

    def choose(self, elite_actions: torch.Tensor, elite_values: torch.Tensor, weights: torch.Tensor,
               mean: torch.Tensor, explore: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The executed sequence ``[H, A]`` (its first action is taken) and its score ``[]`` (None:
        a sequence that was not scored, scored then) from the final ``elite_actions [K, H, A]``,
        ``elite_values [K]``, ``weights [K]`` and refit ``mean [L, A]``."""
        raise NotImplementedError

    @torch.no_grad()
    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        mark_step(getattr(self, "_runtime", None))
        mean0 = self.initial_mean(first)
        # `explore` reaches the (compiled) search only for a planner whose choice uses it:
        # dynamo specialises on a Python bool, so passing it would compile every search twice
        args = (explore,) if self.USES_EXPLORE else ()
        out = self._search(model, obs.reshape(1, -1), mean0, *self.search_inputs(), *args)
        action, mean, std, sequence, policy_elites, reference, value = out[:7]
        # outputs are fresh tensors (a CUDA-graph search clones them: mrsq.compile.Compiled)
        self.end_search(out[7:])
        self.mean.copy_(mean)
        self.last_std = std  # [L, A]: the final refit std (TD-MPC2 explores with std[0])
        self.last_sequence = sequence  # [H, A]: the executed elite's whole sequence
        self.last_policy_elites = policy_elites  # []: final elites that are policy rollouts
        self.last_reference = reference  # [A]: the deterministic pi(z0) (the divergence metric)
        self.last_value = value  # []: the search's own estimate of the executed sequence
        return action

    def search_inputs(self) -> tuple:
        """State a subclass's :meth:`search` takes after ``mean`` (iCEM: its carried elites)."""
        return ()

    def end_search(self, outputs: tuple) -> None:
        """Store what :meth:`search` returned after its seven outputs (iCEM: the elites to carry)."""

    def evaluations_per_action(self) -> int:
        """Sequences scored per action: the policy's once (re-scored: each iteration), then
        ``num_samples - P`` per iteration (what the N-chain diagnostic counts)."""
        return self.num_policy + self.iterations * (self.num_samples - self.num_policy)

    def search(self, model: PlanningModel, obs: torch.Tensor, mean: torch.Tensor,
               explore: bool = False) -> tuple[torch.Tensor, ...]:
        """One action's search from ``obs [1, obs]`` and the start ``mean [L, A]``.

        Returns ``(action [A], final mean [L, A], final std [L, A], executed elite's sequence
        [H, A], number of the final elites that are policy rollouts [] (a diagnostic),
        reference action [A], the search's score of the executed sequence [])``; the reference is the deterministic policy's ``pi(z0)`` (the
        policy-vs-search divergence compares with it, so acting costs no second encode). Pure
        tensor code with no host synchronisation: compiled (and CUDA-graph captured) as a whole
        on GPUs. ``explore`` is passed only when ``USES_EXPLORE``."""
        n, p, k = self.num_samples, self.num_policy, self.num_elites
        z0 = model.encode(obs)  # [1, Z]
        std = torch.full_like(mean, self.max_std)
        rescore = p > 0 and self.rescores(model)
        policy = reference = None
        if p > 0:
            *policy, reference = self.policy_candidates(model, z0)
        for _ in range(self.iterations):
            actions, values, params = self.score_candidates(model, z0, self.sample(mean, std, n - p), policy, rescore)
            elite_values, idx = values[:, 0].topk(k)
            elite_actions = actions.index_select(0, idx)  # [K, H, A]
            weights = self.elite_weights(elite_values)
            mean, std = weighted_stats(params.index_select(0, idx), weights)
            std = std.clamp(self.min_std, self.max_std)
        chosen, value = self.choose(elite_actions, elite_values, weights, mean, explore)
        if value is None:
            value = self._score(model, z0, chosen[None])[0, 0]
        if reference is None:
            reference = reference_action(model, z0)
        return chosen[0], mean, std, chosen, (idx < p).sum(), reference, value

