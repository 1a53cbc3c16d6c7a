"""stable-baselines3 baselines on our environments: SAC for DMC, DQN for Atari.

They run through the same CLI, run directory and benchmark runner as our agents
(`crl train sb3-sac --env dmc:cartpole-balance`), but learn with SB3's own loop and replay:
each namespace has a `train_run(run, agent_config, run_dir)` that `crl.train.train` calls
instead of our OnlineTrainer. Budgets are frames, counted from the env's `info["frames"]`;
SB3's timesteps are agent steps. The loop settings come from RunConfig as for our agents:
`seed_frames` -> SB3 `learning_starts` (in agent steps), `update_every` -> `train_freq`,
`updates_per_round` -> `gradient_steps`, `eval_every_frames`/`eval_episodes` -> evaluation
through `crl.train.evaluate` (SAC: its mean action; DQN: epsilon-greedy, below), logged to
train.csv / eval.csv.

SAC: SB3's defaults, which are the SAC paper's (v2) settings: lr 3e-4, batch 256, tau 0.005,
gamma 0.99, automatic entropy, 2x256 MLPs; from pixels SB3's CnnPolicy (NatureCNN, pixels /255;
actor and critic each train their own CNN, SB3's default, unlike the pixel-SAC of SAC-AE / DrQ
whose actor sees the critic's encoder detached). Not the SAC-AE pixel baseline: a reference
point for "an off-the-shelf library SAC on the same observations".

DQN: the Atari-100k settings of DrQ(epsilon) (Kostrikov et al. 2020, Agarwal et al. 2021),
without its augmentation, double Q and dueling heads, which SB3's DQN does not have: Nature CNN,
Adam lr 1e-4 (eps 1.5e-4), batch 32, 10-step returns, replay 100k, learning after 1600 agent
steps, one update per agent step, target network updated every step, epsilon 1 -> 0.01 over
5000 agent steps (SB3 starts the decay at step 0, Dopamine after the warm-up), rewards clipped to [-1, 1] for learning, terminal on life loss in training.
Evaluation is epsilon-greedy with `epsilon_eval` 0.001, Dopamine's and DrQ(epsilon)'s Atari-100k
protocol and the value of our drq-eps and curl-rainbow, not SB3's greedy `deterministic=True`: a
greedy policy may never press FIRE (Breakout) and play on to the 108k-frame episode cap. The
random actions come from the evaluation policy's own generator, seeded with the run's seed.
SB3-zoo's Atari DQN defaults (learning_starts 100k, target update 1000, train_freq 4) are for 10M
frames and would learn nothing in 100k agent steps.

Checkpoints: the model is saved at the end in SB3's zip format (`checkpoints/sb3_<frames>.zip`,
loaded only by SB3's `load`); it is the baseline's own format, not a crl checkpoint, so these runs
do not resume (a crashed one restarts) and `crl eval` does not read them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from crl import envs
from crl.config import ConfigError, to_dict
from crl.logger import Logger, Progress, write_config
from crl.rl import require_continuous_actions, require_discrete_actions


@dataclass
class SACConfig:
    policy: str = "auto"  # auto: CnnPolicy for image observations, else MlpPolicy
    learning_rate: float = 3e-4
    buffer_size: int = 0  # transitions; 0: the whole budget (run.frames / frames per agent step)
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    ent_coef: str = "auto"  # "auto", "auto_0.1" (learned, initial 0.1) or a fixed number
    target_update_interval: int = 1
    net_arch: tuple[int, ...] = (256, 256)
    features_dim: int = 512  # NatureCNN output (pixels only)
    share_features_extractor: bool = False


@dataclass
class DQNConfig:
    policy: str = "auto"
    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    buffer_size: int = 100_000
    batch_size: int = 32
    gamma: float = 0.99
    n_steps: int = 10
    tau: float = 1.0
    target_update_interval: int = 1  # agent steps
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.01
    exploration_steps: int = 5_000  # agent steps of the linear epsilon decay
    epsilon_eval: float = 0.001  # DrQ(eps), Dopamine; as drq-eps and curl-rainbow
    max_grad_norm: float = 10.0
    clip_rewards: bool = True
    net_arch: tuple[int, ...] = ()  # hidden layers after the CNN; () is the Nature DQN head
    features_dim: int = 512


SAC_PRESETS = {
    "dmc100k": dict(frames=100_000),
    # 500k frames at action repeat 2 would be 250k stacked pixel transitions, stored twice (obs and
    # next_obs) by SB3's buffer: 32 GB. 100k transitions (CURL's capacity) take 12.7 GB.
    "dmc500k": dict(frames=500_000, buffer_size=100_000),
    # dmc:cartpole-balance on a 2-core CPU: 5k agent steps at action repeat 8; one update at batch
    # 64 takes ~0.25 s here (batch 128: ~0.5 s), so ~20 min with rendering and evaluation.
    "cpu-smoke": dict(frames=40_000, batch_size=64, seed_frames=4_000, eval_every_frames=10_000,
                      eval_episodes=5),
}
SAC_RUN_DEFAULTS = dict(seed_frames=4_000, update_every=1, updates_per_round=1, eval_every_frames=10_000,
                        eval_episodes=10)

DQN_PRESETS = {
    # 100k agent steps at frame skip 4. SB3's buffer stores obs and next_obs: 100k x 2 x (4, 84, 84)
    # uint8 = 5.6 GB of memory (crl's own Atari agents store each 84x84 frame once: 0.85 GB for 120k).
    "atari100k": dict(frames=400_000, terminal_on_life_loss=True),
    # sized for a 2-core CPU (10k agent steps): learns RoadRunner (seed 0: eval 0 at 20k frames,
    # 950 at 40k; random 15), not the games that need exploration (BENCHMARKS.md, "Other runs")
    "cpu-smoke": dict(frames=40_000, buffer_size=10_000, eval_every_frames=20_000, eval_episodes=2,
                      terminal_on_life_loss=True),
}
DQN_RUN_DEFAULTS = dict(seed_frames=1_600 * 4, update_every=1, updates_per_round=1, eval_every_frames=100_000,
                        eval_episodes=10, terminal_on_life_loss=True)


# -- environments ------------------------------------------------------------------------------

class ClipReward(gym.RewardWrapper):
    """sign(reward) for learning (DQN on Atari); the raw reward goes on in `info["raw_reward"]`."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(np.sign(reward)), terminated, truncated, dict(info, raw_reward=float(reward))


