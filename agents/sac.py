"""Soft Actor-Critic (Haarnoja et al. 2018), from states or from pixels, no augmentation.

From pixels it is the "pixel SAC" baseline of SAC-AE, CURL and DrQ: the SAC-AE conv encoder is
trained by the critic's loss only; the actor shares the critic's conv layers but sees them
detached, with its own Linear -> LayerNorm head. The target critic (encoder included) follows by
Polyak averaging. Defaults follow SAC-AE / DrQ's DMC settings; `cpu-smoke` is sized for a
2-core CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.encoders import ConvEncoder, resolve_precision
from crl.rl import (Checkpointable, TanhGaussianActor, Temperature, TwinQ, metrics_to_floats, n_step_target, optimize,
                    require_continuous_actions, sac_actor_step, soft_update)


@dataclass
class Config:
    gamma: float = 0.99
    n_step: int = 1
    batch_size: int = 128  # SAC-AE / DrQ's released code; DrQ's paper uses 512
    hidden_dims: tuple[int, ...] = (1024, 1024)
    feature_dim: int = 50  # pixels only: encoder output
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-4
    alpha_beta1: float = 0.5  # Adam beta1 for the temperature, as in SAC-AE and DrQ
    init_temperature: float = 0.1
    critic_tau: float = 0.01
    encoder_tau: float = 0.05
    actor_update_every: int = 2
    target_update_every: int = 2
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    # "float32" (SAC-AE's), "bfloat16" (pixels: the conv encoder under bf16 autocast, see
    # crl/encoders.py) or "auto" (bfloat16 where it measures faster: resolve_precision)
    precision: str = "float32"


PRESETS = {
    # state-based DMC on the 2-core CPU: the `make demo` run
    "cpu-smoke": dict(hidden_dims=(256, 256), batch_size=256, actor_lr=3e-4, critic_lr=3e-4,
                      alpha_lr=3e-4, alpha_beta1=0.9, init_temperature=1.0, critic_tau=0.005,
                      target_update_every=1, actor_update_every=1,
                      frames=100_000, seed_frames=4_000, eval_every_frames=10_000, eval_episodes=5),
    "dmc100k": dict(frames=100_000),
    "dmc500k": dict(frames=500_000),
}


class Agent(Checkpointable):
    name = "sac"
    batch_kind = "transitions"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        self.config = config
        self.device = torch.device(device)
        self.action_dim = int(np.prod(action_space.shape))
        self.pixels = len(obs_space.shape) == 3

        if self.pixels:
            dtype = resolve_precision(config.precision, device)
            self.encoder = ConvEncoder(obs_space.shape, config.feature_dim, compute_dtype=dtype)
            self.actor_encoder = ConvEncoder(obs_space.shape, config.feature_dim, compute_dtype=dtype)
            self.actor_encoder.convs = self.encoder.convs  # tied convs; the actor sees them detached
            feature_dim = config.feature_dim
        else:
            self.encoder = self.actor_encoder = nn.Identity()
            feature_dim = int(np.prod(obs_space.shape))

        self.critic = TwinQ(feature_dim, self.action_dim, config.hidden_dims)
        self.actor = TanhGaussianActor(feature_dim, self.action_dim, config.hidden_dims,
                                       log_std_bounds=(config.log_std_min, config.log_std_max))
        self.temperature = Temperature(config.init_temperature, target_entropy=-float(self.action_dim))
        self.critic_target = copy.deepcopy(self.critic)
        self.encoder_target = copy.deepcopy(self.encoder)
        for module in self.modules().values():
            module.to(self.device)

        actor_params = list(self.actor.parameters())
        if self.pixels:
            actor_params += list(self.actor_encoder.head.parameters())
        self.actor_opt = torch.optim.Adam(actor_params, lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.encoder.parameters()],
                                           lr=config.critic_lr)
        self.alpha_opt = torch.optim.Adam(self.temperature.parameters(), lr=config.alpha_lr,
                                          betas=(config.alpha_beta1, 0.999))

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "actor_encoder": self.actor_encoder, "critic": self.critic,
                "actor": self.actor, "temperature": self.temperature,
                "critic_target": self.critic_target, "encoder_target": self.encoder_target}

    def sampler_options(self) -> dict:
        return {"n_step": self.config.n_step, "gamma": self.config.gamma}

    # -- acting -------------------------------------------------------------------------------

    def _obs(self, obs) -> torch.Tensor:
        obs = torch.as_tensor(obs, device=self.device)
        return obs if self.pixels else obs.float()

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        features = self.actor_encoder(self._obs(obs))
        action, _ = self.actor(features, deterministic=not explore)
        return action.cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        obs, next_obs = self._obs(batch["obs"]), self._obs(batch["next_obs"])
        action = batch["action"].to(self.device).float()
        reward = batch["reward"].to(self.device)
        discount = batch["discount"].to(self.device)

        metrics = self.update_critic(obs, action, reward, discount, next_obs)
        if step % self.config.actor_update_every == 0:
            metrics.update(self.update_actor(obs))
        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.critic_tau)
            soft_update(self.encoder_target, self.encoder, self.config.encoder_tau)
        return metrics_to_floats(metrics)

    def update_critic(self, obs, action, reward, discount, next_obs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            next_action, next_log_prob = self.actor(self.actor_encoder(next_obs))
            target_q1, target_q2 = self.critic_target(self.encoder_target(next_obs), next_action)
            next_value = torch.min(target_q1, target_q2) - self.temperature.alpha * next_log_prob
            target = n_step_target(reward, discount, next_value)
        q1, q2 = self.critic(self.encoder(obs), action)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        optimize(self.critic_opt, loss)
        return {"critic_loss": loss.detach(), "q": q1.detach().mean()}

    def update_actor(self, obs) -> dict[str, torch.Tensor]:
        # One conv pass serves both heads: the actor trains only its own head on detached conv
        # features, and the critic scores its actions on features that carry no gradient.
        with torch.no_grad():
            conv = self.encoder.forward_conv(obs) if self.pixels else obs
            critic_features = self.encoder.forward_head(conv) if self.pixels else obs
        features = self.actor_encoder.forward_head(conv) if self.pixels else obs
        return sac_actor_step(self.actor, self.critic, self.temperature, self.actor_opt, self.alpha_opt,
                              features, critic_features)

    # -- checkpoints --------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt, "alpha_opt": self.alpha_opt}
