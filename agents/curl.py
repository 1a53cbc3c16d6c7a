"""CURL: Contrastive Unsupervised Representations for RL (Laskin, Srinivas, Abbeel 2020), DMC form.

Pixel SAC plus an auxiliary InfoNCE loss on the critic's encoder. Observations are rendered at
100x100; every training batch is randomly cropped to 84x84 (one crop per sample, shared by the
frames of its stack), acting and evaluation use the centre crop. For each sampled observation o,
two independent crops give a query q = f_q(crop1(o)) and a key k = sg(f_k(crop2(o))); the logits
q W k^T (W learned) are scored by cross-entropy with the matching key (the diagonal) as the label.

- f_q is the critic's encoder: it is trained by the critic's TD loss and by the CURL loss.
- f_k is the critic target's encoder, Polyak-averaged with tau 0.05 (the Q heads use 0.01).
- The actor shares the critic's conv layers but sees them detached (its own Linear -> LayerNorm).
- The encoder head has no tanh (Linear -> LayerNorm), convs delta-orthogonal, as in the released code.

Paper vs released code (MishaLaskin/curl): batch 512 as in the paper (128 in the code: preset
`released`); the code steps the encoder twice per CURL loss (two Adam optimisers hold it), we step
it once; its crop offsets are drawn from [0, 15], crl.augment.random_crop's from [0, 16].

The Atari form (CURL on Data-Efficient Rainbow, "curl-rainbow") is not implemented here yet.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.augment import center_crop, random_crop
from crl.contrastive import Bilinear, curl_loss
from crl.encoders import ConvEncoder
from crl.rl import TanhGaussianActor, Temperature, TwinQ, n_step_target, soft_update


@dataclass
class Config:
    gamma: float = 0.99
    n_step: int = 1
    batch_size: int = 512  # the paper; the released code runs 128 (preset `released`)
    crop_size: int = 84  # training crop from the RunConfig.image_size (100) render
    hidden_dims: tuple[int, ...] = (1024, 1024)
    feature_dim: int = 50
    # The paper uses 2e-4 for cheetah-run and 1e-3 elsewhere (presets `dmc100k-cheetah`, ...).
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    encoder_lr: float = 1e-3  # the CURL loss's optimiser (encoder and W)
    alpha_lr: float = 1e-4
    alpha_beta1: float = 0.5
    init_temperature: float = 0.1
    critic_tau: float = 0.01  # Q heads
    encoder_tau: float = 0.05  # the target (= key) encoder
    actor_update_every: int = 2  # actor and temperature
    target_update_every: int = 2
    curl_update_every: int = 1  # `cpc_update_freq` in the released code
    log_std_min: float = -10.0
    log_std_max: float = 2.0


# The paper's loop: render 100x100 for cropping, 1000 seed agent steps (4000 frames at the
# common action repeat 4; 1000 x repeat frames to match other tasks exactly), a replay of 100k
# transitions, evaluation over 10 episodes.
RUN_DEFAULTS = dict(image_size=100, seed_frames=4_000, replay_capacity=100_000,
                    eval_every_frames=10_000, eval_episodes=10)

_CHEETAH_LR = dict(actor_lr=2e-4, critic_lr=2e-4, encoder_lr=2e-4)
# 100k frames are at most 50k agent steps (action repeat >= 2): a 60k-frame replay holds them all.
_DMC100K = dict(frames=100_000, replay_capacity=60_000)
_DMC500K = dict(frames=500_000, replay_capacity=100_000)  # the paper's replay size

PRESETS = {
    "dmc100k": _DMC100K,
    "dmc500k": _DMC500K,
    "dmc100k-cheetah": _DMC100K | _CHEETAH_LR,
    "dmc500k-cheetah": _DMC500K | _CHEETAH_LR,
    # MishaLaskin/curl's scripts: batch 128 (its loop otherwise matches RUN_DEFAULTS).
    "released": dict(batch_size=128),
    # dmc:cartpole-balance (action repeat 8) on the 2-core CPU in about 20 minutes: 2750
    # updates at batch 64, about 0.33 s each here (the CURL step adds a second encoder pass).
    "cpu-smoke": dict(batch_size=64, hidden_dims=(256, 256), frames=24_000, seed_frames=2_000,
                      replay_capacity=4_000, eval_every_frames=6_000, eval_episodes=5),
}


def curl_encoder(obs_shape, feature_dim: int) -> ConvEncoder:
    """SAC-AE's conv encoder as CURL's code builds it: no tanh after the LayerNorm."""
    return ConvEncoder(obs_shape, feature_dim, output_tanh=False, init="delta_orthogonal")


class Agent:
    name = "curl"
    batch_kind = "transitions"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.action_dim = int(np.prod(action_space.shape))
        if len(obs_space.shape) != 3:
            raise ValueError(f"CURL learns from pixels, got observations of shape {obs_space.shape}")
        channels, height, width = obs_space.shape
        if min(height, width) < config.crop_size:
            raise ValueError(f"CURL crops {config.crop_size}x{config.crop_size} from observations of "
                             f"{height}x{width}: render larger (RunConfig image_size=100)")
        crop_shape = (channels, config.crop_size, config.crop_size)

        self.encoder = curl_encoder(crop_shape, config.feature_dim)
        self.actor_encoder = curl_encoder(crop_shape, config.feature_dim)
        self.actor_encoder.convs = self.encoder.convs  # tied convs; the actor sees them detached
        self.critic = TwinQ(config.feature_dim, self.action_dim, config.hidden_dims)
        self.actor = TanhGaussianActor(config.feature_dim, self.action_dim, config.hidden_dims,
                                       log_std_bounds=(config.log_std_min, config.log_std_max))
        self.temperature = Temperature(config.init_temperature, target_entropy=-float(self.action_dim))
        self.critic_target = copy.deepcopy(self.critic)
        self.encoder_target = copy.deepcopy(self.encoder)
        self.bilinear = Bilinear(config.feature_dim)
        for module in self.modules().values():
            module.to(self.device)

        self.actor_opt = torch.optim.Adam([*self.actor.parameters(), *self.actor_encoder.head.parameters()],
                                          lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.encoder.parameters()],
                                           lr=config.critic_lr)
        self.alpha_opt = torch.optim.Adam(self.temperature.parameters(), lr=config.alpha_lr,
                                          betas=(config.alpha_beta1, 0.999))
        # One optimiser for the CURL loss (the released code has two that both hold the encoder).
        self.curl_opt = torch.optim.Adam([*self.encoder.parameters(), *self.bilinear.parameters()],
                                         lr=config.encoder_lr)

    @property
    def key_encoder(self) -> ConvEncoder:
        """CURL's momentum key encoder is the critic target's encoder (one module, not a copy)."""
        return self.encoder_target

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "actor_encoder": self.actor_encoder, "critic": self.critic,
                "actor": self.actor, "temperature": self.temperature, "bilinear": self.bilinear,
                "critic_target": self.critic_target, "encoder_target": self.encoder_target}

    def sampler_options(self) -> dict:
        return {"n_step": self.config.n_step, "gamma": self.config.gamma}

    # -- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        obs = center_crop(torch.as_tensor(obs, device=self.device), self.config.crop_size)
        action, _ = self.actor(self.actor_encoder(obs), deterministic=not explore)
        return action.cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        raw_obs = batch["obs"].to(self.device)
        # Independent crops of s and s' for SAC, and a second crop of s as the CURL key; the
        # query is the critic's own crop of s (as in the released code).
        obs = random_crop(raw_obs, self.config.crop_size)
        next_obs = random_crop(batch["next_obs"].to(self.device), self.config.crop_size)
        positive = random_crop(raw_obs, self.config.crop_size)
        action = batch["action"].to(self.device).float()
        reward = batch["reward"].to(self.device)
        discount = batch["discount"].to(self.device)

        metrics = self.update_critic(obs, action, reward, discount, next_obs)
        if step % self.config.actor_update_every == 0:
            metrics.update(self.update_actor(obs))
        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.critic_tau)
            soft_update(self.encoder_target, self.encoder, self.config.encoder_tau)
        if step % self.config.curl_update_every == 0:
            metrics.update(self.update_curl(obs, positive))
        return {name: float(value) for name, value in zip(metrics, torch.stack(list(metrics.values())).tolist())}

    @torch.no_grad()
    def td_target(self, reward, discount, next_obs) -> torch.Tensor:
        next_action, next_log_prob = self.actor(self.actor_encoder(next_obs))
        target_q1, target_q2 = self.critic_target(self.encoder_target(next_obs), next_action)
        next_value = torch.min(target_q1, target_q2) - self.temperature.alpha * next_log_prob
        return n_step_target(reward, discount, next_value)

    def update_critic(self, obs, action, reward, discount, next_obs) -> dict[str, torch.Tensor]:
        target = self.td_target(reward, discount, next_obs)
        q1, q2 = self.critic(self.encoder(obs), action)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"critic_loss": loss.detach(), "q": q1.detach().mean()}

    def update_actor(self, obs) -> dict[str, torch.Tensor]:
        # One conv pass serves both heads: the actor trains only its own head on detached conv
        # features, and the critic scores its actions on features that carry no gradient.
        with torch.no_grad():
            conv = self.encoder.forward_conv(obs)
            critic_features = self.encoder.head(conv)
        action, log_prob = self.actor(self.actor_encoder.head(conv))
        q1, q2 = self.critic(critic_features, action)
        loss = (self.temperature.alpha.detach() * log_prob - torch.min(q1, q2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()

        alpha_loss = self.temperature.loss(log_prob)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": loss.detach(), "alpha": self.temperature.alpha.detach(),
                "entropy": -log_prob.detach().mean()}

    def contrastive_loss(self, anchor, positive, metrics: dict | None = None) -> torch.Tensor:
        """InfoNCE over the batch: logits q W k^T, row max subtracted, labels on the diagonal."""
        query = self.encoder(anchor)
        with torch.no_grad():
            key = self.key_encoder(positive)
        return curl_loss(self.bilinear(query, key), metrics)

    def update_curl(self, anchor, positive) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        loss = self.contrastive_loss(anchor, positive, stats)
        self.curl_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.curl_opt.step()
        return {"curl_loss": loss.detach(), "curl_accuracy": stats["accuracy"]}

    # -- checkpoints --------------------------------------------------------------------------

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                "alpha_opt": self.alpha_opt, "curl_opt": self.curl_opt}

    def state_dict(self) -> dict:
        state = {name: module.state_dict() for name, module in self.modules().items()}
        state.update({name: opt.state_dict() for name, opt in self._optimizers().items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        for name, opt in self._optimizers().items():
            opt.load_state_dict(state[name])
