"""Actor-critic parts shared by the agents: twin critics, Polyak averaging, n-step targets,
tanh-Gaussian and deterministic actors, exploration schedules and SAC's temperature."""

from __future__ import annotations

import math
from typing import Sequence

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
