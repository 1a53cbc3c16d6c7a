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
it once; its crop offsets are drawn from [0, 15], crl.augment.random_crop's from [0, 16]; its
tanh log-probability correction is log(1 - tanh(u)^2 + 1e-6), crl.rl's the exact softplus form
(as DrQ's; they differ only near saturated actions).

The Atari form (`curl-rainbow`, the `ATARI` namespace at the end of this file) adds the same loss
to Data-Efficient Rainbow; its own notes are there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crl.augment import center_crop, random_crop
from crl.contrastive import Bilinear, curl_loss
from crl.encoders import ConvEncoder, resolve_precision
from crl.rl import (Checkpointable, DuelingHead, TanhGaussianActor, Temperature, TwinQ, categorical_projection,
                    epsilon_greedy, metrics_to_floats, n_step_from_sequence, n_step_target, optimize,
                    require_continuous_actions, require_discrete_actions, reset_noise, sac_actor_step, soft_update)


@dataclass
class Config:
    gamma: float = 0.99
    n_step: int = 1
    batch_size: int = 512  # the paper; the released code runs 128 (preset `released`)
    crop_size: int = 84  # training crop from the RunConfig.image_size (100) render
    hidden_dims: tuple[int, ...] = (1024, 1024)
    feature_dim: int = 50
    # The paper uses 2e-4 for cheetah-run and 1e-3 elsewhere (TASK_SETTINGS).
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
    # "float32" (the paper's), "bfloat16" (the conv encoder under bf16 autocast, see
    # crl/encoders.py) or "auto" (bfloat16 where it measures faster: resolve_precision)
    precision: str = "float32"


# The paper's loop: render 100x100 for cropping, a replay of 100k transitions, evaluation over 10
# episodes, and 1000 seed agent steps of uniform actions (`init_steps`): crl.train.build_configs
# makes seed_frames 1000 x the task's action repeat (8000 frames on cartpole) unless a preset or
# --set gives it; the 4000 here is for suites other than dmc: and dmc-state:.
SEED_AGENT_STEPS = 1_000
RUN_DEFAULTS = dict(image_size=100, seed_frames=4_000, replay_capacity=100_000,
                    eval_every_frames=10_000, eval_episodes=10)

_CHEETAH_LR = dict(actor_lr=2e-4, critic_lr=2e-4, encoder_lr=2e-4)
# 100k frames are at most 50k agent steps (action repeat >= 2): a 60k-frame replay holds them all.
_DMC100K = dict(frames=100_000, replay_capacity=60_000)
_DMC500K = dict(frames=500_000, replay_capacity=100_000)  # the paper's replay size

PRESETS = {
    "dmc100k": _DMC100K,
    "dmc500k": _DMC500K,
    # `dmc100k` / `dmc500k` take the cheetah lr there by themselves (TASK_SETTINGS); these two are
    # kept for the commands that name them
    "dmc100k-cheetah": _DMC100K | _CHEETAH_LR,
    "dmc500k-cheetah": _DMC500K | _CHEETAH_LR,
    # MishaLaskin/curl's scripts: batch 128 (its loop otherwise matches RUN_DEFAULTS).
    "released": dict(batch_size=128),
    # dmc:cartpole-balance (action repeat 8) on the 2-core CPU: 2750 updates at batch 64, about
    # 0.33 s each here with fp32 convs (the CURL step adds a second encoder pass); bf16 convs
    # where the CPU has bf16 units.
    "cpu-smoke": dict(batch_size=64, hidden_dims=(256, 256), frames=24_000, seed_frames=2_000,
                      replay_capacity=4_000, eval_every_frames=6_000, eval_episodes=5, precision="auto"),
}


# The paper's one per-task setting (its hyperparameter table): lr 2e-4 on cheetah-run (applied by
# crl.train.build_configs to each rate a preset or --set does not give).
TASK_SETTINGS = {"dmc:cheetah-run": _CHEETAH_LR}


def curl_encoder(obs_shape, feature_dim: int, compute_dtype: torch.dtype = torch.float32) -> ConvEncoder:
    """SAC-AE's conv encoder as CURL's code builds it: no tanh after the LayerNorm."""
    return ConvEncoder(obs_shape, feature_dim, output_tanh=False, init="delta_orthogonal",
                       compute_dtype=compute_dtype)


class Agent(Checkpointable):
    name = "curl"
    batch_kind = "transitions"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
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

        dtype = resolve_precision(config.precision, device)
        self.encoder = curl_encoder(crop_shape, config.feature_dim, dtype)
        self.actor_encoder = curl_encoder(crop_shape, config.feature_dim, dtype)
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
        size, layout = self.config.crop_size, self.encoder.memory_format
        obs = random_crop(raw_obs, size, memory_format=layout)
        next_obs = random_crop(batch["next_obs"].to(self.device), size, memory_format=layout)
        positive = random_crop(raw_obs, size, memory_format=layout)
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
        return metrics_to_floats(metrics)

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

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                "alpha_opt": self.alpha_opt, "curl_opt": self.curl_opt}


