"""Goal-reaching tasks from gymnasium-robotics behind one goal interface.

Every goal env returns dict observations {"observation", "achieved_goal", "desired_goal"}
(float32) and puts `info["success"]` (bool) and `info["distance"]` (||achieved - desired||) in
every step's info, whatever the underlying suite calls them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from crl.envs.rendering import explained

MAZE_NAMES = tuple(f"PointMaze_{m}-v3" for m in ("UMaze", "Medium", "Large", "Open"))
ANTMAZE_NAMES = tuple(f"AntMaze_{m}-v5" for m in ("UMaze", "Medium", "Large", "Open"))
FETCH_NAMES = ("Reach", "Push", "Slide", "PickAndPlace")
# Success radii of the suites themselves: the mazes count a goal reached within 0.45 m,
# Fetch within 5 cm (its `distance_threshold`).
MAZE_SUCCESS_RADIUS = 0.45
FETCH_SUCCESS_RADIUS = 0.05
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


def _register() -> None:
    try:  # its import prints a notice about Adroit hand rewards to stderr on every command; no crl env is one
        from farama_notifications import notifications

        notifications.pop("gymnasium_robotics", None)
    except ImportError:
        pass
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def maze_variants(prefix: str) -> list[str]:
    """All registered maze ids with this prefix (diverse-goal variants included), newest versions."""
    _register()
    version = "-v3" if prefix == "PointMaze" else "-v5"
    return sorted(k for k in gym.registry if k.startswith(prefix + "_") and k.endswith(version))


class GoalInterface(gym.Wrapper):
    """Normalises success reporting; counts frames as agent steps (no action repeat here)."""

    def __init__(self, env: gym.Env, success_radius: float):
        super().__init__(env)
        self.success_radius = success_radius
        self.frames = 0
        spaces = env.observation_space.spaces
        self.observation_space = gym.spaces.Dict(
            {k: gym.spaces.Box(-np.inf, np.inf, spaces[k].shape, np.float32) for k in GOAL_KEYS}
        )

    def _observation(self, obs: dict) -> dict:
        return {k: np.asarray(obs[k], dtype=np.float32) for k in GOAL_KEYS}

    def _goal_info(self, obs: dict, info: dict, step_frames: int) -> dict:
        distance = float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]))
        success = info.get("success", info.get("is_success", distance <= self.success_radius))
        return dict(info, success=bool(success), distance=distance, frames=self.frames,
                    step_frames=step_frames)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs), self._goal_info(obs, info, 0)

    def render(self):
        return explained(self.env.render)  # a GL failure says which MUJOCO_GL values work

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames += 1
        return self._observation(obs), float(reward), terminated, truncated, self._goal_info(obs, info, 1)


def make_goal_env(suite: str, name: str, **options) -> gym.Env:
    _register()
    # rgb_array makes no renderer until render() is called (evaluation videos); without a mode
    # gymnasium's render() raises
    options.setdefault("render_mode", "rgb_array")
    if suite == "fetch":
        return GoalInterface(gym.make(f"Fetch{name}-v4", **options), FETCH_SUCCESS_RADIUS)
    return GoalInterface(gym.make(name, **options), MAZE_SUCCESS_RADIUS)
