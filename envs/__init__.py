"""Environments behind one factory: `crl.envs.make(env_id, **options)`.

Ids are `suite:name`:
  dmc:<domain>-<task>        DeepMind Control from pixels (84x84, frame stack 3, standard repeat)
  dmc-state:<domain>-<task>  the same task's state vector
  atari:<Game>               Atari-100k protocol, frame stack 4
  maze:<PointMaze id>        gymnasium-robotics PointMaze, goal interface
  maze-pixels:<PointMaze id> the same mazes from top-down images, goals given as images (64x64)
  antmaze:<AntMaze id>       gymnasium-robotics AntMaze, goal interface
  fetch:<Reach|Push|...>     gymnasium-robotics Fetch, goal interface
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from crl.envs.rendering import set_default_backend

set_default_backend()  # before anything imports mujoco or dm_control

SUITES = ("dmc", "dmc-state", "atari", "maze", "maze-pixels", "antmaze", "fetch")
DEFAULT_FRAME_STACK = {"dmc": 3, "atari": 4}


class UnknownEnvError(ValueError):
    pass


@functools.lru_cache(maxsize=None)
def env_ids(suite: str) -> tuple[str, ...]:
    """Every valid id of one suite."""
    if suite in ("dmc", "dmc-state"):
        from crl.envs.dmc import all_tasks

        return tuple(f"{suite}:{domain}-{task}" for domain, task in all_tasks())
    if suite == "atari":
        from crl.envs.atari import all_games

        return tuple(f"atari:{game}" for game in all_games())
    if suite in ("maze", "maze-pixels", "antmaze"):
        from crl.envs.goals import maze_variants

        prefix = "AntMaze" if suite == "antmaze" else "PointMaze"
        return tuple(f"{suite}:{name}" for name in maze_variants(prefix))
    if suite == "fetch":
        from crl.envs.goals import FETCH_NAMES

        return tuple(f"fetch:{name}" for name in FETCH_NAMES)
    raise UnknownEnvError(f"unknown suite {suite!r}; suites are {', '.join(SUITES)}")


def all_env_ids() -> list[str]:
    return [env_id for suite in SUITES for env_id in env_ids(suite)]


def check_env_id(env_id: str) -> tuple[str, str]:
    """Splits a valid id into (suite, name); an unknown one raises an error naming the closest."""
    suite, sep, name = env_id.partition(":")
    if not sep or suite not in SUITES:
        close = difflib.get_close_matches(env_id, all_env_ids(), n=5, cutoff=0.5)
        hint = f" Closest ids: {', '.join(close)}." if close else ""
        raise UnknownEnvError(
            f"unknown environment id {env_id!r}: ids look like 'suite:name' with suite one of "
            f"{', '.join(SUITES)} (e.g. dmc:cheetah-run, atari:Pong).{hint} `crl list envs` prints all."
        )
    valid = env_ids(suite)
    if env_id not in valid:
        close = difflib.get_close_matches(env_id, valid, n=5, cutoff=0.4)
        hint = f" Closest ids: {', '.join(close)}." if close else ""
        raise UnknownEnvError(
            f"unknown {suite} environment {name!r} in {env_id!r}.{hint} `crl list envs` prints all."
        )
    return suite, name


def hashed_seed(*parts: int) -> int:
    """A 32-bit seed hashed from integers (numpy's SeedSequence): nearby inputs give unrelated
    seeds, e.g. (run seed, frames) for a resumed run's reset, (dataset seed, k) for episode k."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def stack_frames(env: gym.Env, frame_stack: int) -> gym.Env:
    """Stacks the last `frame_stack` frames along channels, (C,H,W) -> (k*C,H,W), newest last.

    At reset the stack repeats the first frame (gymnasium's `padding_type="reset"`), which is
    the convention the replay follows when it rebuilds stacks.
    """
    if frame_stack <= 1:
        return env
    channels, height, width = env.observation_space.shape
    env = gym.wrappers.FrameStackObservation(env, frame_stack, padding_type="reset")
    return gym.wrappers.ReshapeObservation(env, (frame_stack * channels, height, width))


def make(env_id: str, **options: Any) -> gym.Env:
    """Makes one environment. Options go to the suite's constructor; `frame_stack` to stacking.

    dmc: height, width, camera_id, action_repeat, visuals ("standard" | "fast"), shadow_size
    (texels; default by image size, 2048 = the suite's own), seed.
    atari: terminal_on_life_loss, noop_max, frame_skip, repeat_action_probability.
    maze/antmaze/fetch: passed to gymnasium.make (e.g. continuing_task, max_episode_steps).
    maze-pixels: size (image side, default 64); the rest as for maze.
    """
    suite, name = check_env_id(env_id)
    if suite in ("dmc", "dmc-state"):
        from crl.envs.dmc import make_dmc

        frame_stack = options.pop("frame_stack", DEFAULT_FRAME_STACK["dmc"] if suite == "dmc" else 1)
        env = make_dmc(name, pixels=suite == "dmc", **options)
        return stack_frames(env, frame_stack) if suite == "dmc" else env
    if suite == "atari":
        from crl.envs.atari import make_atari

        frame_stack = options.pop("frame_stack", DEFAULT_FRAME_STACK["atari"])
        return stack_frames(make_atari(name, **options), frame_stack)
    if suite == "maze-pixels":
        from crl.envs.pixel_goals import make_pixel_maze

        return make_pixel_maze(name, **options)
    from crl.envs.goals import make_goal_env

    return make_goal_env(suite, name, **options)


def make_vector(
    env_id: str,
    num_envs: int,
    *,
    asynchronous: bool = True,
    autoreset_mode: str = "SameStep",
    **options: Any,
) -> gym.vector.VectorEnv:
    """`num_envs` copies in subprocesses (rendering uses both cores) or in-process.

    Same-step autoreset: at an episode's end the returned observation is already the next
    episode's first one and the final observation is in `infos["final_obs"]`.
    """
    check_env_id(env_id)  # fail here, not in a subprocess
    fns: list[Callable[[], gym.Env]] = [functools.partial(make, env_id, **options) for _ in range(num_envs)]
    mode = gym.vector.AutoresetMode(autoreset_mode)
    if asynchronous and num_envs > 1:
        # forkserver, not fork: a forked child of a process that already holds an EGL context can
        # deadlock in Mesa. Scripts that make vector envs need the usual `if __name__ == "__main__":`.
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="forkserver")
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
