"""Offline dataset generation: run a policy in an environment and record its episodes.

`collect(env_id, policy, episodes)` returns a `crl.datasets.Dataset` whose episodes follow
Minari's layout: observations T+1 rows (a dict of arrays for goal envs), actions, rewards,
terminations and truncations T rows, infos T+1 rows ("success" and "distance" where the env
reports them). The policy is one of

  "random"   uniform over the action space (seeded);
  "planner"  the noisy waypoint controller of `crl.envs.maze_planner` (PointMaze; AntMaze needs a
             walking policy, which the suite does not provide yet);
  a path     a crl checkpoint file or run directory (its latest checkpoint). The agent acts
             deterministically (explore=False), i.e. the policy that `crl eval` scores; `noise`
             then perturbs it: Gaussian noise of that std on continuous actions (clipped), or for
             discrete actions the probability of a uniformly random action instead (epsilon).
             Noise 0 (the default for checkpoints) records the evaluation policy as is.

Reproducibility: episode k resets the env with a seed drawn from (seed, k) and draws its maze
cells, planner noise and random actions from generators seeded by (that seed, stream), so the same
call gives the same arrays bit for bit, any episode can be regenerated alone (`first_episode=k`),
and datasets of different seeds share no episode (with seed + k, seeds 0 and 1 shared all but one).

Maze styles ("diverse" | "fixed-goal", see `crl.envs.maze_planner`) choose each episode's goal and
start cells through the env's reset options, whatever the policy; other suites ignore the style.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from crl import envs

INFO_KEYS = ("success", "distance")
STREAMS = {"cells": 1, "noise": 2, "random": 3}  # independent generators per episode

Policy = Callable[[Any], np.ndarray]


# ---------------------------------------------------------------------------------- public


def collect(env_id: str | None, policy: str | Path, episodes: int, *, seed: int = 0,
            style: str = "diverse", noise: float | None = None, max_episode_steps: int | None = None,
            progress: bool = True, goal_cell: tuple[int, int] | None = None,
            start_cell: tuple[int, int] | None = None, env_options: dict | None = None,
            first_episode: int = 0, device: str = "auto"):
    """Records `episodes` episodes of `policy` in `env_id` as a `crl.datasets.Dataset`.

    noise: None picks the policy's default (the planner's DEFAULT_NOISE, 0 for checkpoints;
    unused by "random"). max_episode_steps: a step limit below the env's own (the episode is then
    truncated there). goal_cell / start_cell pin maze cells (row, col) in every episode.
    first_episode: the index of the first episode (the episodes are first_episode, ...).
    device: where a checkpoint's agent runs (a `device` setting: "auto", "cpu", "cuda:1").
    env_id may be None for a checkpoint (its own env); for a checkpoint it must match the run's.

    Metadata: env_id, policy, noise, seed, episodes, max_episode_steps, steps (transitions); for
    mazes style, goal_cells and start_cells (one [row, col] per episode); for goal envs
    success_rate (episodes that reached the goal at some step) and final_success_rate.
    Keys whose value would be None are left out.
    """
    from crl.datasets import Dataset

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    source = CollectionSource.build(env_id, policy, noise, env_options or {}, device)
    is_maze = source.env_id.partition(":")[0] in ("maze", "antmaze", "maze-pixels")
    check_episode_limit(source, max_episode_steps)
    if is_maze:
        from crl.envs.maze_planner import STYLES

        if style not in STYLES:
            raise ValueError(f"unknown collection style {style!r}; styles: {', '.join(STYLES)}")
    recorded, cells = [], []
    bar = _progress_bar(episodes, f"collect {source.env_id}", progress)
    try:
        for k in range(first_episode, first_episode + episodes):
            episode_seed = _episode_seed(seed, k)
            reset_options = (_maze_cells(source.env, style, episode_seed, goal_cell, start_cell)
                             if is_maze else None)
            recorded.append(run_episode(source.env, source.policy_for_episode(episode_seed), episode_seed,
                                        reset_options, max_episode_steps))
            cells.append(reset_options)
            bar.update(1)
    finally:
        bar.close()
        source.env.close()
    metadata = describe(source, str(policy), seed, max_episode_steps, recorded,
                        style if is_maze else None, cells)
    if first_episode:
        metadata["first_episode"] = first_episode
    return Dataset(episodes=recorded, env_id=source.env_id, metadata=metadata,
                   source=f"crl.collect policy={policy}")


def check_episode_limit(source: CollectionSource, max_episode_steps: int | None) -> None:
    """max_episode_steps only cuts episodes shorter: above the env's own limit it would be recorded
    in the metadata as a limit no episode had."""
    spec = getattr(source.env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None)
    if max_episode_steps is not None and limit is not None and max_episode_steps > limit:
        source.env.close()
        raise ValueError(f"max_episode_steps {max_episode_steps} is above {source.env_id}'s own limit of {limit} "
                         "steps: it can only cut episodes shorter")


def describe(source: CollectionSource, policy: str, seed: int, max_episode_steps: int | None,
             recorded: list, style: str | None, cells: list[dict | None]) -> dict:
    """The dataset's metadata (see `collect`); no None values, which writers cannot store."""
    metadata = {"env_id": source.env_id, "policy": policy, "noise": source.noise, "seed": seed,
                "episodes": len(recorded), "max_episode_steps": max_episode_steps,
                "steps": int(sum(len(e.actions) for e in recorded)), **source.about_policy}
    if style is not None:
        metadata |= {"style": style, "goal_cells": [list(c["goal_cell"]) for c in cells],
                     "start_cells": [list(c["reset_cell"]) for c in cells]}
    metadata |= success_rates(recorded)
    return {k: v for k, v in metadata.items() if v is not None}


