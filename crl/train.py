"""Online and offline training loops, evaluation, step accounting, checkpoints and resume.

Three counters (DESIGN.md): `frames` (simulator steps, action repeat counted; budgets are in
frames), `agent_steps` (decisions, summed over vector envs) and `updates` (gradient steps).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crl import envs
from crl.checkpoint import CheckpointError, CheckpointManager, check_compatible, load_checkpoint
from crl.config import ConfigError, field_names, from_dict, replace, to_dict, unknown_field_error
from crl.encoders import auto_precision_notice, resolve_precision
from crl.logger import Logger, Progress, save_video, write_config
from crl.registry import agent_module
from crl.replay import EpisodeReplay, NothingToSample
from crl.system import cpu_label


@dataclass
class RunConfig:
    """What the loop does; the agent's own hyperparameters live in its Config."""

    env: str = "dmc:cheetah-run"
    frames: int = 100_000
    seed: int = 0
    seed_frames: int = 4_000  # uniformly random actions before learning starts
    update_every: int = 1  # agent steps (summed over envs) between rounds of updates
    updates_per_round: int = 1
    eval_every_frames: int = 10_000
    eval_episodes: int = 10
    replay_capacity: int = 1_000_000  # frames; 100k 84x84 RGB frames take about 2 GB
    num_envs: int = 1
    checkpoint_every_frames: int = 50_000  # 0: only at the end
    keep_checkpoints: int = 2
    video: bool = False
    visuals: str = "standard"  # DMC only; "fast" is for smoke runs, never for reported numbers
    image_size: int = 84  # DMC and maze-pixels: rendered height and width (CURL renders 100, crops 84)
    action_repeat: int = 0  # DMC only; 0 = the task's standard repeat
    terminal_on_life_loss: bool = False  # Atari training env only
    updates: int = 100_000  # offline runs: the budget in gradient steps (no env steps)
    eval_every_updates: int = 10_000  # offline runs
    device: str = "auto"
    # "auto": a copy of the replay's frames on a CUDA device, where they take at most half of its
    # free memory (batches are then gathered there, not on the host and copied)
    replay_on_device: str = "auto"  # "auto", "yes", "no"

    def __post_init__(self):
        check_run_values(self)


# Fields that may differ between a checkpoint and the run that resumes or evaluates it.
RESUMABLE_FIELDS = {"frames", "updates", "eval_every_updates", "eval_every_frames", "eval_episodes", "checkpoint_every_frames",
                    "keep_checkpoints", "video", "device", "replay_on_device"}

POSITIVE_RUN_FIELDS = ("frames", "update_every", "eval_every_frames", "eval_episodes", "replay_capacity", "num_envs",
                       "keep_checkpoints", "image_size", "updates", "eval_every_updates")
# Evaluation resets use seed + 10000 + k (training) and seed + 20000 + k (`crl eval`); numpy and
# gymnasium take seeds below 2**32.
MAX_SEED = 2**31 - 1
NON_NEGATIVE_RUN_FIELDS = ("seed", "seed_frames", "updates_per_round", "checkpoint_every_frames", "action_repeat")


def check_run_values(run: RunConfig) -> None:
    """Budgets, intervals and counts that the loop divides by or counts down, checked before any
    env is built (a 0 would fail later, deep in the loop or in gymnasium)."""
    for name in POSITIVE_RUN_FIELDS:
        if getattr(run, name) <= 0:
            raise ConfigError(f"run config field {name!r} must be positive (> 0), got {getattr(run, name)!r}")
    for name in NON_NEGATIVE_RUN_FIELDS:
        if getattr(run, name) < 0:
            raise ConfigError(f"run config field {name!r} must be >= 0, got {getattr(run, name)!r}")
    if run.seed > MAX_SEED:
        raise ConfigError(f"run config field 'seed' must be at most {MAX_SEED} (2**31 - 1), so that the evaluation "
                          f"seeds after it stay valid 32-bit seeds; got {run.seed}")
    from crl.envs.dmc import VISUALS

    if run.visuals not in VISUALS:
        raise ConfigError(f"run config field 'visuals' must be one of {', '.join(VISUALS)}, got {run.visuals!r}")
    check_device_name(run.device)
    if run.replay_on_device not in REPLAY_ON_DEVICE:
        raise ConfigError(f"run config field 'replay_on_device' must be one of {', '.join(REPLAY_ON_DEVICE)}, "
                          f"got {run.replay_on_device!r}")


REPLAY_ON_DEVICE = ("auto", "yes", "no")


