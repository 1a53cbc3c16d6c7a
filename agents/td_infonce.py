"""TD-InfoNCE (Zheng, Salakhutdinov, Eysenbach 2023: "Contrastive Difference Predictive Coding").

Contrastive RL learns the discounted future-state distribution from Monte-Carlo goals; TD-InfoNCE
learns it by temporal differences, so it can stitch trajectories and reuse off-policy data. The
critic f(s, a, g_cmd, g) = phi(s, a, g_cmd) . psi(g) scores a candidate future state g for a policy
commanded to reach g_cmd; softmax_g f(s, a, g_cmd, .) estimates the discounted state occupancy
M(s, a, .) of that policy. The loss mixes two classification terms (crl.contrastive.td_infonce):

  (1 - gamma) * CE(f(s_i, a_i, g_i, s'_j), I)       the next state is a positive
  + gamma * CE(f(s_i, a_i, g_i, g~_j), W)           bootstrapped with importance weights
  W_ij = sg softmax_j min_k f_target,k(s'_i, a'_i, g_i, g~_j),  a'_i ~ pi(. | s'_i, g_i)

Commanded goals are random states of the batch (the released code rolls the batch), candidates
g~ are the other rows' commanded goals. The actor maximises CE(min_k f(s_i, a ~ pi(s_i, G_i), G_i,
G_j), I) over goals G (random online, the transition's own future offline) and offline blends in
0.2 * MSE behaviour cloning. Representations are L2-normalised (cosine energy, temperature 1).
Defaults are the released code's online settings; presets `offline` (AntMaze), `offline-cpu`
and `cpu-smoke` (2-core CPU). Deviations: random actor goals are rolled future goals (theirs: rolled
batch states); image goals get DrQ's random shift (theirs: no augmentation); weights start Xavier
uniform where the release uses LeCun uniform (VarianceScaling(1, fan_in, uniform)): the same on
the square hidden layers, wider on the first and last layers (e.g. 512 -> 16: bound 0.107 against
0.077). Kept: the recorded runs used it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.contrastive import ContrastiveCritic, td_infonce
from crl.encoders import GoalInputs
from crl.rl import (Checkpointable, TanhGaussianActor, actor_goal_batch, blend_bc, check_actor_goals, frozen,
                    masked_mean, metrics_to_floats, optimize, require_continuous_actions, rolled, soft_update)


@dataclass
class Config:
    gamma: float = 0.99
    batch_size: int = 256
    actor_lr: float = 5e-5
    critic_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    layer_norm: bool = False  # the released networks have none
    repr_dim: int = 16
    repr_norm_temperature: float = 1.0  # f = phi.psi / (|phi| |psi| T)
    tau: float = 0.005
    twin: bool = True
    actor_goals: str = "random"  # future | random | both (released: random online, future offline)
    bc_coef: float = 0.0  # offline: 0.2 (MSE to the dataset action)
    feature_dim: int = 50  # image goals only: conv encoder output


PRESETS = {
    # Offline AntMaze in the paper: batch 1024, 4x1024 networks, future goals for the actor, BC 0.2.
    "offline": dict(batch_size=1024, hidden_dims=(1024, 1024, 1024, 1024), actor_goals="future",
                    bc_coef=0.2, updates=500_000, eval_every_updates=50_000),
    # Offline on the 2-core CPU: a generated PointMaze dataset in about 10 minutes.
    "offline-cpu": dict(batch_size=256, hidden_dims=(256, 256), actor_lr=3e-4, bc_coef=0.2, actor_goals="future",
                        updates=20_000, eval_every_updates=2_000, eval_episodes=20),
    # 2-core CPU, maze:PointMaze_UMaze-v3 from states: success >= 0.8 after 15k-30k frames
    # (17-18 min; 0.85 at 40k, 25 min) with two runs sharing the CPU.
    "cpu-smoke": dict(hidden_dims=(256, 256), actor_lr=3e-4, frames=40_000, seed_frames=5_000,
                      update_every=1, eval_every_frames=5_000, eval_episodes=20, replay_capacity=200_000,
                      checkpoint_every_frames=0),
}
RUN_DEFAULTS = dict(seed_frames=10_000, eval_every_frames=10_000, eval_episodes=10, replay_capacity=1_000_000)


class Agent(Checkpointable):
    name = "td-infonce"
    batch_kind = "goals"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        check_actor_goals(config.actor_goals, config.bc_coef)
        self.config = config
        self.device = torch.device(device)
        self.inputs = GoalInputs(obs_space, config.feature_dim)
        state_dim, goal_dim = self.inputs.state_dim, self.inputs.goal_dim
        self.action_dim = int(np.prod(action_space.shape))

        self.critic = ContrastiveCritic(state_dim + self.action_dim + goal_dim, goal_dim,
                                        config.hidden_dims, config.repr_dim, ensemble=2 if config.twin else 1,
                                        energy="cosine", energy_kwargs={"temperature": config.repr_norm_temperature},
                                        layer_norm=config.layer_norm, last_layer_scale=None)
        # The target critic includes its own copy of the image encoders (the released code's
        # target parameters include the conv torso).
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.inputs_target = copy.deepcopy(self.inputs).requires_grad_(False)
        self.actor = TanhGaussianActor(state_dim + goal_dim, self.action_dim, config.hidden_dims,
                                       layer_norm=config.layer_norm, init="xavier_uniform")
        for module in self.modules().values():
            module.to(self.device)
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.inputs.parameters()],
                                           lr=config.critic_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"inputs": self.inputs, "inputs_target": self.inputs_target, "critic": self.critic,
                "critic_target": self.critic_target, "actor": self.actor}

    def sampler_options(self) -> dict:
        return {"gamma": self.config.gamma, "goal_field": self.inputs.goal_field}

    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def policy(self, state, goal, deterministic: bool = False) -> torch.Tensor:
        """Actions for state and goal features (image features reach the actor detached)."""
        return self.actor(torch.cat([state.detach(), goal.detach()], -1), deterministic=deterministic)[0]

    # -- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: dict, explore: bool) -> np.ndarray:
        state = self.inputs.state(self._tensor(obs["observation"]))
        goal = self.inputs.goal(self._tensor(obs["desired_goal"]))
        return self.policy(state, goal, deterministic=not explore).cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        field = self.inputs.goal_field  # goals live in this field's space (s' in goal space, ...)
        obs = {k: self._tensor(batch[k]) for k in ("observation", "next_observation", field, "next_" + field, "goal")}
        commanded = rolled(obs[field])  # random states of the batch, as goals
        action = self._tensor(batch["action"]).float()

        state = self.inputs.state(obs["observation"], augment=True)  # encoded once: critic, then actor
        metrics = self.update_critic(state, action, obs["next_observation"], obs["next_" + field], commanded)
        metrics.update(self.update_actor(state.detach(), action, self.inputs.goal(obs["goal"], augment=True).detach()))
        soft_update(self.critic_target, self.critic, self.config.tau)
        soft_update(self.inputs_target, self.inputs, self.config.tau)
        return metrics_to_floats(metrics)

    def update_critic(self, state, action, next_state, next_goal, commanded) -> dict[str, torch.Tensor]:
        """`state` comes encoded (the critic's loss trains its encoder); the other observations come
        raw and are encoded here, each image with its own random shift."""
        encode, encode_target = self.inputs, self.inputs_target
        with torch.no_grad():
            next_action = self.policy(encode.state(next_state, augment=True), encode.goal(commanded, augment=True))
            commanded_t = encode_target.goal(commanded, augment=True)
            x_next = torch.cat([encode_target.state(next_state, augment=True), next_action, commanded_t], -1)
            target_logits = self.critic_target(x_next, torch.roll(commanded_t, -1, dims=0))
        commanded_features = encode.goal(commanded, augment=True)
        x = torch.cat([state, action, commanded_features], -1)
        next_logits = self.critic(x, encode.goal(next_goal, augment=True))
        # candidates g~_j: the other rows' commanded goals
        future_logits = self.critic(x, torch.roll(commanded_features, -1, dims=0))
        metrics: dict[str, torch.Tensor] = {}
        loss = td_infonce(next_logits, future_logits, target_logits, self.config.gamma, metrics=metrics)
        optimize(self.critic_opt, loss)
        return {"critic_loss": loss.detach(), **metrics}

    def update_actor(self, state, dataset_action, future_goal) -> dict[str, torch.Tensor]:
        """CE(min_k f(s_i, a_i ~ pi(s_i, G_i), G_i, G_j), I): the commanded goal should be the most
        likely future among the batch's goals; offline blended with MSE behaviour cloning."""
        state, dataset_action, goal, is_future = actor_goal_batch(state, dataset_action, future_goal,
                                                                  self.config.actor_goals)
        action = self.policy(state, goal)
        with frozen(self.critic):
            logits = self.critic(torch.cat([state, action, goal], -1), goal).min(0).values
        labels = torch.arange(len(state), device=self.device)
        loss = F.cross_entropy(logits, labels, reduction="none")
        metrics = {"actor_accuracy": (logits.argmax(-1) == labels).float().mean()}
        if self.config.bc_coef > 0:
            bc = (action - dataset_action).square().mean(-1)
            loss = blend_bc(loss, bc, is_future, self.config.bc_coef)
            metrics["bc_loss"] = masked_mean(bc, is_future).detach()
        loss = loss.mean()
        optimize(self.actor_opt, loss)
        return metrics | {"actor_loss": loss.detach()}

    # -- checkpoints --------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt}