def run_episode(env: gym.Env, policy: Policy, seed: int, reset_options: dict | None = None,
                max_episode_steps: int | None = None):
    """One episode in Minari's layout (`crl.datasets.Episode`)."""
    from crl.datasets import Episode

    obs, info = env.reset(seed=seed, options=reset_options)
    observations, infos = [obs], [info]
    actions, rewards, terminations, truncations = [], [], [], []
    while True:
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        at_limit = max_episode_steps is not None and len(actions) + 1 >= max_episode_steps
        observations.append(obs)
        infos.append(info)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append((truncated or at_limit) and not terminated)
        if terminated or truncated or at_limit:
            break
    return Episode(observations=_stack(observations), actions=_stack_actions(actions, env.action_space),
                   rewards=np.asarray(rewards, np.float32), terminations=np.asarray(terminations, bool),
                   truncations=np.asarray(truncations, bool), infos=_stack_infos(infos))


def success_rates(episodes) -> dict[str, float]:
    """For goal envs: the fraction of episodes that reach the goal at some step, and at the end."""
    if not episodes or "success" not in episodes[0].infos:
        return {}
    reached = [bool(np.any(e.infos["success"])) for e in episodes]
    final = [bool(e.infos["success"][-1]) for e in episodes]
    return {"success_rate": float(np.mean(reached)), "final_success_rate": float(np.mean(final))}


# ---------------------------------------------------------------------------------- policies


@dataclass
class CollectionSource:
    """The env to record in and a policy factory that reseeds per episode."""

    env_id: str
    env: gym.Env
    noise: float | None
    policy_for_episode: Callable[[int], Policy]
    about_policy: dict = field(default_factory=dict)  # e.g. the checkpoint's counters

    @classmethod
    def build(cls, env_id: str | None, policy: str | Path, noise: float | None, env_options: dict,
              device: str = "auto"):
        if str(policy) == "random":
            if noise is not None:
                raise ValueError("the 'random' policy takes no noise: its actions are uniform already")
            env = _make(env_id, env_options)
            return cls(env_id, env, None, lambda s: random_policy(env.action_space, s))
        if str(policy) == "planner":
            return cls._planner(env_id, noise, env_options)
        if Path(policy).exists():
            return cls._checkpoint(env_id, Path(policy), noise, env_options, device)
        raise ValueError(f"unknown policy {str(policy)!r}: use 'random', 'planner' (mazes) or the path "
                         "of a crl checkpoint file or run directory")

    @classmethod
    def _planner(cls, env_id, noise, env_options):
        from crl.envs.maze_planner import DEFAULT_NOISE, MazePlanner

        if env_id is None or env_id.partition(":")[0] not in ("maze", "antmaze"):
            raise ValueError("the 'planner' policy drives maze envs only (maze:..., antmaze:...), "
                             f"not {env_id!r}")
        env = _make(env_id, env_options)
        noise = DEFAULT_NOISE if noise is None else float(noise)
        try:
            planner = MazePlanner(env, noise=noise)  # raises for AntMaze: no walking policy yet
        except ValueError:
            env.close()
            raise

        def for_episode(episode_seed: int) -> Policy:
            planner.reset(seed=_seed(episode_seed, "noise"))
            return planner.act

        return cls(env_id, env, noise, for_episode)

    @classmethod
    def _checkpoint(cls, env_id, path: Path, noise, env_options, device):
        from crl.train import env_options as run_env_options
        from crl.train import load_agent

        loaded = load_agent(path, device)  # the agent, built on its own evaluation env
        agent, run_env_id, env = loaded.agent, loaded.run.env, loaded.env
        if env_id is not None and env_id != run_env_id:
            env.close()
            raise ValueError(f"checkpoint {path} was trained on {run_env_id!r}, not {env_id!r} "
                             "(omit --env, or pass env_id=None, to use the checkpoint's env)")
        if env_options:  # extra options: an env made with them replaces the evaluation env
            env.close()
            env = _make(run_env_id, run_env_options(loaded.run, training=False) | env_options)
        noise = 0.0 if noise is None else float(noise)
        if isinstance(env.action_space, gym.spaces.Discrete) and noise > 1:
            env.close()
            raise ValueError(f"noise {noise} for discrete actions is the probability of a random action: at most 1")

        def for_episode(episode_seed: int) -> Policy:
            return noisy_agent_policy(agent, env.action_space, noise, _seed(episode_seed, "noise"))

        counters = loaded.payload.get("counters", {})
        return cls(run_env_id, env, noise, for_episode,
                   {"checkpoint_frames": counters.get("frames"), "checkpoint_updates": counters.get("updates")})