def keep_replay_frames_on_device(replay: EpisodeReplay, setting: str, device: torch.device) -> None:
    """The run's `replay_on_device`: "yes" keeps a copy of the replay's frames on a non-CPU
    `device`; "auto" on a CUDA device, where they take at most half of its free memory."""
    replay.keep_frames_on(None)  # drops an earlier copy, whose memory then counts as free below
    if setting == "yes" and device.type != "cpu":
        replay.keep_frames_on(device)
    elif setting == "auto" and device.type == "cuda":  # torch's cache holds freed blocks: free to us
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        replay.keep_frames_on(device, max_bytes=(torch.cuda.mem_get_info(device)[0] + cached) // 2)


def check_device_name(name: str) -> None:
    """'auto' or a name torch can parse (cpu, cuda, cuda:1, mps); whether the device exists is
    checked when the run starts (resolve_device), so a config can be written on another machine."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"run config field 'device' must be auto, cpu, cuda, cuda:N or another torch device, "
                          f"got {name!r}") from None


def is_positive_agent_field(name: str) -> bool:
    """Agent fields that count or divide (a 0 would fail mid-run: `step % every`, an empty n-step
    window, a zero-width layer)."""
    return (name.endswith(("_every", "_augmentations")) or
            name in ("batch_size", "n_step", "num_atoms", "hidden_dims", "hidden_dim", "feature_dim"))


def check_agent_values(agent_name: str, agent_config) -> None:
    """The agent fields every run reads before its first update, checked when the configs are built."""
    from crl.encoders import PRECISIONS

    for name, value in vars(agent_config).items():
        counts = value if name == "hidden_dims" and isinstance(value, (tuple, list)) else [value]
        if is_positive_agent_field(name) and any(isinstance(v, int) and v <= 0 for v in counts):
            raise ConfigError(f"{agent_name} config field {name!r} must be positive (> 0), got {value!r}")
        if name == "hidden_dims" and isinstance(value, (tuple, list)) and not value:
            raise ConfigError(f"{agent_name} config field 'hidden_dims' needs at least one layer, got none")
        if (bounds := agent_value_bounds(name)) is not None and isinstance(value, float):
            low, high, shown = bounds
            if not ((low <= value) if shown.startswith("[") else (low < value)) or not value <= high:
                raise ConfigError(f"{agent_name} config field {name!r} must be in {shown}, got {value!r}")
    precision = getattr(agent_config, "precision", "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"{agent_name} config field 'precision' must be one of {', '.join(PRECISIONS)}, "
                          f"got {precision!r}")


def agent_value_bounds(name: str) -> tuple[float, float, str] | None:
    """(low, high, interval) for the fields whose range every paper shares: the main learning
    rate, Adam's epsilon and temperatures positive; other learning rates >= 0 (alpha_lr=0 fixes
    SAC's temperature); discounts in [0, 1]; Polyak rates in (0, 1]."""
    if name in ("lr", "learning_rate", "adam_eps") or name.endswith("temperature"):
        return 0.0, math.inf, "(0, inf)"
    if name.endswith("_lr"):
        return 0.0, math.inf, "[0, inf)"
    if name == "gamma":
        return 0.0, 1.0, "[0, 1]"
    if name == "tau" or name.endswith("_tau"):
        return 0.0, 1.0, "(0, 1]"
    return None


def resolve_device(name: str) -> torch.device:
    """The torch device of a `device` setting ("auto": CUDA where torch sees a GPU, else the CPU),
    checked to exist. On CUDA it turns on cuDNN's autotuner, as DrQ-v2's release does: the convs'
    shapes never change, so the fastest algorithm is chosen once."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device {name!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for, but torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        torch.backends.cudnn.benchmark = True
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} was asked for, but torch sees no MPS device")
    return device


def split_settings(agent_name: str, settings: dict[str, Any], where: str) -> tuple[dict, dict]:
    """Sends each field to RunConfig or to the agent's Config; unknown names are an error."""
    module = agent_module(agent_name)
    run_fields, agent_fields = set(field_names(RunConfig)), set(field_names(module.Config))
    run, agent = {}, {}
    for name, value in settings.items():
        if name in run_fields:
            run[name] = value
        elif name in agent_fields:
            agent[name] = value
        else:
            raise unknown_field_error(name, sorted(run_fields | agent_fields), where)
    return run, agent


def build_configs(agent_name: str, preset: str | None, overrides: dict[str, Any]):
    """RunConfig and agent Config from paper defaults, then the agent's per-task settings for the
    env (task_settings), then the preset, then the overrides.

    An agent module's RUN_DEFAULTS are its paper's settings for the loop (e.g. DrQ-v2 updates
    every 2 agent steps); they replace RunConfig's generic defaults."""
    module = agent_module(agent_name)
    given = given_settings(module, agent_name, preset, overrides)
    run, agent = split_settings(agent_name, {**getattr(module, "RUN_DEFAULTS", {}), **given},
                                f"preset {preset!r} / --set" if preset else "--set")
    agent_config = from_dict(module.Config, agent, f"{agent_name} config")
    run_config = from_dict(RunConfig, run, "run config")
    where = f"{agent_name}'s per-task settings for {run_config.env}"
    task_run, task_agent = split_settings(agent_name, task_settings(module, run_config, given), where)
    run_config, agent_config = replace(run_config, task_run, where), replace(agent_config, task_agent, where)
    if hasattr(module, "configure_for_env"):  # what the agent derives from the task (DrQ-v2's std schedule)
        agent_config = module.configure_for_env(agent_config, run_config.env)
    check_agent_values(agent_name, agent_config)
    return run_config, agent_config


def given_settings(module, agent_name: str, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's fields, then the overrides: what the user chose, which per-task settings never replace."""
    presets = getattr(module, "PRESETS", {})
    if preset is not None and preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for agent {agent_name!r}; "
                          f"presets: {', '.join(sorted(presets)) or 'none'}")
    return {**(presets[preset] if preset is not None else {}), **overrides}


def task_settings(module, run: RunConfig, given: dict[str, Any]) -> dict[str, Any]:
    """The paper's (or released code's) settings for `run.env` that no preset or --set gave: the
    agent module's TASK_SETTINGS (env id -> {run or agent field: value}) and, for a DMC agent whose
    paper counts its uniformly random seed phase in agent steps (SEED_AGENT_STEPS: DrQ's and
    CURL's 1000), seed_frames = those steps x the task's action repeat (8000 on cartpole)."""
    settings = {k: v for k, v in getattr(module, "TASK_SETTINGS", {}).get(run.env, {}).items() if k not in given}
    steps = getattr(module, "SEED_AGENT_STEPS", None)
    suite, _, name = run.env.partition(":")
    if steps is not None and "seed_frames" not in given and suite in ("dmc", "dmc-state"):
        from crl.envs.dmc import standard_action_repeat

        repeat = settings.get("action_repeat") or run.action_repeat or standard_action_repeat(name.partition("-")[0])
        settings["seed_frames"] = steps * repeat
    return settings


def task_settings_notice(agent_name: str, preset: str | None, overrides: dict[str, Any], run: RunConfig) -> str | None:
    """What `crl train` prints at a run's start: the per-task settings build_configs applied."""
    module = agent_module(agent_name)
    settings = task_settings(module, run, given_settings(module, agent_name, preset, overrides))
    listed = ", ".join(f"{name}={value}" for name, value in settings.items())
    return f"{agent_name} on {run.env}: per-task settings of its paper or released code: {listed}" if settings else None


def env_options(run: RunConfig, training: bool) -> dict[str, Any]:
    suite = run.env.partition(":")[0]
    if suite == "dmc":
        options: dict[str, Any] = {"visuals": run.visuals, "height": run.image_size, "width": run.image_size}
        return options | ({"action_repeat": run.action_repeat} if run.action_repeat else {})
    if suite == "dmc-state" and run.action_repeat:
        return {"action_repeat": run.action_repeat}
    if suite == "atari":
        return {"terminal_on_life_loss": run.terminal_on_life_loss and training}
    if suite == "maze-pixels":
        return {"size": run.image_size}
    return {}


def torch_rng_states() -> dict[str, Any]:
    """torch's CPU generator and, once CUDA is in use, every GPU's (exploration noise and
    augmentations draw from the device's generator there)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_torch_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def frame_stack_of(env) -> int:
    try:
        return int(env.get_wrapper_attr("stack_size"))
    except AttributeError:
        return 1


def evaluate(agent, env, episodes: int, seed: int, video_path: Path | None = None) -> dict[str, float]:
    """Deterministic policy for `episodes` episodes (episode k reset with seed + k, so every
    evaluation sees the same starts and goals); returns the mean return, and for goal tasks the
    success rate (reached at any step), the final success rate and the final distance to the goal."""
    returns, successes, final_successes, distances, frames = [], [], [], [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        done, total, reached = False, 0.0, False
        record = video_path is not None and episode == 0
        if record:
            frames.append(env.render())
        while not done:
            action = agent.act(batch_obs(obs), explore=False)[0]
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            reached = reached or bool(info.get("success", False))
            done = terminated or truncated
            if record:
                frames.append(env.render())
        returns.append(info.get("game_score", total))
        successes.append(reached)
        final_successes.append(bool(info.get("success", False)))
        distances.append(info.get("distance", np.nan))
    if video_path is not None and frames and frames[0] is not None:
        save_video(video_path, frames)
    metrics = {"episode_return": float(np.mean(returns)), "episode_return_std": float(np.std(returns))}
    if "success" in info:
        metrics |= {"success": float(np.mean(successes)), "final_success": float(np.mean(final_successes))}
    if "distance" in info:
        metrics["final_distance"] = float(np.mean(distances))
    return metrics


def batch_obs(obs):
    """Adds a batch axis to one observation (array or dict of arrays)."""
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def invoking_command() -> str | None:
    """The `crl ...` command line that started this process (None when not run as `crl`), recorded
    in config.yaml so that a run says how to reproduce it."""
    return shlex.join(["crl", *sys.argv[1:]]) if Path(sys.argv[0]).name == "crl" else None


def where_it_ran(device: torch.device, agent_config) -> dict[str, Any]:
    """When and on what a run's start or a resume ran (config.yaml's `ran_on` holds one record
    each): the speed, and what `precision` auto resolves to (the convs' dtype), differ by machine."""
    record: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "command": invoking_command(), "device": str(device), "cpu": cpu_label(),
                              "threads": torch.get_num_threads(),
                              "torch": str(torch.__version__)}  # (a TorchVersion, which yaml cannot write)
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    if (precision := getattr(agent_config, "precision", None)) is not None:
        record["precision"] = str(resolve_precision(precision, device)).removeprefix("torch.")
    return record


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class OnlineTrainer:
    """Collects with vector envs into the replay, updates the agent, evaluates, checkpoints."""

    def __init__(self, agent_name: str, run: RunConfig, agent_config, run_dir: str | Path):
        if run.seed_frames >= run.frames:
            raise ConfigError(f"seed_frames {run.seed_frames} >= frames {run.frames}: the run would act at random "
                              "and never update; give more frames or --set seed_frames=N below them")
        self.agent_name, self.run, self.agent_config = agent_name, run, agent_config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(run.device)
        torch.set_flush_denormal(True)  # denormals made small CPU models ~10x slower (DESIGN.md)
        seed_everything(run.seed)

        self.env = envs.make_vector(run.env, run.num_envs, **env_options(run, training=True))
        self.eval_env = envs.make(run.env, **env_options(run, training=False))
        self.agent = make_agent(agent_name, self.eval_env, agent_config, self.device)
        if getattr(agent_config, "precision", None) == "auto":
            print(auto_precision_notice(self.device), file=sys.stderr)
        stack = frame_stack_of(self.eval_env)
        self.replay = EpisodeReplay(run.replay_capacity, frame_stack=stack, num_streams=run.num_envs,
                                    seed=run.seed)
        keep_replay_frames_on_device(self.replay, run.replay_on_device, self.device)
        self.counters = {"frames": 0, "agent_steps": 0, "updates": 0}
        self.rng = np.random.default_rng(run.seed)
        self.env.action_space.seed(run.seed)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", keep=run.keep_checkpoints)
        self.episode_returns = np.zeros(run.num_envs)
        self.last_eval: dict[str, float] = {}
        self.wall_start = time.time()
        # see resumed_commands
        self.commands: dict[str, Any] = {"command": invoking_command(),
                                         "ran_on": [where_it_ran(self.device, agent_config)]}

    # -- configuration on disk ----------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"agent": self.agent_name, "run": to_dict(self.run), "agent_config": to_dict(self.agent_config),
                **self.commands}

    # -- checkpoints --------------------------------------------------------------------------

    def save(self) -> Path:
        payload = {
            "agent": self.agent_name,
            "config": self.config_dict(),
            "counters": dict(self.counters),
            "agent_state": self.agent.state_dict(),
            "replay": self.replay.state_dict(),
            "last_eval": dict(self.last_eval),
            "rng": {
                **torch_rng_states(),
                "numpy": self.rng.bit_generator.state,
                "action_space": self.env.action_space.np_random.bit_generator.state,
                "python": random.getstate(),
            },
        }
        return self.checkpoints.save(payload, frames=self.counters["frames"])

    def restore(self, payload: dict) -> None:
        self.agent.load_state_dict(payload["agent_state"])
        self.replay.load_state_dict(payload["replay"])
        self.counters = dict(payload["counters"])
        self.last_eval = dict(payload.get("last_eval", {}))
        restore_torch_rng_states(payload["rng"])
        self.rng.bit_generator.state = payload["rng"]["numpy"]
        self.env.action_space.np_random.bit_generator.state = payload["rng"]["action_space"]
        random.setstate(payload["rng"]["python"])

    # -- the loop -----------------------------------------------------------------------------

    def train(self, logger: Logger) -> dict[str, float]:
        run = self.run
        obs = self.begin()
        next_eval = (self.counters["frames"] // run.eval_every_frames + 1) * run.eval_every_frames
        every = run.checkpoint_every_frames or run.frames
        next_checkpoint = (self.counters["frames"] // every + 1) * every
        progress = Progress(total=run.frames, initial=self.counters["frames"])
        metrics: dict[str, float] = {}
        fps_clock, fps_frames = time.time(), self.counters["frames"]
        try:
            while self.counters["frames"] < run.frames:
                obs, done_metrics = self.step(obs)
                for _ in range(self.update_rounds_due()):
                    # merged: an actor metric logged every k-th update stays in every train row
                    metrics = metrics | self.update_round()
                for episode in done_metrics:
                    elapsed = max(time.time() - fps_clock, 1e-9)
                    fps = (self.counters["frames"] - fps_frames) / elapsed
                    logger.log("train", self.counters, episode | metrics | {"fps": fps})
                if self.counters["frames"] >= next_eval:
                    self.evaluate_and_log(logger)
                    next_eval += run.eval_every_frames
                if self.counters["frames"] >= next_checkpoint:
                    self.save()
                    next_checkpoint += every
                progress.update(self.counters["frames"], updates=self.counters["updates"],
                                eval=self.last_eval.get("episode_return"))
        finally:
            progress.close()
        if not self.last_eval or self.last_eval.get("frames") != self.counters["frames"]:
            self.evaluate_and_log(logger)
        self.save()
        return self.last_eval

    def begin(self):
        """Resets the envs and stores their first observations; returns them. A fresh run resets
        with its seed; a resumed one with a hash of (seed, frames), so it starts a new episode and
        never on an evaluation seed (seed + 10000 + k: seed + frames was one at 10000 frames)."""
        frames = self.counters["frames"]
        seed = self.run.seed if frames == 0 else envs.hashed_seed(self.run.seed, frames) >> 1
        obs, _ = self.env.reset(seed=seed)
        for i in range(self.run.num_envs):
            self.replay.add_first(take(obs, i), stream=i)
        return obs

    def update_rounds_due(self) -> int:
        """After the seed frames, an update round every `update_every` agent steps (summed over
        envs): the multiples of update_every that the last vector step of num_envs agent steps
        passed (2 rounds for 2 envs at update_every 1, 1 at update_every 2)."""
        if self.counters["frames"] < self.run.seed_frames:
            return 0
        steps, every = self.counters["agent_steps"], self.run.update_every
        return steps // every - (steps - self.run.num_envs) // every

    def update_round(self) -> dict[str, float]:
        """`updates_per_round` updates; none while the replay cannot serve the agent's batch yet
        (goal batches wait for the first finished episode)."""
        metrics: dict[str, float] = {}
        for _ in range(self.run.updates_per_round):
            try:
                batch = self.replay.sample(self.agent_config.batch_size, kind=self.agent.batch_kind,
                                           device=self.device, **self.agent.sampler_options())
            except NothingToSample:
                return metrics
            self.counters["updates"] += 1
            metrics = self.agent.update(batch, self.counters["updates"])
        return metrics

    def step(self, obs):
        """One vector step: act, store, count. Returns the next obs and finished-episode stats."""
        if hasattr(self.agent, "set_progress"):  # e.g. DrQ-v2's exploration schedule
            self.agent.set_progress(**self.counters)
        if self.counters["frames"] < self.run.seed_frames:
            action = self.env.action_space.sample()
        else:
            action = self.agent.act(obs, explore=True)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        finished = []
        self.episode_returns += reward
        for i in range(self.run.num_envs):
            done = terminated[i] or truncated[i]
            final = take(info["final_obs"][i], None) if done else take(next_obs, i)
            self.replay.add(action[i], float(reward[i]), final, bool(terminated[i]), bool(truncated[i]), stream=i)
            if done:
                self.replay.add_first(take(next_obs, i), stream=i)
                episode = finished_episode(info["final_info"], i, self.episode_returns[i])
                if episode is not None:
                    finished.append(episode)
                self.episode_returns[i] = 0.0
        self.counters["frames"] += step_frames(info, terminated | truncated)
        self.counters["agent_steps"] += self.run.num_envs
        return next_obs, finished

    def evaluate_and_log(self, logger: Logger) -> None:
        video = None
        if self.run.video:
            video = self.run_dir / "videos" / f"eval_{self.counters['frames']:012d}.mp4"
        result = evaluate(self.agent, self.eval_env, self.run.eval_episodes,
                          seed=self.run.seed + 10_000, video_path=video)
        logger.log("eval", self.counters, result)
        self.last_eval = result | {"frames": self.counters["frames"]}

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def step_frames(info: dict, done: np.ndarray) -> int:
    """Frames of one vector step. With same-step autoreset a finished env's `info` is already
    the next episode's reset info, so its last step's frames are in `final_info`."""
    frames = np.asarray(info["step_frames"]).copy()
    if done.any():
        frames[done] = np.asarray(info["final_info"]["step_frames"])[done]
    return int(frames.sum())


def finished_episode(final_info: dict, i: int, running_return: float) -> dict[str, float] | None:
    """`episode_stats` of env i of a vector env's `final_info`."""
    info = {k: final_info[k][i] for k in ("lives", "game_score", "success")
            if k in final_info and final_info[f"_{k}"][i]}
    return episode_stats(info, running_return)


def episode_stats(info: dict, running_return: float) -> dict[str, float] | None:
    """Train-log stats of a finished episode from its last info (Atari: the whole game's raw
    score, logged once per game; None for a lost life that ends the agent's episode while the
    game goes on)."""
    if "lives" in info and "game_score" not in info:  # terminal on life loss: envs/atari.py's GameScore
        return None
    stats = {"episode_return": float(info.get("game_score", running_return))}
    if "success" in info:
        stats["success"] = float(info["success"])
    return stats


def take(obs, i):
    """Element i of a batched observation (array or dict); i=None returns obs as it is."""
    if i is None:
        return obs
    if isinstance(obs, dict):
        return {k: v[i] for k, v in obs.items()}
    return obs[i]


@contextlib.contextmanager
def removed_if_left_empty(run_dir: Path, created: bool):
    """On an exception, removes `run_dir` if this command `created` it and nothing was written."""
    try:
        yield
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def check_not_a_file(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"--logdir {run_dir} is a file, not a run directory; choose another --logdir")


def train(agent_name: str, run: RunConfig, agent_config, run_dir: str | Path) -> dict[str, float]:
    """A fresh run in `run_dir` (an error if it already holds checkpoints: use resume)."""
    run_dir = Path(run_dir)
    check_not_a_file(run_dir)
    if (model := sb3_model(run_dir)) is not None:  # SB3 runs do not resume
        raise FileExistsError(f"{run_dir} already holds a finished SB3 run ({model.name}); choose another --logdir")
    if CheckpointManager(run_dir / "checkpoints").latest() is not None:
        raise FileExistsError(f"{run_dir} already holds checkpoints; resume it with --resume {run_dir} "
                              "or choose another --logdir")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    module = agent_module(agent_name)
    with removed_if_left_empty(run_dir, created):  # a start that failed (no ROM, no display) leaves nothing
        if hasattr(module, "train_run"):  # an agent with its own loop (the SB3 baselines)
            return module.train_run(run, agent_config, run_dir)
        trainer = OnlineTrainer(agent_name, run, agent_config, run_dir)
    write_config(run_dir, trainer.config_dict())
    try:
        with Logger(run_dir) as logger:
            return trainer.train(logger)
    finally:
        trainer.close()


def resume(run_dir: str | Path, frames: int | None = None, agent: str | None = None,
           overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """Continues a run from its latest readable checkpoint, on the same curve.

    `agent`, when given, is the agent asked for: config.yaml and the checkpoint must name it.
    `overrides` (`--set` values; `frames` too) may change the RESUMABLE_FIELDS, which config.yaml
    then records; any other field must keep its saved value. Everything is checked before the run
    directory is touched."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory ({'a file' if run_dir.exists() else 'no such path'})"
                                "; --resume takes the directory a run wrote (its --logdir)")
    overrides = dict(overrides or {}) | ({"frames": frames} if frames is not None else {})
    recorded = recorded_config(run_dir)
    if recorded is not None:
        check_asked_agent(agent, recorded["agent"], run_dir / "config.yaml")
        own_loop = agent_module(recorded["agent"])
        if hasattr(own_loop, "resume_run"):
            return own_loop.resume_run(run_dir, overrides.get("frames"))
    manager = CheckpointManager(run_dir / "checkpoints")
    payload = manager.load_latest()
    if payload is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from ({run_dir / 'checkpoints'} is empty)")
    dataset = payload.get("config", {}).get("dataset") if isinstance(payload.get("config"), dict) else None
    if dataset is not None:
        raise ValueError(f"{run_dir} is an offline run (trained on {dataset}): go on with `crl offline train "
                         f"{payload.get('agent')} --dataset {dataset} --logdir {run_dir} --updates N`")
    check_checkpoint_keys(payload, manager.loaded_path, RESUME_KEYS)
    check_checkpoint_fits(payload, manager.loaded_path, agent, recorded, run_dir / "config.yaml")
    agent_name = payload["agent"]
    carried = carried_resumable_fields((recorded or {}).get("run"), payload["config"]["run"])
    run, agent_config = resumed_configs(agent_name, payload["config"], carried | overrides, manager.loaded_path)
    commands = resumed_commands(recorded if recorded is not None else payload["config"])  # checked before any env
    trainer = OnlineTrainer(agent_name, run, agent_config, run_dir)
    try:
        with restoring(manager.loaded_path):
            trainer.restore(payload)
    except BaseException:
        trainer.close()
        raise
    trainer.commands = commands | {"ran_on": [*commands["ran_on"], *trainer.commands["ran_on"]]}
    if run.frames < trainer.counters["frames"]:
        raise ValueError(f"{manager.loaded_path} is at {trainer.counters['frames']} frames, past --frames "
                         f"{run.frames}: a resume can only go on (evaluate it with `crl eval {manager.loaded_path}`)")
    try:
        # the logs are read (and an unreadable one refused) before config.yaml records the resume
        with Logger(run_dir, resume_frames=trainer.counters["frames"]) as logger:
            write_config(run_dir, trainer.config_dict())
            at_checkpoint = trainer.counters["frames"]
            if trainer.last_eval.get("frames") == at_checkpoint and logger.last_logged.get("eval") != at_checkpoint:
                trainer.evaluate_and_log(logger)  # the checkpoint's evaluation row was lost in the crash
            return trainer.train(logger)
    finally:
        trainer.close()


def carried_resumable_fields(recorded_run: Any, saved_run: dict) -> dict[str, Any]:
    """config.yaml's values of the RESUMABLE_FIELDS (of its "run" mapping): a resume stopped
    before its first checkpoint recorded its budget there only, so the next resume carries them."""
    if not isinstance(recorded_run, dict):
        return {}
    return {k: recorded_run[k] for k in RESUMABLE_FIELDS if k in recorded_run and k in saved_run}


def resumed_commands(earlier: dict) -> dict[str, Any]:
    """config.yaml keeps the command that made the run, and lists each resume's command after it;
    `ran_on` (the machines, see where_it_ran) is carried over for the resume to add its own."""
    now = invoking_command()
    before = earlier.get("resumed_with") or []
    if not isinstance(before, list) or not all(isinstance(c, str) for c in before):
        raise ValueError(f"the run's recorded 'resumed_with' must be a list of commands, got {before!r} "
                         "(config.yaml edited?)")
    ran_on = earlier.get("ran_on") or []  # none in runs made before crl recorded it
    if not isinstance(ran_on, list) or not all(isinstance(r, dict) for r in ran_on):
        raise ValueError(f"the run's recorded 'ran_on' must be a list of mappings, got {ran_on!r} "
                         "(config.yaml edited?)")
    resumes = [*before, *([now] if now else [])]
    return {"command": earlier.get("command"), "resumed_with": resumes, "ran_on": ran_on}


def read_run_config(run_dir: str | Path) -> dict:
    from crl.logger import read_config

    return read_config(run_dir)


# The keys of config.yaml (and of a checkpoint's "config") that resume and evaluation read.
RUN_CONFIG_KEYS = ("agent", "run", "agent_config")
# What a checkpoint must hold to be evaluated / resumed: key -> the keys its value must hold.
EVAL_KEYS = {"config": RUN_CONFIG_KEYS, "counters": ("frames",), "agent_state": ()}
RESUME_KEYS = EVAL_KEYS | {"agent": (), "counters": ("frames", "agent_steps", "updates"), "replay": (),
                           "rng": ("torch", "numpy", "action_space", "python")}
OFFLINE_RESUME_KEYS = {"agent": (), "config": RUN_CONFIG_KEYS, "agent_state": (), "counters": ("frames", "agent_steps", "updates"), "rng": ("torch", "replay")}
IGNORED_WHEN_RESUMING = frozenset(f"run.{name}" for name in RESUMABLE_FIELDS)


def recorded_config(run_dir: Path) -> dict | None:
    """config.yaml of a run directory (None where there is none), with the keys resume reads."""
    if not (run_dir / "config.yaml").is_file():
        return None
    config = read_run_config(run_dir)
    check_run_config_shape(config, f"config file {run_dir / 'config.yaml'}", ConfigError)
    return config


def check_run_config_shape(config: Any, where: str, error: type[Exception]) -> None:
    """A recorded run config: a mapping whose `agent` is a name and whose `run` and `agent_config`
    are mappings (else the typed reading fails far from the file)."""
    require_keys(config, RUN_CONFIG_KEYS, where, error)
    kinds = {"agent": (str, "an agent name"), "run": (dict, "a mapping"), "agent_config": (dict, "a mapping")}
    for key, (kind, what) in kinds.items():
        if not isinstance(config[key], kind):
            raise error(f"{where}: {key!r} must be {what}, got {config[key]!r}")


def require_keys(mapping: Any, keys, where: str, error: type[Exception]) -> None:
    if keys and not isinstance(mapping, dict):
        raise error(f"{where} must be a mapping holding {', '.join(map(repr, keys))}, got {type(mapping).__name__}")
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise error(f"{where} lacks the key{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                    f"(it has {', '.join(map(repr, mapping)) or 'none'})")


@contextlib.contextmanager
def restoring(path: Path):
    """A checkpoint that unpickles but holds the wrong things (edited, another version's) is named
    in one line, not a traceback from deep inside load_state_dict or a generator."""
    try:
        yield
    except (CheckpointError, torch.OutOfMemoryError):  # (a device error is not the file's fault)
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"checkpoint {path}: cannot restore its contents "
                              f"({type(error).__name__}: {first_line})") from error


def check_checkpoint_keys(payload: dict, path: Path, required: dict[str, tuple]) -> None:
    require_keys(payload, required, f"checkpoint {path}", CheckpointError)
    for key, inner in required.items():
        require_keys(payload[key], inner, f"checkpoint {path}: {key!r}", CheckpointError)
    if "config" in required:
        check_run_config_shape(payload["config"], f"checkpoint {path}: 'config'", CheckpointError)
    for name, value in (payload.get("counters") or {}).items() if "counters" in required else ():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"checkpoint {path}: counter {name!r} must be a whole number >= 0, got {value!r}")
    if "agent" in required and not isinstance(payload["agent"], str):
        raise CheckpointError(f"checkpoint {path}: 'agent' must be an agent name, got {payload['agent']!r}")


def check_asked_agent(asked: str | None, recorded: str, config_path: Path) -> None:
    if asked is not None and asked != recorded:
        raise CheckpointError(f"{config_path} records agent {recorded!r}, not {asked!r} (the agent asked for); "
                              f"resume it as `crl train {recorded} --resume {config_path.parent}`")


def check_checkpoint_fits(payload: dict, path: Path, asked: str | None, recorded: dict | None,
                          config_path: Path) -> None:
    """The checkpoint must hold the agent asked for and the config that config.yaml records
    (fields a resume may change aside): a checkpoint of another run is refused, not trained on."""
    expected = asked or (recorded["agent"] if recorded else payload["agent"])
    if payload["agent"] != expected:
        source = ("was asked for" + (f"; {config_path} records {recorded['agent']!r}" if recorded else "")
                  if asked else f"is what {config_path} records")
        raise CheckpointError(f"checkpoint {path} holds agent {payload['agent']!r}, but agent {expected!r} {source}: "
                              "refusing to resume from another agent's checkpoint")
    if recorded is None:
        return
    try:
        check_saved_config(payload, path, expected, typed_config(recorded, str(config_path)))
    except CheckpointError as error:
        raise CheckpointError(f"{error} ('now' is what {config_path} records)") from None


def check_saved_config(payload: dict, path: Path, agent: str, now: dict) -> None:
    """The checkpoint's config, typed, must equal `now` but for the RESUMABLE_FIELDS. Typed, a field
    that one side lacks (added to the agent since) takes its default on both, as it will in the
    resumed run."""
    saved = {"agent": payload["agent"], "config": typed_config(payload["config"], f"checkpoint {path}")}
    check_compatible(saved, agent, now, path, ignore=IGNORED_WHEN_RESUMING)


def typed_config(config: dict, where: str) -> dict:
    module = agent_module(config["agent"])
    return {"agent": config["agent"], "run": to_dict(from_dict(RunConfig, config["run"], where)),
            "agent_config": to_dict(from_dict(module.Config, config["agent_config"], where))}


def resumed_configs(agent_name: str, saved: dict, overrides: dict[str, Any], path: Path):
    """The checkpoint's RunConfig and agent Config with `overrides` applied. An override of a field
    outside RESUMABLE_FIELDS must equal the saved value once typed (lr=1e-3 is 0.001)."""
    module = agent_module(agent_name)
    run = from_dict(RunConfig, saved["run"], f"checkpoint {path}")
    agent_config = from_dict(module.Config, saved["agent_config"], f"checkpoint {path}")
    run_changes, agent_changes = split_settings(agent_name, overrides, "--set")
    new_run, new_agent_config = replace(run, run_changes, "--set"), replace(agent_config, agent_changes, "--set")
    changed = [f"{name} ({value_of(name, run, agent_config)!r} -> {value_of(name, new_run, new_agent_config)!r})"
               for name in overrides if name not in RESUMABLE_FIELDS
               and value_of(name, run, agent_config) != value_of(name, new_run, new_agent_config)]
    if changed:
        raise CheckpointError(f"cannot change {', '.join(changed)} when resuming from {path}; "
                              f"only {', '.join(sorted(RESUMABLE_FIELDS))} may change")
    return new_run, new_agent_config


def value_of(name: str, run: RunConfig, agent_config) -> Any:
    return getattr(run, name) if name in field_names(RunConfig) else getattr(agent_config, name)


def make_agent(agent_name: str, env, agent_config, device, offline: bool = False):
    """The agent built on `env`'s spaces, after the checks that name the mismatch: an agent
    without a crl update loop (the SB3 baselines) offline, goal (dict) observations for an agent
    that learns from one array."""
    import gymnasium as gym

    module = agent_module(agent_name)
    if not hasattr(module, "Agent"):
        raise ValueError(f"{agent_name} trains in its own online loop (stable-baselines3); it cannot train "
                         "on a dataset: use sac, drq, drqv2, curl or a goal agent (crl list agents)")
    goal_agent = getattr(module.Agent, "batch_kind", None) == "goals"
    if isinstance(env.observation_space, gym.spaces.Dict) and not goal_agent:
        source = "the dataset's environment" if offline else "the environment"
        raise ValueError(f"{agent_name} learns from one observation array (states or pixels), but {source} "
                         f"has goal observations {sorted(env.observation_space.spaces)}: use a goal agent "
                         "(gcbc, gcrl, td-infonce)")
    return module.Agent(env.observation_space, env.action_space, agent_config, device=device)


def train_offline(agent_name: str, run: RunConfig, agent_config, replay: EpisodeReplay,
                  run_dir: str | Path, extra_config: dict | None = None, eval_env=None) -> dict[str, float]:
    """Gradient steps on a fixed dataset held in `replay`: no env steps, so `frames` and
    `agent_steps` stay 0 and curves are drawn against `updates`. Evaluates in `run.env` every
    `eval_every_updates` and checkpoints the agent (the dataset is not copied into checkpoints).
    A run directory that already holds checkpoints is resumed from the latest one. `extra_config`
    (e.g. the dataset spec) is recorded in config.yaml and the checkpoints. `eval_env`, when
    given, is the already-built `run.env` to evaluate in; it is closed at the end either way."""
    run_dir = Path(run_dir)
    device = resolve_device(run.device)
    torch.set_flush_denormal(True)
    seed_everything(run.seed)
    if len(replay) == 0:
        if eval_env is not None:
            eval_env.close()
        raise ValueError("the offline dataset is empty: nothing to train on")
    if eval_env is None:
        eval_env = envs.make(run.env, **env_options(run, training=False))
    with contextlib.closing(eval_env):  # also when building or restoring the agent fails
        agent = make_agent(agent_name, eval_env, agent_config, device, offline=True)
        keep_replay_frames_on_device(replay, run.replay_on_device, device)
        manager = CheckpointManager(run_dir / "checkpoints", keep=run.keep_checkpoints)
        counters = {"frames": 0, "agent_steps": 0, "updates": 0}
        payload = manager.load_latest() if manager.latest() is not None else None
        if payload is not None:
            check_checkpoint_keys(payload, manager.loaded_path, OFFLINE_RESUME_KEYS)
            check_offline_checkpoint_fits(payload, manager.loaded_path, agent_name, run, agent_config)
            with restoring(manager.loaded_path):
                agent.load_state_dict(payload["agent_state"])
                restore_torch_rng_states(payload["rng"])
                replay.rng.bit_generator.state = payload["rng"]["replay"]
            counters = dict(payload["counters"])
            if counters["updates"] > run.updates:
                raise ValueError(f"{manager.loaded_path} is at {counters['updates']} updates, past --updates "
                                 f"{run.updates}: ask for at least {counters['updates']}")
            if counters["updates"] == run.updates:  # finished: nothing to train, the config stays as it is
                return evaluate(agent, eval_env, run.eval_episodes, seed=run.seed + 10_000)
        config = ({"agent": agent_name, "run": to_dict(run), "agent_config": to_dict(agent_config)}
                  | (extra_config or {}))
        if payload is not None:
            earlier = resumed_commands(payload["config"])
            config |= earlier if "command" in config else {"ran_on": earlier["ran_on"]}
        config["ran_on"] = [*config.get("ran_on", []), where_it_ran(device, agent_config)]
        write_config(run_dir, config)

        def save():
            manager.save({"agent": agent_name, "config": config, "counters": dict(counters),
                          "agent_state": agent.state_dict(),
                          "rng": {**torch_rng_states(), "replay": replay.rng.bit_generator.state}},
                         frames=counters["updates"])

        result: dict[str, float] = {}
        progress = Progress(total=run.updates, initial=counters["updates"], desc="updates", unit="update")
        resume_at = counters["updates"] if payload is not None else None
        try:
            with Logger(run_dir, resume_frames=resume_at, step_counter="updates") as logger:
                while counters["updates"] < run.updates:
                    batch = replay.sample(agent_config.batch_size, kind=agent.batch_kind, device=device,
                                          **agent.sampler_options())
                    counters["updates"] += 1
                    metrics = agent.update(batch, counters["updates"])
                    if counters["updates"] % run.eval_every_updates == 0 or counters["updates"] == run.updates:
                        logger.log("train", counters, metrics)
                        video = run_dir / "videos" / f"eval_update_{counters['updates']:012d}.mp4" if run.video else None
                        result = evaluate(agent, eval_env, run.eval_episodes, seed=run.seed + 10_000, video_path=video)
                        logger.log("eval", counters, result)
                        save()
                    progress.update(counters["updates"], eval=result.get("episode_return"))
        finally:
            progress.close()
        return result


def check_offline_checkpoint_agent(payload: dict, path: Path, agent_name: str) -> None:
    if payload["agent"] != agent_name:
        raise CheckpointError(f"checkpoint {path} holds agent {payload['agent']!r}, not {agent_name!r} (the agent "
                              "asked for): use another --logdir, or the agent that made it")


def check_offline_checkpoint_fits(payload: dict, path: Path, agent_name: str, run: RunConfig, agent_config) -> None:
    """An offline run directory is resumed only by the agent and configs that made it (the
    RESUMABLE_FIELDS aside): another agent's or config's checkpoint is refused, not trained on."""
    check_offline_checkpoint_agent(payload, path, agent_name)
    check_saved_config(payload, path, agent_name,
                       {"agent": agent_name, "run": to_dict(run), "agent_config": to_dict(agent_config)})


@dataclass
class LoadedCheckpoint:
    agent: Any
    env: Any  # the evaluation env the agent was built for (the caller closes it)
    run: RunConfig
    payload: dict
    run_dir: Path


def sb3_model(path: Path) -> Path | None:
    """The newest SB3 model (agents/sb3.py's checkpoints/sb3_<frames>.zip) of a run directory, or
    `path` itself when it is such a file; None otherwise."""
    if path.is_dir():
        models = sorted((path / "checkpoints").glob("sb3_*.zip"))
        return models[-1] if models else None
    return path if path.name.startswith("sb3_") and path.suffix == ".zip" else None


def load_agent(path: str | Path, device: str = "auto") -> LoadedCheckpoint:
    """The agent of a checkpoint file or of a run directory's latest checkpoint, rebuilt on its
    evaluation env with its saved weights, on `device` (a `device` setting: "auto", "cpu", "cuda:1")."""
    path = Path(path)
    if (model := sb3_model(path)) is not None:
        raise ValueError(f"{model} is a stable-baselines3 model (agents/sb3.py), not a crl checkpoint: "
                         "its run's eval.csv holds its evaluations; load it with stable_baselines3's load()")
    if path.is_dir():
        manager = CheckpointManager(path / "checkpoints")
        payload = manager.load_latest()
        if payload is None:
            raise FileNotFoundError(f"{path} holds no crl checkpoint (looked in {path / 'checkpoints'})")
        run_dir, checkpoint = path, manager.loaded_path
    else:
        payload = load_checkpoint(path)
        # RUN/checkpoints/ckpt.pt belongs to RUN; a file anywhere else to its own folder
        run_dir, checkpoint = path.parent.parent if path.parent.name == "checkpoints" else path.parent, path
    check_checkpoint_keys(payload, checkpoint, EVAL_KEYS)
    config = payload["config"]
    module = agent_module(config["agent"])
    run = from_dict(RunConfig, config["run"], f"checkpoint {path}")
    agent_config = from_dict(module.Config, config["agent_config"], f"checkpoint {path}")
    env = envs.make(run.env, **env_options(run, training=False))
    try:
        agent = make_agent(config["agent"], env, agent_config, resolve_device(device))
        with restoring(checkpoint):
            agent.load_state_dict(payload["agent_state"])
    except BaseException:
        env.close()
        raise
    return LoadedCheckpoint(agent, env, run, payload, run_dir)


def evaluate_loaded(loaded: LoadedCheckpoint, episodes: int = 10, video: bool = False) -> dict[str, float]:
    """Evaluates a loaded checkpoint on its env (and closes it) over the episodes `crl eval` uses."""
    counters = loaded.payload["counters"]
    # offline runs take no env steps: their checkpoints are told apart by updates
    at = f"{counters['frames']:012d}" if counters["frames"] else f"update_{counters.get('updates', 0):012d}"
    video_path = loaded.run_dir / "videos" / f"checkpoint_{at}.mp4" if video else None
    try:
        result = evaluate(loaded.agent, loaded.env, episodes, seed=loaded.run.seed + 20_000, video_path=video_path)
    finally:
        loaded.env.close()
    written = {"video": str(video_path)} if video_path is not None and video_path.exists() else {}
    return {"agent": loaded.payload["config"]["agent"], "env": loaded.run.env, "frames": counters["frames"],
            "updates": counters.get("updates", 0), "episodes": episodes} | result | written


def evaluate_checkpoint(path: str | Path, episodes: int = 10, video: bool = False,
                        device: str = "auto") -> dict[str, float]:
    """`crl eval`: the latest checkpoint of a run directory, or one checkpoint file."""
    return evaluate_loaded(load_agent(path, device), episodes, video)
