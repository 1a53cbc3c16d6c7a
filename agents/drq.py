"""DrQ: Data-regularized Q (Kostrikov, Yarats, Fergus 2020, "Image Augmentation Is All You Need").

DMC form (`drq`): SAC from pixels with the SAC-AE conv encoder, where every observation the
critic sees is randomly shifted (replicate-pad 4, random 84x84 crop, per sample). The Q target is
averaged over K augmentations of s' and the critic loss over M augmentations of s (paper eq. 3-4,
K = M = 2). The critic's loss trains the encoder; the actor shares its convs but sees them
detached. The target critic (encoder included) follows by Polyak averaging.

Atari form (`drq-eps`, the `ATARI` namespace below): double DQN with a dueling head, 10-step
returns, the same random shift on s and s', Huber loss, the target network copied every update,
on the Atari-100k protocol.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.augment import random_shift
from crl.encoders import ConvEncoder, resolve_precision
from crl.rl import (Checkpointable, DuelingHead, TanhGaussianActor, Temperature, TwinQ, double_dqn_target,
                    epsilon_greedy, linear_epsilon, metrics_to_floats, n_step_from_sequence, n_step_target, optimize,
                    require_continuous_actions, require_discrete_actions, sac_actor_step, soft_update)


# ============================================================================================
# DrQ on DeepMind Control: SAC + random shift
# ============================================================================================


@dataclass
class Config:
    """Paper defaults (DrQ Table 1)."""

    gamma: float = 0.99
    n_step: int = 1
    batch_size: int = 512  # the paper; the released code uses 128 (preset `released`)
    hidden_dims: tuple[int, ...] = (1024, 1024)
    feature_dim: int = 50
    lr: float = 1e-3  # actor, critic, encoder and temperature (2e-4 on cheetah-run: TASK_SETTINGS)
    alpha_beta1: float = 0.5  # paper: Adam (0.5, 0.999) for the temperature; released code: 0.9
    init_temperature: float = 0.1
    critic_tau: float = 0.01  # the target critic and its encoder
    actor_update_every: int = 2
    target_update_every: int = 2
    image_pad: int = 4
    target_augmentations: int = 2  # K: augmentations of s' averaged in the target
    critic_augmentations: int = 2  # M: augmentations of s averaged in the critic loss
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    # "float32" (the paper's), "bfloat16" (the conv encoder under bf16 autocast, see
    # crl/encoders.py) or "auto" (bfloat16 where it measures faster: resolve_precision)
    precision: str = "float32"


# The loop settings of the paper: one update per agent step after 1000 seed agent steps of uniform
# actions (crl.train.build_configs makes seed_frames 1000 x the task's action repeat, 8000 frames
# on cartpole, unless a preset or --set gives it; the 4000 here is for suites other than dmc: and
# dmc-state:), a replay of 100k transitions. Action repeat is the environment's default, PlaNet's
# per-task repeats as in the paper.
SEED_AGENT_STEPS = 1_000
RUN_DEFAULTS = dict(update_every=1, seed_frames=4_000, replay_capacity=100_000)

PRESETS = {
    # the released code's batch and temperature optimiser (it also sums, not averages, the
    # critic loss over the M augmentations: not reproduced)
    "released": dict(batch_size=128, alpha_beta1=0.9),
    # replay sized to hold the whole budget at action repeat 2 (the smallest DMC repeat)
    "dmc100k": dict(frames=100_000, replay_capacity=51_000),
    "dmc500k": dict(frames=500_000),  # the paper's 100k-transition replay (RUN_DEFAULTS)
    # the paper's one per-task exception, lr 2e-4 on cheetah-run, which `dmc100k` / `dmc500k` now
    # take there by themselves (TASK_SETTINGS); kept for the commands that name them
    "dmc100k-cheetah": dict(frames=100_000, replay_capacity=51_000, lr=2e-4),
    "dmc500k-cheetah": dict(frames=500_000, lr=2e-4),
    # dmc:cartpole-balance (action repeat 8) on a 2-core CPU: 9.5k updates in 80k frames, each on
    # 2 x 32 shifted observations in the critic and 2 x 32 in the target. Alone on a 2-core AMD
    # EPYC with bf16 convs: 987 at 56k frames (seed 0, 19 min) and 989 at 64k (seed 1, 22 min);
    # fp32 (Intel Xeon without AMX): 993 at 48k (seed 1, 26 min); Intel Xeon with AMX: 951 at 64k
    # (seed 0, 15 min), seed 1 only past 64k: 745 at 72k (17 min), 982 at 80k (19 min), hence 80k
    # frames (64k until 2026-12-04). Before ~40k frames it stays near a random policy's ~270
    # (163-399 at 8k-32k, BENCHMARKS.md). The replay holds the whole run at any action repeat >= 2.
    "cpu-smoke": dict(batch_size=32, hidden_dims=(256, 256), frames=80_000, seed_frames=4_000,
                      replay_capacity=41_000, eval_every_frames=8_000, eval_episodes=5, precision="auto"),
}


# The paper's one per-task setting (Table 1): lr 2e-4 on cheetah-run, 1e-3 elsewhere (applied by
# crl.train.build_configs unless a preset or --set gives lr).
TASK_SETTINGS = {"dmc:cheetah-run": {"lr": 2e-4}}


class Agent(Checkpointable):
    name = "drq"
    batch_kind = "transitions"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        if len(obs_space.shape) != 3:
            raise ValueError(f"DrQ learns from pixels: expected (C, H, W) observations, got {obs_space.shape}")
        self.config = config
        self.device = torch.device(device)
        action_dim = int(np.prod(action_space.shape))

        dtype = resolve_precision(config.precision, device)
        self.encoder = ConvEncoder(obs_space.shape, config.feature_dim, init="orthogonal", compute_dtype=dtype)
        self.actor_encoder = ConvEncoder(obs_space.shape, config.feature_dim, init="orthogonal", compute_dtype=dtype)
        self.actor_encoder.convs = self.encoder.convs  # tied convs; the actor sees them detached
        self.critic = TwinQ(config.feature_dim, action_dim, config.hidden_dims)
        self.actor = TanhGaussianActor(config.feature_dim, action_dim, config.hidden_dims,
                                       log_std_bounds=(config.log_std_min, config.log_std_max))
        self.temperature = Temperature(config.init_temperature, target_entropy=-float(action_dim))
        self.critic_target = copy.deepcopy(self.critic)
        self.encoder_target = copy.deepcopy(self.encoder)
        for module in self.modules().values():
            module.to(self.device)

        self.actor_opt = torch.optim.Adam([*self.actor.parameters(), *self.actor_encoder.head.parameters()],
                                          lr=config.lr)
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.encoder.parameters()], lr=config.lr)
        self.alpha_opt = torch.optim.Adam(self.temperature.parameters(), lr=config.lr,
                                          betas=(config.alpha_beta1, 0.999))

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "actor_encoder": self.actor_encoder, "critic": self.critic,
                "actor": self.actor, "temperature": self.temperature,
                "critic_target": self.critic_target, "encoder_target": self.encoder_target}

    def sampler_options(self) -> dict:
        return {"n_step": self.config.n_step, "gamma": self.config.gamma}

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        features = self.actor_encoder(torch.as_tensor(obs, device=self.device))
        action, _ = self.actor(features, deterministic=not explore)
        return action.cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def augment(self, obs: torch.Tensor, copies: int) -> torch.Tensor:
        """`copies` independent random shifts of the batch, stacked along the batch axis."""
        layout = self.encoder.memory_format
        return torch.cat([random_shift(obs, self.config.image_pad, memory_format=layout) for _ in range(copies)])

    def update(self, batch: dict, step: int) -> dict[str, float]:
        obs, next_obs = batch["obs"].to(self.device), batch["next_obs"].to(self.device)
        action = batch["action"].to(self.device).float()
        reward, discount = batch["reward"].to(self.device), batch["discount"].to(self.device)

        target = self.target_q(reward, discount, next_obs)
        obs_aug = self.augment(obs, self.config.critic_augmentations)
        metrics = self.update_critic(obs_aug, action, target)
        if step % self.config.actor_update_every == 0:
            metrics.update(self.update_actor(obs_aug[: len(obs)]))  # the first augmentation of s
        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.critic_tau)
            soft_update(self.encoder_target, self.encoder, self.config.critic_tau)
        return metrics_to_floats(metrics)

    @torch.no_grad()
    def target_q(self, reward, discount, next_obs) -> torch.Tensor:
        """y = 1/K sum_k [r + discount * V(aug_k(s'))], V = min of the target Qs - alpha log pi."""
        k = self.config.target_augmentations
        next_obs = self.augment(next_obs, k)
        next_action, next_log_prob = self.actor(self.actor_encoder(next_obs))
        q1, q2 = self.critic_target(self.encoder_target(next_obs), next_action)
        next_value = torch.min(q1, q2) - self.temperature.alpha * next_log_prob
        return n_step_target(reward.repeat(k), discount.repeat(k), next_value).view(k, -1).mean(0)

    def update_critic(self, obs_aug, action, target) -> dict[str, torch.Tensor]:
        """MSE to the target, averaged over the M augmentations of s stacked in `obs_aug`."""
        m = len(obs_aug) // len(target)
        q1, q2 = self.critic(self.encoder(obs_aug), action.repeat(m, 1))
        target = target.repeat(m)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        optimize(self.critic_opt, loss)
        return {"critic_loss": loss.detach(), "q": q1.detach().mean()}

    def update_actor(self, obs) -> dict[str, torch.Tensor]:
        # One conv pass serves both heads: the actor trains only its own head on detached conv
        # features, and the critic scores its actions on features that carry no gradient.
        with torch.no_grad():
            conv = self.encoder.forward_conv(obs)
            critic_features = self.encoder.forward_head(conv)
        return sac_actor_step(self.actor, self.critic, self.temperature, self.actor_opt, self.alpha_opt,
                              self.actor_encoder.forward_head(conv), critic_features)

    # -- checkpoints --------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt, "alpha_opt": self.alpha_opt}


# ============================================================================================
# DrQ-epsilon on Atari-100k: double DQN + dueling + 10-step returns + random shift
# ============================================================================================
#
# Sources. "paper": the DrQ paper's Atari-100k hyperparameter table; "Dopamine": its DrQ.gin and
# DrQ_eps.gin (google/dopamine, labs/atari_100k), which reproduce the paper's agent; "DrQ(eps)":
# Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice"), which renamed DrQ
# with the standard DQN epsilons DrQ(eps) and whose numbers are the ones Atari-100k tables cite.


@dataclass
class AtariConfig:
    gamma: float = 0.99  # paper, Dopamine
    n_step: int = 10  # paper, Dopamine (update_horizon)
    batch_size: int = 32  # paper, Dopamine
    lr: float = 1e-4  # paper, Dopamine (from DER)
    adam_eps: float = 1.5e-4  # paper, Dopamine (from DER)
    max_grad_norm: float = 10.0  # paper ("max gradient norm"); Dopamine does not clip
    target_update_every: int = 1  # paper, Dopamine: the target network is the last online one
    hidden_dim: int = 512  # paper: Nature-DQN convs + 512 hidden units, shared by the dueling streams (Dopamine)
    reward_clip: float = 1.0  # paper: rewards clipped to [-1, 1] for learning
    # paper: random shift, pad 4 (offsets -4..4; Dopamine's jax randint draws 0..7 of the 9)
    image_pad: int = 4
    # paper ("random shifts and intensity"), Dopamine: x * (1 + 0.05 clip(N(0, 1), -2, 2)); 0: off
    intensity_scale: float = 0.05
    epsilon_train: float = 0.01  # DrQ(eps); the DrQ paper used 0.1 (preset `atari100k-drq`)
    epsilon_eval: float = 0.001  # DrQ(eps); the DrQ paper used 0.05
    epsilon_decay_steps: int = 5_000  # paper, Dopamine: agent steps of the linear decay from 1
    epsilon_warmup_steps: int = 1_600  # Dopamine: the decay starts after the warm-up (seed_frames / 4)


# paper / Dopamine: learning starts at 1600 transitions (min replay), then one update per agent
# step; terminal on life loss; the replay holds every transition of the 100k-step run.
ATARI_RUN_DEFAULTS = dict(seed_frames=6_400, update_every=1, terminal_on_life_loss=True,
                          replay_capacity=120_000, eval_every_frames=100_000)

ATARI_PRESETS = {
    # 100k agent steps = 400k frames; evaluation as Dopamine's Atari-100k runner (100 episodes)
    "atari100k": dict(frames=400_000, terminal_on_life_loss=True, eval_every_frames=100_000,
                      eval_episodes=100),
    # the same with the DrQ paper's original epsilons (before Agarwal et al.'s DrQ(eps))
    "atari100k-drq": dict(frames=400_000, terminal_on_life_loss=True, eval_every_frames=100_000,
                          eval_episodes=100, epsilon_train=0.1, epsilon_eval=0.05),
    # a 2-core CPU: 10k agent steps, 8400 updates; the paper's agent otherwise. Learns RoadRunner
    # in it (eval at 40k frames 933 and 900 on seeds 0 and 1, random 15 and 5; 7-15 min), not
    # Pong, Breakout or Freeway (BENCHMARKS.md, "Other runs")
    "cpu-smoke": dict(frames=40_000, replay_capacity=12_000, eval_every_frames=20_000, eval_episodes=3),
}


def random_intensity(obs: torch.Tensor, scale: float) -> torch.Tensor:
    """Multiplies each sample by 1 + scale * clip(N(0, 1), -2, 2) (SPR / DrQ's Atari augmentation)."""
    noise = torch.randn(obs.shape[0], 1, 1, 1, device=obs.device).clamp(-2.0, 2.0)
    return obs * (1.0 + scale * noise)


class AtariQNetwork(nn.Module):
    """Nature-DQN convs (Mnih et al. 2015: 32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1,
    ReLU) on pixels / 255, then Dopamine's dueling head (one shared 512-unit layer, then linear
    value and advantage heads), as in DrQ-epsilon's released code."""

    def __init__(self, obs_shape, num_actions: int, hidden_dim: int = 512):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            repr_dim = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.head = DuelingHead(repr_dim, num_actions, hidden_dim, shared_hidden=True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(obs.float() / 255.0))


class AtariAgent(Checkpointable):
    name = "drq-eps"
    # Windows of n steps rather than n-step transitions: the replay sums raw rewards, and DQN
    # clips each reward before summing.
    batch_kind = "sequences"

    def __init__(self, obs_space, action_space, config: AtariConfig, device: str | torch.device = "cpu"):
        require_discrete_actions(self.name, action_space)
        self.config = config
        self.device = torch.device(device)
        self.num_actions = int(action_space.n)
        self.q_net = AtariQNetwork(obs_space.shape, self.num_actions, config.hidden_dim).to(self.device)
        self.target_net = copy.deepcopy(self.q_net)
        self.opt = torch.optim.Adam(self.q_net.parameters(), lr=config.lr, eps=config.adam_eps)
        self.agent_steps = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"q_net": self.q_net, "target_net": self.target_net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def sampler_options(self) -> dict:
        return {"length": self.config.n_step, "pad": True}

    # -- acting -------------------------------------------------------------------------------

    def set_progress(self, frames: int, agent_steps: int, updates: int) -> None:
        self.agent_steps = agent_steps

    @property
    def epsilon(self) -> float:
        c = self.config
        return linear_epsilon(self.agent_steps, c.epsilon_decay_steps, c.epsilon_train, c.epsilon_warmup_steps)

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        q = self.q_net(torch.as_tensor(obs, device=self.device))
        epsilon = self.epsilon if explore else self.config.epsilon_eval
        return epsilon_greedy(q, epsilon).cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        obs = random_shift(obs, self.config.image_pad).float()
        return random_intensity(obs, self.config.intensity_scale) if self.config.intensity_scale else obs

    def update(self, batch: dict, step: int) -> dict[str, float]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        t = n_step_from_sequence(batch, self.config.gamma, self.config.reward_clip)
        obs, next_obs = self.augment(t["obs"]), self.augment(t["next_obs"])

        target = self.td_target(t["reward"], t["discount"], next_obs)
        q = self.q_net(obs).gather(1, t["action"].long()[:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q, target)  # Huber, delta 1
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.q_net.parameters(), self.config.max_grad_norm)
        self.opt.step()
        if step % self.config.target_update_every == 0:
            soft_update(self.target_net, self.q_net, 1.0)
        return metrics_to_floats({"q_loss": loss.detach(), "q": q.detach().mean(), "grad_norm": grad_norm}) | {
            "epsilon": float(self.epsilon)}  # a number already: no copy to the device and back

    @torch.no_grad()
    def td_target(self, reward, discount, next_obs) -> torch.Tensor:
        """Double DQN: the online network picks a' at s', the target network evaluates it."""
        return double_dqn_target(reward, discount, self.q_net(next_obs), self.target_net(next_obs))

    # -- checkpoints --------------------------------------------------------------------------


ATARI = SimpleNamespace(Agent=AtariAgent, Config=AtariConfig, PRESETS=ATARI_PRESETS, RUN_DEFAULTS=ATARI_RUN_DEFAULTS)