def random_policy(action_space: gym.Space, seed: int) -> Policy:
    space = _copy_space(action_space)
    space.seed(_seed(seed, "random"))
    return lambda obs: space.sample()


def noisy_agent_policy(agent, action_space: gym.Space, noise: float, seed: int) -> Policy:
    """The agent's deterministic action, perturbed by `noise` (module docstring)."""
    rng = np.random.default_rng(seed)
    discrete = isinstance(action_space, gym.spaces.Discrete)

    def act(obs):
        action = np.asarray(agent.act(_batch(obs), explore=False))[0]
        if noise <= 0:
            return action
        if discrete:
            return np.int64(rng.integers(action_space.n)) if rng.random() < noise else action
        perturbed = action + rng.normal(0.0, noise, size=action.shape)
        return np.clip(perturbed, action_space.low, action_space.high).astype(action_space.dtype)

    return act


# ---------------------------------------------------------------------------------- helpers


def _make(env_id: str | None, options: dict) -> gym.Env:
    if env_id is None:
        raise ValueError("env_id is needed for the 'random' and 'planner' policies")
    return envs.make(env_id, **options)


def _maze_cells(env, style, episode_seed, goal_cell, start_cell) -> dict:
    from crl.envs.maze_planner import episode_cells, maze_of

    rng = np.random.default_rng(_seed(episode_seed, "cells"))
    return episode_cells(maze_of(env).maze_map, style, rng, goal_cell=goal_cell, start_cell=start_cell)


def _episode_seed(seed: int, k: int) -> int:
    """Episode k's seed: a hash of (seed, k), so nearby dataset seeds give unrelated episodes."""
    return envs.hashed_seed(seed, k)


def _seed(episode_seed: int, stream: str) -> int:
    """A seed for one stream of one episode, independent of the env's own (seeded by episode_seed)."""
    return envs.hashed_seed(episode_seed, STREAMS[stream])


def _copy_space(space: gym.Space) -> gym.Space:
    if isinstance(space, gym.spaces.Box):
        return gym.spaces.Box(space.low, space.high, space.shape, space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return gym.spaces.Discrete(space.n, start=space.start)
    raise TypeError(f"random actions for {space} are not supported")


def _batch(obs):
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def _stack(observations: list):
    if isinstance(observations[0], dict):
        return {k: np.stack([np.asarray(o[k]) for o in observations]) for k in observations[0]}
    return np.stack([np.asarray(o) for o in observations])


def _stack_actions(actions: list, space: gym.Space) -> np.ndarray:
    dtype = np.int64 if isinstance(space, gym.spaces.Discrete) else np.float32
    return np.stack([np.asarray(a) for a in actions]).astype(dtype)


def _stack_infos(infos: list[dict]) -> dict[str, np.ndarray]:
    """The INFO_KEYS present in every step's info, T+1 rows ("success" as bool)."""
    keys = [k for k in INFO_KEYS if all(k in info for info in infos)]
    stacked = {k: np.asarray([info[k] for info in infos]) for k in keys}
    if "success" in stacked:
        stacked["success"] = stacked["success"].astype(bool)
    if "distance" in stacked:
        stacked["distance"] = stacked["distance"].astype(np.float32)
    return stacked


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="episode", disable=not enabled)