# ============================================================================================
# CURL on Atari-100k: Data-Efficient Rainbow + the same InfoNCE loss ("curl-rainbow")
# ============================================================================================
#
# Sources. "paper": CURL's appendix B and Table 4 (Atari100k hyperparameters), which adopts "the
# exact same hyperparameters" as Data-Efficient Rainbow; "DER": van Hasselt et al. 2019;
# "code": aravindsrinivas/curl_rainbow (Kaixhin's Rainbow with CURL added), which produced the
# paper's numbers and fills in what the paper leaves out (the contrastive head, the crop).
#
# Deviation: no prioritised replay (the paper: priority exponent 0.5, correction 0.4 -> 1). The
# replay samples uniformly and the loss carries no importance weights.
# What the RL loss sees: the code feeds the C51 loss the unaugmented s and s'; only the CURL
# query and key are augmented. The paper says no more than "random crop (train)"; we follow the code.


@dataclass
class AtariConfig:
    gamma: float = 0.99  # paper
    n_step: int = 20  # paper, DER
    batch_size: int = 32  # paper
    lr: float = 1e-4  # paper
    # DER and the code. Table 4 of the paper prints 0.000015, while the text says DER's values
    # are used unchanged: we read it as a typo.
    adam_eps: float = 1.5e-4
    max_grad_norm: float = 10.0  # paper
    target_update_every: int = 2000  # paper: the target network is copied every 2000 updates
    hidden_dim: int = 256  # paper: Q network hidden units (also the contrastive head's, code)
    num_atoms: int = 51  # paper
    v_min: float = -10.0  # code, Rainbow (the paper gives only the 51 bins)
    v_max: float = 10.0
    noisy_sigma0: float = 0.1  # paper ("noisy nets parameter"), DER
    reward_clip: float = 1.0  # paper: [-1, 1]
    # paper: the RL and contrastive losses weighted equally, except 0.05 on Pong, Freeway, Boxing
    # and PrivateEye (preset `atari100k-low-curl`; the code uses 0.01 there)
    curl_coef: float = 1.0
    curl_tau: float = 0.001  # paper: "momentum (EMA for CURL)"; the key encoder moves after every update
    curl_dim: int = 128  # code: size of the contrastive embedding (not in the paper)
    # The code multiplies the logits by 0.1 before the cross-entropy, the paper does not
    # (preset `atari100k-released`). What it changes: the two losses share one gradient-norm clip
    # (max_grad_norm), and at 1.0 the InfoNCE gradient's norm is 15-90 over the first 300 updates
    # against C51's 0.1-0.3 (Pong, batch 32), so the clip shrinks the C51 gradient 1.5-9x there;
    # at 0.1 it is 0.5-5.5 and the clip rarely engages. In 40k frames of RoadRunner the agent
    # learned at 0.1 on both seeds tried, at 1.0 on one of the two (preset `cpu-smoke`).
    curl_logit_scale: float = 1.0
    image_pad: int = 4  # code: random crop of H - 4, replicate-pad 4, random crop of H
    epsilon_eval: float = 0.001  # code: epsilon-greedy evaluation with the noise-free network


# paper: learning starts at 1600 transitions, one update per agent step, terminal on life loss, a
# replay of 100k transitions (the whole run); the code evaluates 10 episodes every 10k agent steps.
# Deviation: our loop acts uniformly at random before learning starts, the code acts with the
# (untrained) noisy network.
ATARI_RUN_DEFAULTS = dict(seed_frames=6_400, update_every=1, terminal_on_life_loss=True,
                          replay_capacity=120_000, eval_every_frames=40_000, eval_episodes=10)