def training_env(run, config) -> gym.Env:
    from crl.train import env_options

    env = envs.make(run.env, **env_options(run, training=True))
    return ClipReward(env) if getattr(config, "clip_rewards", False) else env


def frames_per_step(env: gym.Env) -> int:
    """Frames one agent step takes: DMC's action repeat or Atari's frame skip."""
    for name in ("action_repeat", "frame_skip"):
        try:
            return int(env.get_wrapper_attr(name))
        except AttributeError:
            continue
    return 1


def is_image(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


# -- the run -----------------------------------------------------------------------------------

class Policy:
    """SB3 model -> our act(obs, explore) interface, for crl.train.evaluate.

    explore=False takes SB3's deterministic action (SAC's mean, DQN's argmax) and, with `epsilon`
    > 0 (DQN's evaluation epsilon), replaces each row's by a uniformly random action with
    probability epsilon, drawn from a generator seeded with `seed`. explore=True is SB3's own."""

    def __init__(self, model, epsilon: float = 0.0, seed: int = 0):
        self.model, self.epsilon = model, epsilon
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=not explore)
        if explore or self.epsilon == 0:
            return action
        random_rows = self.rng.random(len(action)) < self.epsilon
        return np.where(random_rows, self.rng.integers(self.model.action_space.n, size=len(action)), action)


