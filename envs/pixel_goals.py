"""PointMaze from pixels with image goals: `maze-pixels:<PointMaze id>`.

The observation is a top-down (orthographic) image of the maze with the ball in it; the goal is the image
the same camera sees with the ball placed at the goal position (rendered once per goal, on a
scratch copy of the simulation state). The maze's red goal marker is hidden, so only the goal
image tells where the goal is. There is no `achieved_goal`: the image of a later state is the
goal it achieves, so agents relabel with `goal_field="observation"`.

The ball's and the goal's xy positions stay out of the observation (an agent must not see them)
and go to `info["position"]` and `info["goal_position"]`, next to the goal interface's
`success`, `distance` (the maze's own 0.45 m radius) and frame counts.

One image shows where the ball is, not how fast it moves: the point mass has momentum, so a single
frame is not a Markov state (the image-based point tasks of the contrastive RL papers were
kinematic). Stacking frames would restore it; not done here yet.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from crl.envs.goals import make_goal_env
from crl.envs.rendering import backend_error

DEFAULT_SIZE = 64
TOP_DOWN_ELEVATION = -90.0  # degrees: looking straight down
NORTH_UP_AZIMUTH = 90.0  # +x to the right and +y up: the image reads like the maze map
WALL_STRIP = 0.25  # cells of the outer walls shown on each side, so the boundary is visible


class PixelGoalMaze(gym.Wrapper):
    """Wraps a goal-interface PointMaze: uint8 (3, size, size) state and goal images."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env: gym.Env, size: int = DEFAULT_SIZE):
        super().__init__(env)
        self.size = size
        maze_env = env.unwrapped
        self._maze = maze_env.maze
        self._model = maze_env.point_env.model
        self._data = maze_env.point_env.data
        self._model.site_rgba[maze_env.target_site_id, 3] = 0.0  # alpha 0: MuJoCo skips the goal marker
        self._goal_data = None  # scratch state for goal images; the simulation's own data stays untouched
        self._renderer = None  # made on first render: keeps GL contexts out of forked parents
        self._camera = None
        self._goal_position = None
        self._frame = self._goal_frame = None  # last images, (3, size, size)
        image = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        self.observation_space = gym.spaces.Dict({"observation": image, "desired_goal": image})

    @property
    def render_mode(self) -> str:
        return "rgb_array"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs), self._info(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), reward, terminated, truncated, self._info(obs, info)

    def render(self) -> np.ndarray:
        """(size, 2 * size, 3): the current view, then the goal image, side by side."""
        if self._frame is None:
            return None
        return np.concatenate([self._frame, self._goal_frame], axis=2).transpose(1, 2, 0)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()

    # -- internals ----------------------------------------------------------------------------

    def _observation(self, obs: dict) -> dict:
        # The goal image follows the maze's `desired_goal` (which a continuing task with
        # reset_target=True moves once reached), so it is re-rendered only when the goal moves.
        goal = np.asarray(obs["desired_goal"], np.float64)
        if self._goal_position is None or not np.array_equal(goal, self._goal_position):
            self._goal_position = goal.copy()
            self._goal_frame = self._render_ball_at(goal)
        self._frame = self._render(self._data)
        return {"observation": self._frame, "desired_goal": self._goal_frame}

    def _info(self, obs: dict, info: dict) -> dict:
        return dict(info, position=np.asarray(obs["achieved_goal"], np.float32),
                    goal_position=np.asarray(obs["desired_goal"], np.float32))

    def _render_ball_at(self, xy: np.ndarray) -> np.ndarray:
        import mujoco

        if self._goal_data is None:
            self._goal_data = mujoco.MjData(self._model)
        self._goal_data.qpos[:2] = xy  # the ball's two slide joints are the whole state
        mujoco.mj_kinematics(self._model, self._goal_data)  # site positions are all the renderer needs
        return self._render(self._goal_data)

    def _render(self, data) -> np.ndarray:
        if self._renderer is None:
            self._renderer, self._camera = self._make_renderer()
        self._renderer.update_scene(data, camera=self._camera)
        return np.ascontiguousarray(self._renderer.render().transpose(2, 0, 1))

    def _make_renderer(self):
        import mujoco

        try:
            renderer = mujoco.Renderer(self._model, self.size, self.size)
        except Exception as error:  # noqa: BLE001 - a broken GL stack fails in many ways
            raise backend_error(error) from error
        return renderer, top_down_camera(self._model, self._maze)


def top_down_camera(model, maze):
    """An orthographic camera straight above the maze, framing its free cells.

    Orthographic, so the image is a map: the ball has the same size everywhere, pixels are linear
    in xy, and no wall hides part of the ball at the edge of the view. Its view spans the larger
    side of the maze minus the outer wall ring, plus a strip of that wall on each side. With an
    orthographic projection MuJoCo reads the free camera's `fovy` as that span in metres (this
    changes only this model's visual settings; the wrapped env's own renderer is never used).
    """
    import mujoco

    scale = maze.maze_size_scaling
    inner_cells = max(maze.map_width, maze.map_length) - 2  # the outer ring is always walls
    model.vis.global_.orthographic = 1
    model.vis.global_.fovy = (inner_cells + 2 * WALL_STRIP) * scale
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = (0.0, 0.0, 0.0)  # the maze is built centred on the origin
    camera.elevation = TOP_DOWN_ELEVATION
    camera.azimuth = NORTH_UP_AZIMUTH
    camera.distance = 2.0 * maze.maze_height * scale + 1.0  # anywhere above the wall tops
    return camera


def make_pixel_maze(name: str, *, size: int = DEFAULT_SIZE, **options) -> PixelGoalMaze:
    """`name` is a PointMaze id; other options go to gymnasium.make (continuing_task,
    reset_target, max_episode_steps, ...)."""
    return PixelGoalMaze(make_goal_env("maze", name, **options), size=size)
