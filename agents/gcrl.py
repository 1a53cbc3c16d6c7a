"""Contrastive RL (Eysenbach, Zhang, Salakhutdinov, Levine 2022), with the stabilising choices of
Zheng, Eysenbach et al. 2023.

The critic is a contrastive classifier, not a value regressor: f(s, a, g) = phi(s, a) . psi(g)
learns to tell the future state g reached from (s, a) (drawn at a geometric offset along the same
trajectory) from goals of other transitions in the batch. At the optimum
f = log p^pi(s_future = g | s, a) - log p(g) (+ a constant), i.e. the log of a goal-conditioned Q
function for the reward p(s_{t+1} = g), so the actor simply maximises f(s, a ~ pi(s, g), g). There
is no TD target and no target network.

Losses on the B x B logits (positives on the diagonal): binary NCE (the paper's default), InfoNCE
with a logsumexp^2 penalty, or symmetric InfoNCE. Online the actor is SAC-style (adaptive
entropy); offline it adds a behaviour-cloning term. Defaults follow Zheng et al. 2023 (4x1024
LayerNorm MLPs, representation 16, Xavier init, last layer near zero); preset `eysenbach2022` is
the original paper's 2x256 / 64, and `cpu-smoke` is sized for a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crl.contrastive import LOSSES, ContrastiveCritic, logsumexp_penalty
from crl.encoders import GoalInputs
from crl.rl import (Checkpointable, TanhGaussianActor, Temperature, actor_goal_batch, blend_bc, check_actor_goals,
                    frozen, masked_mean, metrics_to_floats, optimize, require_continuous_actions)

CRITIC_LOSSES = {"nce": "binary_nce", "infonce": "infonce_forward", "infonce_symmetric": "infonce_symmetric"}


@dataclass
class Config:
    gamma: float = 0.99  # discount of the future-goal distribution (geometric offsets)
    batch_size: int = 256  # online; Zheng et al. use 2048 offline (preset `offline`)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (1024, 1024, 1024, 1024)
    layer_norm: bool = True
    repr_dim: int = 16
    last_layer_scale: float = 1e-12  # critic's last layers start at U(-1e-12, 1e-12): logits ~ 0
    loss: str = "nce"  # nce | infonce (+ logsumexp^2 penalty) | infonce_symmetric
    logsumexp_coef: float = 0.01  # InfoNCE only
    energy: str = "dot"  # dot | cosine | neg_l2 | neg_sq_l2 | bilinear
    cosine_temperature: float = 0.1  # energy="cosine" only: l_ij = cos(phi_i, psi_j) / temperature
    twin: bool = True
    actor_goals: str = "both"  # future | random | both (the released code's random_goals 0 / 1 / 0.5)
    bc_coef: float = 0.0  # offline: 0.05, on the rows whose goal is the transition's own future
    # None: SAC's adaptive alpha toward entropy -|A| (our online default: it explores from the
    # first step). The released code fixes alpha = 0 on state tasks and offline (presets
    # `eysenbach2022`, `offline`) and tunes it toward entropy 0 on image tasks.
    entropy_coef: float | None = None
    init_temperature: float = 1.0
    feature_dim: int = 50  # image goals only: conv encoder output


PRESETS = {
    # Eysenbach et al. 2022 as released: 2x256 MLPs without LayerNorm, representation 64, one
    # critic (the released config's twin_q=False for contrastive_nce).
    "eysenbach2022": dict(hidden_dims=(256, 256), layer_norm=False, repr_dim=64, entropy_coef=0.0, twin=False),
    # Offline (Zheng et al. 2023's batch and networks; the released AntMaze config is batch 1024,
    # 2x1024 without LayerNorm): BC 0.05 toward future goals, alpha 0.
    "offline": dict(batch_size=2048, bc_coef=0.05, actor_goals="future", entropy_coef=0.0,
                    updates=500_000, eval_every_updates=50_000),
    # Offline on the 2-core CPU: a generated PointMaze dataset in about 10 minutes.
    "offline-cpu": dict(batch_size=256, hidden_dims=(256, 256), bc_coef=0.05, actor_goals="future",
                        entropy_coef=0.0, updates=20_000, eval_every_updates=2_000, eval_episodes=20),
    # 2-core CPU, maze:PointMaze_UMaze-v3 from states: success 1.0 after 10k frames (8 min).
    "cpu-smoke": dict(hidden_dims=(256, 256), frames=20_000, seed_frames=5_000, update_every=1,
                      eval_every_frames=5_000, eval_episodes=20, replay_capacity=200_000,
                      checkpoint_every_frames=0),
}
RUN_DEFAULTS = dict(seed_frames=10_000, eval_every_frames=10_000, eval_episodes=10, replay_capacity=1_000_000)


class Agent(Checkpointable):
    name = "gcrl"
    batch_kind = "goals"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        if config.loss not in CRITIC_LOSSES:
            raise ValueError(f"unknown loss {config.loss!r}; choose from {sorted(CRITIC_LOSSES)}")
        check_actor_goals(config.actor_goals, config.bc_coef)
        self.config = config
        self.device = torch.device(device)
        self.inputs = GoalInputs(obs_space, config.feature_dim)
        state_dim, goal_dim = self.inputs.state_dim, self.inputs.goal_dim
        self.action_dim = int(np.prod(action_space.shape))

        self.critic = ContrastiveCritic(state_dim + self.action_dim, goal_dim, config.hidden_dims,
                                        config.repr_dim, ensemble=2 if config.twin else 1,
                                        energy=config.energy, layer_norm=config.layer_norm,
                                        energy_kwargs={"temperature": config.cosine_temperature}
                                        if config.energy == "cosine" else None,
                                        last_layer_scale=config.last_layer_scale)
        self.actor = TanhGaussianActor(state_dim + goal_dim, self.action_dim, config.hidden_dims,
                                       layer_norm=config.layer_norm, init="xavier_uniform")
        self.temperature = Temperature(config.init_temperature, target_entropy=-float(self.action_dim))
        for module in self.modules().values():
            module.to(self.device)
        # Image encoders learn from the critic's loss only; the actor sees their features detached.
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.inputs.parameters()],
                                           lr=config.critic_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.alpha_opt = torch.optim.Adam(self.temperature.parameters(), lr=config.alpha_lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"inputs": self.inputs, "critic": self.critic, "actor": self.actor, "temperature": self.temperature}

    def sampler_options(self) -> dict:
        return {"gamma": self.config.gamma, "goal_field": self.inputs.goal_field}

    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    # -- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: dict, explore: bool) -> np.ndarray:
        state = self.inputs.state(self._tensor(obs["observation"]))
        goal = self.inputs.goal(self._tensor(obs["desired_goal"]))
        action, _ = self.actor(torch.cat([state, goal], -1), deterministic=not explore)
        return action.cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        state = self.inputs.state(self._tensor(batch["observation"]), augment=True)
        goal = self.inputs.goal(self._tensor(batch["goal"]), augment=True)
        action = self._tensor(batch["action"]).float()
        metrics = self.update_critic(state, action, goal)
        metrics.update(self.update_actor(state.detach(), action, goal.detach()))
        return metrics_to_floats(metrics)

    def update_critic(self, state, action, goal) -> dict[str, torch.Tensor]:
        """Classify each (s_i, a_i)'s own future goal g_i among the batch's goals g_j."""
        metrics: dict[str, torch.Tensor] = {}
        logits = self.critic(torch.cat([state, action], -1), goal)  # (E, B, B)
        loss = LOSSES[CRITIC_LOSSES[self.config.loss]](logits, metrics)
        if self.config.loss == "infonce":
            loss = loss + logsumexp_penalty(logits, self.config.logsumexp_coef, metrics)
        optimize(self.critic_opt, loss)
        return {"critic_loss": loss.detach(), **metrics}

    def alpha(self) -> torch.Tensor:
        if self.config.entropy_coef is not None:
            return torch.tensor(self.config.entropy_coef, device=self.device)
        return self.temperature.alpha.detach()

    def update_actor(self, state, dataset_action, goal) -> dict[str, torch.Tensor]:
        """min_pi E[alpha log pi(a|s,g) - min_k f_k(s, a, g)], a ~ pi(s, g) (+ BC offline)."""
        state, dataset_action, goal, is_future = actor_goal_batch(state, dataset_action, goal,
                                                                  self.config.actor_goals)
        features = torch.cat([state, goal], -1)
        action, log_prob = self.actor(features)
        with frozen(self.critic):
            score = self.critic.pairwise(torch.cat([state, action], -1), goal).min(0).values
        loss = self.alpha() * log_prob - score
        metrics = {}
        if self.config.bc_coef > 0:
            bc = -self.actor.log_prob(features, dataset_action)
            loss = blend_bc(loss, bc, is_future, self.config.bc_coef)
            metrics["bc_loss"] = masked_mean(bc, is_future).detach()
        loss = loss.mean()
        optimize(self.actor_opt, loss)
        if self.config.entropy_coef is None:
            optimize(self.alpha_opt, self.temperature.loss(log_prob))
        return metrics | {"actor_loss": loss.detach(), "alpha": self.alpha(), "entropy": -log_prob.detach().mean()}

    # -- checkpoints --------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt, "alpha_opt": self.alpha_opt}