_ATARI100K = dict(frames=400_000, terminal_on_life_loss=True, eval_every_frames=40_000, eval_episodes=10)
ATARI_PRESETS = {
    "atari100k": _ATARI100K,
    "atari100k-low-curl": _ATARI100K | dict(curl_coef=0.05),  # the paper's Pong, Freeway, Boxing, PrivateEye
    "atari100k-released": _ATARI100K | dict(curl_logit_scale=0.1),
    # The 2-core CPU: 10k agent steps, 8400 updates, 7-9 min alone on an AMD EPYC. Deviation: the
    # released code's logit scale 0.1 (see AtariConfig.curl_logit_scale): on RoadRunner it scored
    # 950 at 20k and 40k frames on seeds 0 and 1; the paper's 1.0 scored 0 / 0 on seed 0 and 950 /
    # 950 on seed 1 (random 15); BENCHMARKS.md, "Other runs". Too short for Pong, Breakout, Freeway.
    "cpu-smoke": dict(frames=40_000, replay_capacity=12_000, eval_every_frames=20_000, eval_episodes=2,
                      curl_logit_scale=0.1),
}


def random_crop_and_shift(obs: torch.Tensor, pad: int) -> torch.Tensor:
    """The code's Atari augmentation (kornia RandomCrop(80), ReplicationPad2d(4), RandomCrop(84) on
    84x84): a random (H - pad) crop, replicate-padded by `pad` and randomly cropped back to H x W;
    one draw per sample, shared by its stacked frames. Float32 out, pixel values unchanged (CUDA's
    replicate padding takes no uint8)."""
    height, width = obs.shape[-2:]
    cropped = random_crop(obs, (height - pad, width - pad)).float()
    return random_crop(F.pad(cropped, (pad, pad, pad, pad), mode="replicate"), (height, width))


class DataEfficientEncoder(nn.Module):
    """DER's convs (paper Table 4): 32 5x5 stride 5, 64 5x5 stride 5, ReLU, on pixels / 255."""

    def __init__(self, in_channels: int, image_shape: tuple[int, int]):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(in_channels, 32, 5, stride=5), nn.ReLU(),
                                   nn.Conv2d(32, 64, 5, stride=5), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            self.repr_dim = self.convs(torch.zeros(1, in_channels, *image_shape)).shape[1]  # 576 at 84x84

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(obs.float() / 255.0)


class RainbowNetwork(nn.Module):
    """DER's encoder and a noisy dueling C51 head: logits (B, actions, atoms) of the return distribution."""

    def __init__(self, obs_shape, num_actions: int, config: AtariConfig):
        super().__init__()
        self.encoder = DataEfficientEncoder(obs_shape[0], obs_shape[1:])
        self.head = DuelingHead(self.encoder.repr_dim, num_actions, config.hidden_dim, config.num_atoms,
                                noisy=True, sigma0=config.noisy_sigma0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))