def make_callback(run, logger: Logger, evaluate_and_log, progress: Progress):
    from stable_baselines3.common.callbacks import BaseCallback

    from crl.train import episode_stats

    class Loop(BaseCallback):
        """Counts frames, logs finished episodes, evaluates on the run's cadence, stops at the budget."""

        def _on_training_start(self) -> None:
            self.frames, self.episode_return = 0, 0.0
            self.next_eval = run.eval_every_frames
            self.clock, self.clock_frames = time.time(), 0

        def counters(self) -> dict[str, int]:
            return {"frames": self.frames, "agent_steps": self.model.num_timesteps,
                    "updates": self.model._n_updates}

        def _on_step(self) -> bool:
            info, done = self.locals["infos"][0], bool(self.locals["dones"][0])
            self.frames = int(info["frames"])
            self.episode_return += info.get("raw_reward", float(self.locals["rewards"][0]))
            episode = episode_stats(info, self.episode_return) if done else None  # None: a life lost, the game goes on
            if episode is not None:
                fps = (self.frames - self.clock_frames) / max(time.time() - self.clock, 1e-9)
                logger.log("train", self.counters(), episode | train_metrics(self.model) | {"fps": fps})
                self.episode_return = 0.0
            if self.frames >= self.next_eval:
                evaluate_and_log(self.counters())
                self.next_eval += run.eval_every_frames
            progress.update(self.frames, updates=self.model._n_updates)
            return self.frames < run.frames

    return Loop()


def train_metrics(model) -> dict[str, float]:
    """The latest losses (and DQN's epsilon) SB3 recorded; its logger never dumps here, so they stay."""
    return {key.partition("/")[2]: float(value) for key, value in model.logger.name_to_value.items()
            if (key.startswith("train/") and key != "train/n_updates") or key == "rollout/exploration_rate"}


def train_run(namespace, run, config, run_dir) -> dict[str, float]:
    from stable_baselines3.common.logger import Logger as SB3Logger

    from crl.train import env_options, evaluate, invoking_command, resolve_device, where_it_ran

    if run.num_envs != 1:
        raise ConfigError(f"{namespace.name} runs one training env (SB3's off-policy loop); got num_envs={run.num_envs}")
    torch.set_flush_denormal(True)  # denormals made small CPU models ~10x slower (DESIGN.md)
    run_dir = Path(run_dir)
    device = resolve_device(run.device)
    write_config(run_dir, {"agent": namespace.name, "run": to_dict(run), "agent_config": to_dict(config),
                           "command": invoking_command(), "ran_on": [where_it_ran(device, config)]})
    env = training_env(run, config)
    eval_env = envs.make(run.env, **env_options(run, training=False))
    step_frames = frames_per_step(env)
    model = namespace.build(env, run, config, step_frames, str(device))
    model.set_logger(SB3Logger(folder=None, output_formats=[]))
    policy = Policy(model, epsilon=getattr(config, "epsilon_eval", 0.0), seed=run.seed)  # SAC has no epsilon
    last_eval: dict[str, float] = {}

    def evaluate_and_log(counters: dict[str, int]) -> None:
        video = run_dir / "videos" / f"eval_{counters['frames']:012d}.mp4" if run.video else None
        result = evaluate(policy, eval_env, run.eval_episodes, seed=run.seed + 10_000, video_path=video)
        logger.log("eval", counters, result)
        last_eval.clear()
        last_eval.update(result | {"frames": counters["frames"]})

    progress = Progress(total=run.frames)
    try:
        with Logger(run_dir) as logger:
            loop = make_callback(run, logger, evaluate_and_log, progress)
            # run.frames bounds the agent steps (each takes >= 1 frame); the callback stops at the budget.
            model.learn(total_timesteps=run.frames, callback=loop, log_interval=None)
            if last_eval.get("frames") != loop.frames:
                evaluate_and_log(loop.counters())
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        model.save(run_dir / "checkpoints" / f"sb3_{loop.frames:012d}.zip")
    finally:
        progress.close()
        env.close()
        eval_env.close()
    return dict(last_eval)


