"""Actor-critic parts shared by the agents: twin critics, Polyak averaging, n-step targets,
tanh-Gaussian and deterministic actors, exploration schedules and SAC's temperature."""

from __future__ import annotations

import abc
import contextlib
import math
from typing import Sequence

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crl.encoders import MLP


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source (parameters only)."""
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    if target_params:  # an nn.Identity encoder (state-based agents) has none
        torch._foreach_lerp_(target_params, source_params, tau)


def n_step_target(reward: Tensor, discount: Tensor, next_value: Tensor) -> Tensor:
    """r_t + ... + gamma^(m-1) r_{t+m-1} + gamma^m V(s_{t+m}).

    The replay sums the rewards and gives `discount` = gamma^m, zero when the episode terminated
    inside the window, so bootstrapping goes through truncations but never through terminals.
    """
    return reward + discount * next_value


class TwinQ(nn.Module):
    """Two independent Q(s, a) heads (clipped double Q-learning, Fujimoto et al. 2018)."""

    def __init__(self, in_dim: int, action_dim: int, hidden_dims: Sequence[int], **mlp_kwargs):
        super().__init__()
        self.q1 = MLP(in_dim + action_dim, hidden_dims, 1, **mlp_kwargs)
        self.q2 = MLP(in_dim + action_dim, hidden_dims, 1, **mlp_kwargs)

    def forward(self, features: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([features, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(u), u ~ N(mu(s), sigma(s)); log-std squashed into [log_std_min, log_std_max].

    The log-probability includes the change of variables for tanh,
    log pi(a) = log N(u) - sum log(1 - tanh(u)^2), written as 2 (log 2 - u - softplus(-2u)) for
    numerical stability (it is exact, and finite where 1 - tanh(u)^2 underflows).
    """

    def __init__(self, in_dim: int, action_dim: int, hidden_dims: Sequence[int],
                 log_std_bounds: tuple[float, float] = (-10.0, 2.0), **mlp_kwargs):
        super().__init__()
        self.net = MLP(in_dim, hidden_dims, 2 * action_dim, **mlp_kwargs)
        self.log_std_min, self.log_std_max = log_std_bounds

    def distribution(self, features: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.net(features).chunk(2, dim=-1)
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return mu, log_std.exp()

    def forward(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Returns (action, log_prob); deterministic gives tanh(mu) and its log-density."""
        mu, std = self.distribution(features)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        return torch.tanh(u), tanh_gaussian_log_prob(u, mu, std)

    def log_prob(self, features: Tensor, action: Tensor, eps: float = 1e-4) -> Tensor:
        """log pi(a|s) of given actions in [-1, 1] (e.g. a dataset's, for behaviour cloning).
        Actions are clamped to +-(1 - eps): datasets often hold actions clipped at exactly +-1,
        whose atanh is infinite; at 1 - 1e-4 it is 4.95, a target a Gaussian can fit."""
        mu, std = self.distribution(features)
        u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        return tanh_gaussian_log_prob(u, mu, std)


def tanh_gaussian_log_prob(u: Tensor, mu: Tensor, std: Tensor) -> Tensor:
    normal = -0.5 * ((u - mu) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)
    correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (normal - correction).sum(-1)


class DeterministicActor(nn.Module):
    """a = tanh(mu(s)); exploration adds clipped Gaussian noise with a scheduled std (DDPG/DrQ-v2)."""

    def __init__(self, in_dim: int, action_dim: int, hidden_dims: Sequence[int], **mlp_kwargs):
        super().__init__()
        self.net = MLP(in_dim, hidden_dims, action_dim, output_activation="tanh", **mlp_kwargs)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


def noisy_action(mean: Tensor, std: float, clip: float | None = None) -> Tensor:
    """mean + eps, eps ~ N(0, std) clipped to [-clip, clip]; the sum clipped to [-1, 1]."""
    noise = torch.randn_like(mean) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    return (mean + noise).clamp(-1.0, 1.0)


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from `start` to `end` over `duration` steps, then constant."""
    mix = min(max(step / max(duration, 1), 0.0), 1.0)
    return start + mix * (end - start)


def metrics_to_floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    """An update's 0-d metric tensors as floats, with one device sync for all of them."""
    return dict(zip(metrics, torch.stack(list(metrics.values())).tolist()))


def optimize(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sac_actor_step(actor: "TanhGaussianActor", critic: "TwinQ", temperature: "Temperature",
                   actor_opt: torch.optim.Optimizer, alpha_opt: torch.optim.Optimizer,
                   actor_features: Tensor, critic_features: Tensor) -> dict[str, Tensor]:
    """SAC's actor and temperature step: minimise alpha log pi(a|s) - min(Q1, Q2)(s, a), a ~ pi.

    `critic_features` must carry no gradient (pixel agents pass detached encoder features), so
    the actor loss trains only the actor and whatever produced `actor_features`.
    """
    action, log_prob = actor(actor_features)
    with frozen(critic):
        q1, q2 = critic(critic_features, action)
    loss = (temperature.alpha.detach() * log_prob - torch.min(q1, q2)).mean()
    optimize(actor_opt, loss)
    optimize(alpha_opt, temperature.loss(log_prob))
    return {"actor_loss": loss.detach(), "alpha": temperature.alpha.detach(), "entropy": -log_prob.detach().mean()}


class Temperature(nn.Module):
    """SAC's entropy temperature alpha, tuned towards a target entropy (default -|A|).

    Loss as in Haarnoja et al. 2018b and DrQ: alpha * (-log pi - target_entropy), with log pi
    detached, so that alpha grows when the policy's entropy falls below the target.
    """

    def __init__(self, initial: float, target_entropy: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))
        self.target_entropy = target_entropy

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def loss(self, log_prob: Tensor) -> Tensor:
        return (self.alpha * (-log_prob - self.target_entropy).detach()).mean()


# -- DQN family ------------------------------------------------------------------------------
# Pieces shared by DrQ-epsilon and CURL's Data-Efficient Rainbow: dueling heads, noisy linear
# layers, double-DQN and categorical (C51) targets, epsilon-greedy exploration.


def dueling_aggregate(value: Tensor, advantage: Tensor) -> Tensor:
    """Q = V + A - mean_a A (Wang et al. 2016, eq. 9).

    value (B, 1, ...) and advantage (B, A, ...); trailing axes (e.g. C51's atoms) ride along.
    """
    return value + advantage - advantage.mean(dim=1, keepdim=True)


class NoisyLinear(nn.Module):
    """Linear layer with factorised Gaussian noise (Fortunato et al. 2018, section 3.2).

    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b with eps_w = f(eps_out) f(eps_in)^T,
    eps_b = f(eps_out), f(x) = sign(x) sqrt(|x|). Init as in the paper: mu ~ U[-1/sqrt(p),
    1/sqrt(p)] and sigma = sigma0 / sqrt(p) for weights and biases alike, p = in_features.
    (Kaixhin's Rainbow divides the bias sigma by sqrt(out_features) instead.)

    The noise is held in buffers and changes only on `reset_noise()` (call it before acting and
    before each update); in eval mode the layer is the deterministic mean layer.
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("weight_epsilon", torch.zeros(out_features, in_features))
        self.register_buffer("bias_epsilon", torch.zeros(out_features))
        self.reset_noise()

    @staticmethod
    def _scaled_noise(size: int, device) -> Tensor:
        x = torch.randn(size, device=device)
        return x.sign() * x.abs().sqrt()

    @torch.no_grad()
    def reset_noise(self) -> None:
        eps_in = self._scaled_noise(self.in_features, self.weight_mu.device)
        eps_out = self._scaled_noise(self.out_features, self.weight_mu.device)
        self.weight_epsilon.copy_(torch.outer(eps_out, eps_in))
        self.bias_epsilon.copy_(eps_out)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * self.weight_epsilon
        bias = self.bias_mu + self.bias_sigma * self.bias_epsilon
        return F.linear(x, weight, bias)


def reset_noise(module: nn.Module) -> None:
    """Resample the noise of every NoisyLinear inside `module`."""
    for m in module.modules():
        if isinstance(m, NoisyLinear):
            m.reset_noise()


class DuelingHead(nn.Module):
    """Dueling Q head (Wang et al. 2016): value and advantage streams combined by
    `dueling_aggregate`. Separate streams (Wang et al., Rainbow), each Linear -> ReLU -> Linear, or
    with `shared_hidden=True` one Linear -> ReLU feeding two Linear heads (Dopamine's
    FullRainbowNetwork, which DrQ-epsilon's released code uses).

    Output (B, num_actions) Q-values, or with num_atoms > 1 (B, num_actions, num_atoms) logits
    of C51's return distribution (softmax over the last axis). `noisy=True` makes every layer a
    NoisyLinear (Rainbow).
    """

    def __init__(self, in_dim: int, num_actions: int, hidden_dim: int, num_atoms: int = 1,
                 noisy: bool = False, sigma0: float = 0.5, shared_hidden: bool = False):
        super().__init__()
        self.num_actions, self.num_atoms = num_actions, num_atoms

        def linear(i, o):
            return NoisyLinear(i, o, sigma0) if noisy else nn.Linear(i, o)

        def hidden():
            return nn.Sequential(linear(in_dim, hidden_dim), nn.ReLU())

        self.shared = hidden() if shared_hidden else nn.Identity()
        self.value = nn.Sequential(*([] if shared_hidden else hidden()), linear(hidden_dim, num_atoms))
        self.advantage = nn.Sequential(*([] if shared_hidden else hidden()),
                                       linear(hidden_dim, num_actions * num_atoms))

    def forward(self, features: Tensor) -> Tensor:
        features = self.shared(features)
        value = self.value(features).view(-1, 1, self.num_atoms)
        advantage = self.advantage(features).view(-1, self.num_actions, self.num_atoms)
        q = dueling_aggregate(value, advantage)
        return q.squeeze(-1) if self.num_atoms == 1 else q


def double_dqn_target(reward: Tensor, discount: Tensor, next_q_online: Tensor, next_q_target: Tensor) -> Tensor:
    """Double DQN n-step target (van Hasselt et al. 2016): the online network picks the action at
    s', the target network evaluates it: r + discount * Q_target(s', argmax_a Q_online(s', a)).

    reward, discount (B,) from the replay (discount = gamma^m, 0 at termination);
    next_q_online, next_q_target (B, A).
    """
    next_action = next_q_online.argmax(dim=1, keepdim=True)
    next_value = next_q_target.gather(1, next_action).squeeze(1)
    return n_step_target(reward, discount, next_value)


def categorical_projection(reward: Tensor, discount: Tensor, next_probs: Tensor, support: Tensor,
                           bounds: tuple[float, float] | None = None) -> Tensor:
    """C51's target distribution (Bellemare et al. 2017, Algorithm 1).

    Each atom z_j of the next-state distribution (probability next_probs[:, j]) moves to
    r + discount * z_j, is clipped to [v_min, v_max] and its mass is split between the two
    neighbouring support points in proportion to closeness; an atom landing exactly on a support
    point keeps all its mass there. With discount 0 (a terminal transition) all the mass goes to
    the projection of r. reward, discount (B,); next_probs (B, N); support (N,) evenly spaced;
    bounds: (v_min, v_max) = the support's ends, given to spare reading them (a sync on a GPU).
    Returns (B, N) probabilities; the mass of each row is conserved.
    """
    num_atoms = support.shape[0]
    v_min, v_max = bounds if bounds is not None else (float(support[0]), float(support[-1]))
    delta = (v_max - v_min) / (num_atoms - 1)
    tz = (reward[:, None] + discount[:, None] * support[None, :]).clamp(v_min, v_max)
    b = ((tz - v_min) / delta).clamp(0, num_atoms - 1)  # clamp: float rounding at v_max
    lower, upper = b.floor().long(), b.ceil().long()
    on_point = (lower == upper).to(next_probs.dtype)
    target = torch.zeros_like(next_probs)
    target.scatter_add_(1, lower, next_probs * (upper.to(b.dtype) - b + on_point))
    target.scatter_add_(1, upper, next_probs * (b - lower.to(b.dtype)))
    return target


def epsilon_greedy(q_values: Tensor, epsilon: float, generator: torch.Generator | None = None) -> Tensor:
    """argmax_a Q(s, a), replaced by a uniformly random action with probability epsilon (per row)."""
    batch, num_actions = q_values.shape
    greedy = q_values.argmax(dim=1)
    random = torch.randint(0, num_actions, (batch,), device=q_values.device, generator=generator)
    explore = torch.rand(batch, device=q_values.device, generator=generator) < epsilon
    return torch.where(explore, random, greedy)


def linear_epsilon(step: int, decay_steps: int, final: float, warmup_steps: int = 0, start: float = 1.0) -> float:
    """Dopamine's linearly decaying epsilon: `start` for the first `warmup_steps` (the replay
    warm-up), then linear to `final` over `decay_steps`, then constant."""
    return linear_schedule(start, final, decay_steps, step - warmup_steps)


def n_step_from_sequence(window: dict[str, Tensor], gamma: float, reward_clip: float | None = None,
                         field: str = "obs") -> dict[str, Tensor]:
    """An n-step transition from a replay window of n steps (`kind="sequences"`, `pad=True`),
    for agents that transform each reward before summing, e.g. DQN's clip to [-1, 1].

    Same meaning as the replay's n-step transitions: reward = sum_{k<m} gamma^k r_{t+k} (each r
    clipped to [-reward_clip, reward_clip] if given), discount = gamma^m, 0 if the episode
    terminated inside the window, next_obs = obs at t + m, where m <= n is the number of steps
    before the episode's end.
    """
    mask = window["mask"]
    steps = mask.sum(1).long()
    reward = window["reward"].float()
    if reward_clip is not None:
        reward = reward.clamp(-reward_clip, reward_clip)
    powers = gamma ** torch.arange(mask.shape[1], device=mask.device, dtype=reward.dtype)
    terminated = (window["terminated"] * mask).amax(dim=1)
    rows = torch.arange(mask.shape[0], device=mask.device)
    return {
        "obs": window[field][:, 0],
        "action": window["action"][:, 0],
        "reward": (reward * mask * powers).sum(1),
        "discount": gamma ** steps.to(reward.dtype) * (1.0 - terminated),
        "next_obs": window[field][rows, steps],
        "terminated": terminated,
        "steps": steps,
    }


# -- goal-conditioned agents -----------------------------------------------------------------


def rolled(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The batch rolled by a uniformly random shift: each row gets another row's entry, a cheap
    draw of "random goals from the batch" as contrastive RL and TD-InfoNCE's released code do
    (a shift of 0, probability 1/B, keeps the batch as it is, as theirs can)."""
    shift = int(torch.randint(0, x.shape[0], (), generator=generator))
    return torch.roll(x, shift, dims=0)


def require_continuous_actions(agent: str, action_space) -> None:
    """A clear error where an env's actions do not fit the agent (else a crash deep in the env)."""
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"{agent} needs continuous (Box) actions; the env's action space is {action_space}")


def require_discrete_actions(agent: str, action_space) -> None:
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(f"{agent} needs discrete (Discrete) actions; the env's action space is {action_space}")


ACTOR_GOALS = ("future", "random", "both")


def check_actor_goals(actor_goals: str, bc_coef: float) -> None:
    if actor_goals not in ACTOR_GOALS:
        raise ValueError(f"actor_goals must be one of {', '.join(ACTOR_GOALS)}, got {actor_goals!r}")
    if bc_coef > 0 and actor_goals == "random":
        raise ValueError("bc_coef > 0 needs actor_goals 'future' or 'both': behaviour cloning imitates the "
                         "dataset action toward the transition's own future goal, and 'random' has none")


def actor_goal_batch(state: Tensor, action: Tensor, goal: Tensor, actor_goals: str):
    """The rows the actor trains on, as the released code's `random_goals` 0 / 1 / 0.5: each
    transition's own future goal ("future"), another row's ("random"), or both stacked into 2B
    rows ("both"). Returns (state, dataset action, goal, is_future), is_future marking the rows
    whose goal is their own future (where behaviour cloning applies)."""
    future = torch.ones(len(state), dtype=torch.bool, device=state.device)
    if actor_goals == "future":
        return state, action, goal, future
    if actor_goals == "random":
        return state, action, rolled(goal), ~future
    return (torch.cat([state, state]), torch.cat([action, action]), torch.cat([goal, rolled(goal)]),
            torch.cat([future, ~future]))


def blend_bc(loss: Tensor, bc: Tensor, is_future: Tensor, bc_coef: float) -> Tensor:
    """Per-row actor loss of the offline goal agents: bc_coef * BC + (1 - bc_coef) * loss on the
    rows whose goal is their own future (the dataset action heads there), the loss elsewhere."""
    return torch.where(is_future, bc_coef * bc + (1 - bc_coef) * loss, loss)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x[mask].mean() (nan where no row is selected) without boolean indexing, whose output size
    depends on the data: on a GPU that reads the mask back to the CPU every update."""
    return torch.where(mask, x, 0).sum() / mask.sum()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No gradients into `module`'s parameters inside the block (an actor loss through the
    critic): saves the backward pass into the critic's weights."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class Checkpointable(abc.ABC):
    """An agent's `state_dict` / `load_state_dict`: every network of `modules()` and optimiser of
    `optimizers()`, keyed by their names (the checkpoint's keys). An agent that lacks either
    cannot be built."""

    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The agent's networks by name (targets included)."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The agent's optimisers by name."""

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in (self.modules() | self.optimizers()).items()}

    def load_state_dict(self, state: dict) -> None:
        parts = self.modules() | self.optimizers()
        missing = sorted(set(parts) - set(state))
        if missing:
            raise KeyError(f"{type(self).__name__} state lacks {', '.join(missing)} "
                           f"(it has {', '.join(sorted(state)) or 'nothing'})")
        for name, part in parts.items():
            part.load_state_dict(state[name])
