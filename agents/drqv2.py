"""DrQ-v2 (Yarats, Fergus, Lazaric, Pinto 2021): "Mastering Visual Continuous Control: Improved
Data-Augmented Reinforcement Learning".

DDPG from pixels with clipped double Q-learning and 3-step returns. Each batch's observations
and next observations are shifted by up to 4 pixels (bilinear, independently per sample and per
call). One conv encoder, trained by the critic's loss only; the actor reads its features
detached. The actor and the critic each own a trunk (Linear -> LayerNorm -> tanh); the critic's
target is a Polyak copy of the critic's trunk and Q heads, and there is no target encoder.
Exploration adds Gaussian noise whose std decays linearly (1.0 -> 0.1) over a duration set by the
task's difficulty; the same std, its noise clipped at 0.3, smooths the target and actor actions.

Released code vs crl, in the replay (crl.replay, shared): an n-step window may start in an
episode's last n - 1 steps, where it holds m < n rewards and bootstraps with gamma^m (the
released sampler never starts one there); and the complete windows of episodes still running
are sampled too (the released one samples only episodes saved when they ended).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crl.augment import random_shift_bilinear
from crl.encoders import DrQV2Encoder, Trunk, resolve_precision
from crl.rl import (Checkpointable, DeterministicActor, TwinQ, frozen, linear_schedule, metrics_to_floats,
                    n_step_target, noisy_action, require_continuous_actions, soft_update)

# Exploration std schedules of the released configs, by task difficulty: linear 1.0 -> 0.1 over
# this many steps.
DIFFICULTY = {"easy": (1.0, 0.1, 100_000), "medium": (1.0, 0.1, 500_000), "hard": (1.0, 0.1, 2_000_000)}
# The released cfgs/task/*.yaml: each task's difficulty (crl's DMC task names).
TASK_DIFFICULTY = {
    **dict.fromkeys(("cartpole-balance", "cartpole-balance_sparse", "cartpole-swingup", "ball_in_cup-catch",
                     "finger-spin", "hopper-stand", "pendulum-swingup", "walker-stand", "walker-walk"), "easy"),
    **dict.fromkeys(("acrobot-swingup", "cartpole-swingup_sparse", "cheetah-run", "finger-turn_easy",
                     "finger-turn_hard", "hopper-hop", "quadruped-walk", "quadruped-run", "reacher-easy",
                     "reacher-hard", "walker-run"), "medium"),
    **dict.fromkeys(("humanoid-stand", "humanoid-walk", "humanoid-run"), "hard"),
}
# ... and the released per-task configs' own settings (cfgs/task/*.yaml; crl.train.build_configs
# applies them unless a preset or --set gives the field): humanoid's lr and feature_dim, walker's
# 1-step returns at batch 512, and quadruped-run's 100k-transition replay (where no preset sizes
# the replay: `dmc100k`'s holds the whole run either way, `dmc500k`'s 260k is larger).
TASK_SETTINGS = {
    **dict.fromkeys(("dmc:humanoid-stand", "dmc:humanoid-walk", "dmc:humanoid-run"), {"lr": 8e-5, "feature_dim": 100}),
    **dict.fromkeys(("dmc:walker-stand", "dmc:walker-walk", "dmc:walker-run"), {"n_step": 1, "batch_size": 512}),
    "dmc:quadruped-run": {"replay_capacity": 100_000},
}

COUNTERS = ("agent_steps", "frames", "updates")

ACTION_SATURATION = 0.99  # |tanh| above this counts as saturated in the `actor_saturation` metric


@dataclass
class Config:
    gamma: float = 0.99
    n_step: int = 3  # walker: 1 (TASK_SETTINGS)
    batch_size: int = 256  # walker: 512 (TASK_SETTINGS)
    lr: float = 1e-4  # encoder, actor and critic (humanoid: 8e-5, TASK_SETTINGS)
    # Not in DrQ-v2 (0 = the paper): action_l2 * mean(a^2) added to the actor loss, the quadratic
    # action penalty of OpenAI Baselines' HER DDPG (`action_l2`). It keeps the tanh from saturating
    # before the critic knows which action is better (the `cpu-smoke` preset, see there).
    action_l2: float = 0.0
    feature_dim: int = 50  # humanoid: 100 (TASK_SETTINGS)
    hidden_dims: tuple[int, ...] = (1024, 1024)
    critic_tau: float = 0.01
    # "auto" (the task's difficulty in the released configs, TASK_DIFFICULTY; "easy" for a task
    # they do not list or an agent built without a task), "easy" | "medium" | "hard",
    # "linear(start,end,duration)", "start,end,duration", or a constant std
    stddev_schedule: str = "auto"
    stddev_clip: float = 0.3
    # What the schedule's duration counts. The released code evaluates it at its global_step,
    # i.e. agent steps (at action repeat 2, half the frames); ALGORITHMS.md reads the paper as
    # counting frames. Default: the code's. "frames" makes the decay independent of the repeat.
    schedule_counter: str = "agent_steps"
    # "float32" (the paper's), "bfloat16" (convs and trunks under bf16 autocast, see
    # crl/encoders.py) or "auto" (bfloat16 where it measures faster: resolve_precision)
    precision: str = "float32"


# The paper's loop. DrQ-v2 uses action repeat 2 on every task, unlike the PlaNet-benchmark repeats
# (cartpole 8, cheetah 4, ...) that dmc: envs use by default. The released code explores with
# uniform actions for num_expl_steps = 2000 agent steps and starts updating after 4000 seed
# frames; at repeat 2 both are the first 4000 frames, which our loop's seed_frames covers. At the
# PlaNet repeats of the `dmc100k` / `dmc500k` presets crl keeps one seed phase of 4000 frames (the
# updates' start), where the released counters would act uniformly for 2000 agent steps (16k frames
# at cartpole's 8) while updating from the 4000th frame on.
RUN_DEFAULTS = dict(action_repeat=2, update_every=2, seed_frames=4_000,
                    eval_every_frames=10_000, eval_episodes=10)

PRESETS = {
    # DMC-100k / 500k benchmarks: the task's standard repeat (PlaNet's), budgets and schedule in
    # frames. Replay sized for repeat >= 2 (one stored frame per agent step plus one per episode).
    "dmc100k": dict(frames=100_000, action_repeat=0, replay_capacity=60_000, schedule_counter="frames"),
    "dmc500k": dict(frames=500_000, action_repeat=0, replay_capacity=260_000, schedule_counter="frames"),
    # The 2-core CPU: dmc:cartpole-balance from standard visuals, 32k frames (7k updates at batch
    # 128): seeds 0 / 1 pass 700 by 24k / 28k frames and score ~975 at 32k, measured on a 2-core
    # AVX2 CPU (fp32 convs) with two runs sharing it: 85 min each. With bf16 convs, alone on a
    # 2-core AVX512-BF16 CPU: 974 at 24k frames (36 min) and 965 at 28k (41 min), ~12 frames/s.
    # The replay keeps the last 12k of the 16k agent steps (as measured). The paper's action
    # repeat 2. The std decays over the first 24k frames (the released schedule, 100k agent
    # steps, would barely move in this budget). lr 3e-4 (the paper's 1e-4 passed 700 on balance
    # only after ~9k updates at batch 256).
    # Tried, no faster per frame or per update: batch 64, action repeat 8 (BENCHMARKS.md).
    # Deviation: action_l2=1 (not in DrQ-v2, see Config). Without it, in the first ~250 updates,
    # while Q is still near 0, the deterministic actor drifts into tanh saturation (one action:
    # evaluation return 136, the cart against the wall) and stays there, its gradient gone: seed 1
    # in every run here, at repeat 2 or 8, lr 3e-4, 1e-4 or 3e-5; seed 0 too on the AMD CPU. With
    # the penalty neither saturates: 530 / 531 at 12k frames vs 136 / 425 without (both held one
    # action from 5k to 10k frames; BENCHMARKS.md, "DrQ-v2 cpu-smoke with and without action_l2").
    "cpu-smoke": dict(action_repeat=2, frames=32_000, replay_capacity=12_000, batch_size=128, lr=3e-4,
                      action_l2=1.0, stddev_schedule="1.0,0.1,24000", schedule_counter="frames",
                      eval_every_frames=4_000, eval_episodes=5, checkpoint_every_frames=0, precision="auto"),
}


def configure_for_env(config: Config, env_id: str) -> Config:
    """The released std schedule of `env_id`'s difficulty where the config's is "auto"."""
    if config.stddev_schedule != "auto":
        return config
    return dataclasses.replace(config, stddev_schedule=TASK_DIFFICULTY.get(env_id.partition(":")[2], "easy"))


def parse_stddev_schedule(spec) -> tuple[float, float, int]:
    """(start, end, duration) from a difficulty name, "linear(a,b,n)", "a,b,n", (a, b, n) or a
    constant std."""
    if isinstance(spec, (tuple, list)):
        numbers = [float(x) for x in spec]
    else:
        text = str(spec).strip().lower()
        text = "easy" if text == "auto" else text  # no task to look up (see configure_for_env)
        if text in DIFFICULTY:
            return DIFFICULTY[text]
        text = re.sub(r"^linear\((.*)\)$", r"\1", text).strip("()[] ")
        try:
            numbers = [float(x) for x in text.split(",")]
        except ValueError:
            numbers = []
    if len(numbers) == 1:
        return numbers[0], numbers[0], 1
    if len(numbers) != 3:
        raise ValueError(f"stddev_schedule {spec!r}: use one of {', '.join(DIFFICULTY)}, "
                         "'linear(start,end,duration)', 'start,end,duration' or a constant")
    return numbers[0], numbers[1], int(numbers[2])


def smoothed_action(mean: Tensor, std: float, clip: float | None) -> Tensor:
    """mean + clipped Gaussian noise, clamped to [-1, 1]. As the released code's truncated normal,
    the clamp changes the value only: the gradient with respect to the mean passes through."""
    sample = noisy_action(mean.detach(), std, clip)
    return mean + (sample - mean).detach()


class Actor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dims):
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.policy = DeterministicActor(feature_dim, action_dim, hidden_dims)

    def forward(self, h: Tensor) -> Tensor:
        """The deterministic action tanh(mu(h)); noise is added by the caller."""
        return self.policy(self.trunk(h))


class Critic(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dims):
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.q = TwinQ(feature_dim, action_dim, hidden_dims)

    def forward(self, h: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        return self.q(self.trunk(h), action)


class Agent(Checkpointable):
    name = "drqv2"
    batch_kind = "transitions"

    def __init__(self, obs_space, action_space, config: Config, device: str | torch.device = "cpu"):
        require_continuous_actions(self.name, action_space)
        if config.schedule_counter not in COUNTERS:
            raise ValueError(f"schedule_counter {config.schedule_counter!r}: "
                             f"use one of {', '.join(COUNTERS)}")
        self.config = config
        self.device = torch.device(device)
        self.schedule = parse_stddev_schedule(config.stddev_schedule)
        self.progress = dict.fromkeys(COUNTERS, 0)
        action_dim = int(np.prod(action_space.shape))

        self.encoder = DrQV2Encoder(obs_space.shape, compute_dtype=resolve_precision(config.precision, device))
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, config.feature_dim, config.hidden_dims)
        self.critic = Critic(repr_dim, action_dim, config.feature_dim, config.hidden_dims)
        self.critic_target = copy.deepcopy(self.critic)
        for module in self.modules().values():
            module.to(self.device)

        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
                "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder_opt": self.encoder_opt, "actor_opt": self.actor_opt, "critic_opt": self.critic_opt}

    def sampler_options(self) -> dict:
        return {"n_step": self.config.n_step, "gamma": self.config.gamma}

    # -- exploration schedule -----------------------------------------------------------------

    def set_progress(self, frames: int, agent_steps: int, updates: int) -> None:
        """Called by the loop before each act; the schedule reads `config.schedule_counter`."""
        self.progress = {"frames": frames, "agent_steps": agent_steps, "updates": updates}

    def stddev(self) -> float:
        start, end, duration = self.schedule
        return linear_schedule(start, end, duration, self.progress[self.config.schedule_counter])

    # -- acting -------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        mean = self.actor(self.encoder(torch.as_tensor(obs, device=self.device)))
        action = noisy_action(mean, self.stddev()) if explore else mean
        return action.cpu().numpy()

    # -- learning -----------------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict[str, float]:
        """One update; the loop calls it every 2 agent steps (RUN_DEFAULTS["update_every"])."""
        # uint8 until the encoder scales it (the same values as DrQ-v2's float grid_sample)
        layout = self.encoder.memory_format
        obs = random_shift_bilinear(batch["obs"].to(self.device), float_output=False, memory_format=layout)
        next_obs = random_shift_bilinear(batch["next_obs"].to(self.device), float_output=False, memory_format=layout)
        action = batch["action"].to(self.device).float()
        reward = batch["reward"].to(self.device)
        discount = batch["discount"].to(self.device)

        h = self.encoder(obs)
        with torch.no_grad():
            next_h = self.encoder(next_obs)
        metrics = self.update_critic(h, action, reward, discount, next_h)
        metrics.update(self.update_actor(h.detach()))
        soft_update(self.critic_target, self.critic, self.config.critic_tau)
        metrics["batch_reward"] = reward.mean()
        return metrics_to_floats(metrics) | {"stddev": self.stddev()}

    @torch.no_grad()
    def target_q(self, reward: Tensor, discount: Tensor, next_h: Tensor) -> Tensor:
        """n-step TD target with the smoothed target action and the min of the twin target Qs."""
        next_action = smoothed_action(self.actor(next_h), self.stddev(), self.config.stddev_clip)
        target_q1, target_q2 = self.critic_target(next_h, next_action)
        return n_step_target(reward, discount, torch.min(target_q1, target_q2))

    def update_critic(self, h, action, reward, discount, next_h) -> dict[str, Tensor]:
        target = self.target_q(reward, discount, next_h)
        q1, q2 = self.critic(h, action)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        return {"critic_loss": loss.detach(), "q": q1.detach().mean(), "target_q": target.mean()}

    def actor_loss(self, h: Tensor, mean: Tensor | None = None) -> Tensor:
        """-min(Q1, Q2) at the actor's mean (`self.actor(h)` unless given) plus clipped noise (the
        released code's choice), plus `action_l2` * mean(mean^2) (0 in the paper)."""
        mean = self.actor(h) if mean is None else mean
        action = smoothed_action(mean, self.stddev(), self.config.stddev_clip)
        with frozen(self.critic):  # the gradient flows through the critic to the action only
            q1, q2 = self.critic(h, action)
        return -torch.min(q1, q2).mean() + self.config.action_l2 * mean.pow(2).mean()

    def update_actor(self, h: Tensor) -> dict[str, Tensor]:
        mean = self.actor(h)
        loss = self.actor_loss(h, mean)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        # Share of action components the tanh holds within 0.01 of +-1, where its gradient has
        # all but vanished: near 1, the actor has collapsed onto one action (the stuck seeds on
        # cartpole balance in BENCHMARKS.md, "Pixel agents on CPU").
        saturation = (mean.detach().abs() > ACTION_SATURATION).float().mean()
        return {"actor_loss": loss.detach(), "actor_saturation": saturation}