def budget_buffer(config, run, step_frames: int) -> int:
    return config.buffer_size or math.ceil(run.frames / step_frames) + 1


def policy_for(config, env: gym.Env) -> tuple[str, dict]:
    image = is_image(env.observation_space)
    policy = config.policy if config.policy != "auto" else ("CnnPolicy" if image else "MlpPolicy")
    kwargs = {"net_arch": list(config.net_arch)}
    if policy == "CnnPolicy":
        kwargs["features_extractor_kwargs"] = {"features_dim": config.features_dim}
    return policy, kwargs


def build_sac(env, run, config: SACConfig, step_frames: int, device: str):
    from stable_baselines3 import SAC as SB3SAC

    require_continuous_actions("sb3-sac", env.action_space)  # SB3's own check is a bare assert
    policy, policy_kwargs = policy_for(config, env)
    policy_kwargs["share_features_extractor"] = config.share_features_extractor
    ent_coef = config.ent_coef if config.ent_coef.startswith("auto") else float(config.ent_coef)
    return SB3SAC(policy, env, learning_rate=config.learning_rate, buffer_size=budget_buffer(config, run, step_frames),
                  learning_starts=run.seed_frames // step_frames, batch_size=config.batch_size, tau=config.tau,
                  gamma=config.gamma, train_freq=run.update_every, gradient_steps=run.updates_per_round,
                  ent_coef=ent_coef, target_update_interval=config.target_update_interval,
                  policy_kwargs=policy_kwargs, seed=run.seed, device=device)


def build_dqn(env, run, config: DQNConfig, step_frames: int, device: str):
    from stable_baselines3 import DQN as SB3DQN

    require_discrete_actions("sb3-dqn", env.action_space)
    policy, policy_kwargs = policy_for(config, env)
    policy_kwargs["optimizer_kwargs"] = {"eps": config.adam_eps}
    return SB3DQN(policy, env, learning_rate=config.learning_rate, buffer_size=budget_buffer(config, run, step_frames),
                  learning_starts=run.seed_frames // step_frames, batch_size=config.batch_size, tau=config.tau,
                  gamma=config.gamma, train_freq=run.update_every, gradient_steps=run.updates_per_round,
                  n_steps=config.n_steps, target_update_interval=config.target_update_interval,
                  # SB3 decays epsilon over a fraction of learn()'s total_timesteps, which is run.frames
                  exploration_fraction=min(1.0, config.exploration_steps / run.frames),
                  exploration_initial_eps=config.exploration_initial_eps,
                  exploration_final_eps=config.exploration_final_eps, max_grad_norm=config.max_grad_norm,
                  policy_kwargs=policy_kwargs, seed=run.seed, device=device)


def refuse_resume(name: str, run_dir, frames=None):
    raise ConfigError(f"{name} runs do not resume: SB3's zip holds the model but not the replay or the counters. "
                       f"Start a new run (another --logdir); `crl bench` restarts an unfinished {name} run by itself")


def namespace(name: str, config, presets: dict, run_defaults: dict, build) -> SimpleNamespace:
    space = SimpleNamespace(name=name, Config=config, PRESETS=presets, RUN_DEFAULTS=run_defaults, build=build)
    space.train_run = lambda run, agent_config, run_dir: train_run(space, run, agent_config, run_dir)
    space.resume_run = lambda run_dir, frames=None: refuse_resume(name, run_dir, frames)
    return space


SAC = namespace("sb3-sac", SACConfig, SAC_PRESETS, SAC_RUN_DEFAULTS, build_sac)
DQN = namespace("sb3-dqn", DQNConfig, DQN_PRESETS, DQN_RUN_DEFAULTS, build_dqn)