def contrastive_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The code's CURL head on the conv features: Linear -> LayerNorm -> ReLU -> Linear -> LayerNorm,
    LayerNorms without gain or bias, weights U[0, 1), biases zero."""
    head = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim, elementwise_affine=False),
                         nn.ReLU(), nn.Linear(hidden_dim, out_dim), nn.LayerNorm(out_dim, elementwise_affine=False))
    for linear in (head[0], head[3]):
        nn.init.uniform_(linear.weight, 0.0, 1.0)
        nn.init.zeros_(linear.bias)
    return head


class AtariAgent(Checkpointable):
    name = "curl-rainbow"
    # Windows of n steps: DQN clips each reward before the n-step sum, the replay sums raw ones.
    batch_kind = "sequences"

    def __init__(self, obs_space, action_space, config: AtariConfig, device: str | torch.device = "cpu"):
        require_discrete_actions(self.name, action_space)
        self.config = config
        self.device = torch.device(device)
        self.q_net = RainbowNetwork(obs_space.shape, int(action_space.n), config)
        self.projection = contrastive_head(self.q_net.encoder.repr_dim, config.hidden_dim, config.curl_dim)
        self.bilinear = Bilinear(config.curl_dim)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        # The query encoder shares the online convs; the key encoder is its momentum (EMA) copy.
        self.query_encoder = nn.Sequential(self.q_net.encoder, self.projection)
        self.key_encoder = copy.deepcopy(self.query_encoder).requires_grad_(False)
        for module in self.modules().values():
            module.to(self.device)
        self.support = torch.linspace(config.v_min, config.v_max, config.num_atoms, device=self.device)
        # One loss, one optimiser: C51 + curl_coef * CURL, clipped together (as the code).
        self.parameters = [*self.q_net.parameters(), *self.projection.parameters(), *self.bilinear.parameters()]
        self.opt = torch.optim.Adam(self.parameters, lr=config.lr, eps=config.adam_eps)

    def modules(self) -> dict[str, nn.Module]:
        return {"q_net": self.q_net, "projection": self.projection, "bilinear": self.bilinear,
                "target_net": self.target_net, "key_encoder": self.key_encoder}

    def sampler_options(self) -> dict:
        return {"length": self.config.n_step, "pad": True}

    def q_values(self, logits: torch.Tensor) -> torch.Tensor:
        """E[Z(s, a)] = sum_j z_j p_j(s, a)."""
        return (logits.softmax(-1) * self.support).sum(-1)

    # -- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        obs = torch.as_tensor(obs, device=self.device)
        if explore:  # noisy nets explore: one noise draw per agent step, kept for the update after it
            reset_noise(self.q_net)
            return self.q_values(self.q_net(obs)).argmax(1).cpu().numpy()
        self.q_net.eval()  # noisy layers at their mean weights
        q = self.q_values(self.q_net(obs))
        self.q_net.train()
        return epsilon_greedy(q, self.config.epsilon_eval).cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        t = n_step_from_sequence(batch, self.config.gamma, self.config.reward_clip)
        obs, action = t["obs"], t["action"].long()

        target = self.target_distribution(t["reward"], t["discount"], t["next_obs"])
        log_probs = self.q_net(obs).log_softmax(-1)[torch.arange(len(obs), device=self.device), action]
        q_loss = -(target * log_probs).sum(1).mean()  # cross-entropy to the projected target
        stats: dict[str, torch.Tensor] = {}
        pad = self.config.image_pad
        contrastive = self.contrastive_loss(random_crop_and_shift(obs, pad), random_crop_and_shift(obs, pad), stats)
        loss = q_loss + self.config.curl_coef * contrastive

        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.opt.step()
        soft_update(self.key_encoder, self.query_encoder, self.config.curl_tau)
        if step % self.config.target_update_every == 0:
            self.target_net.load_state_dict(self.q_net.state_dict())
        metrics = {"q_loss": q_loss.detach(), "curl_loss": contrastive.detach(), "curl_accuracy": stats["accuracy"],
                   "q": (log_probs.detach().exp() * self.support).sum(-1).mean(), "grad_norm": grad_norm}
        return metrics_to_floats(metrics)

    @torch.no_grad()
    def target_distribution(self, reward, discount, next_obs) -> torch.Tensor:
        """C51 with double Q: the online network (its current noise) picks a* = argmax_a E[Z(s', a)],
        the target network (fresh noise) gives p(s', a*), projected onto the support after
        r + discount * z (discount = gamma^m, 0 at termination)."""
        next_action = self.q_values(self.q_net(next_obs)).argmax(1)
        reset_noise(self.target_net)
        next_probs = self.target_net(next_obs).softmax(-1)[torch.arange(len(next_obs), device=self.device), next_action]
        return categorical_projection(reward, discount, next_probs, self.support,
                                      bounds=(self.config.v_min, self.config.v_max))

    def contrastive_loss(self, anchor, positive, metrics: dict | None = None) -> torch.Tensor:
        """InfoNCE over the batch: logits q W k^T, keys from the momentum encoder without gradient."""
        query = self.query_encoder(anchor)
        with torch.no_grad():
            key = self.key_encoder(positive)
        return curl_loss(self.config.curl_logit_scale * self.bilinear(query, key), metrics)

    # -- checkpoints --------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}


ATARI = SimpleNamespace(Agent=AtariAgent, Config=AtariConfig, PRESETS=ATARI_PRESETS, RUN_DEFAULTS=ATARI_RUN_DEFAULTS)
