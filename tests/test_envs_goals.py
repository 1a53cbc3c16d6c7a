"""Goal tasks: one interface, success agreeing with the distance to the goal."""

import numpy as np
import pytest

from crl import envs
from crl.envs.goals import FETCH_SUCCESS_RADIUS, MAZE_SUCCESS_RADIUS


def check_goal_step(obs, info, radius, strict):
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    distance = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
    assert info["distance"] == pytest.approx(distance, rel=1e-5)
    inside = distance < radius if strict else distance <= radius
    assert info["success"] == inside


@pytest.mark.parametrize("env_id", ["maze:PointMaze_UMaze-v3", "antmaze:AntMaze_UMaze-v5"])
def test_maze_success_agrees_with_distance(env_id):
    env = envs.make(env_id)
    obs, info = env.reset(seed=0)
    check_goal_step(obs, info, MAZE_SUCCESS_RADIUS, strict=False)
    env.action_space.seed(0)
    for _ in range(50):
        obs, _, _, _, info = env.step(env.action_space.sample())
        check_goal_step(obs, info, MAZE_SUCCESS_RADIUS, strict=False)


def test_maze_success_true_at_the_goal():
    env = envs.make("maze:PointMaze_UMaze-v3")
    cell = np.array([1, 1])
    obs, info = env.reset(seed=0, options={"goal_cell": cell, "reset_cell": cell})
    obs, _, _, _, info = env.step(np.zeros(2))
    assert info["success"]
    check_goal_step(obs, info, MAZE_SUCCESS_RADIUS, strict=False)


def test_fetch_reach_success_when_reached():
    env = envs.make("fetch:Reach")
    obs, info = env.reset(seed=0)
    assert not info["success"]
    for _ in range(40):
        action = np.zeros(4)
        action[:3] = np.clip(10 * (obs["desired_goal"] - obs["achieved_goal"]), -1, 1)
        obs, _, _, _, info = env.step(action)
        check_goal_step(obs, info, FETCH_SUCCESS_RADIUS, strict=True)
    assert info["success"]


def test_fetch_push_steps():
    env = envs.make("fetch:Push")
    obs, info = env.reset(seed=0)
    assert obs["observation"].shape == (25,)
    obs, _, _, _, info = env.step(env.action_space.sample())
    check_goal_step(obs, info, FETCH_SUCCESS_RADIUS, strict=True)


@pytest.mark.parametrize("env_id", ["maze:PointMaze_UMaze-v3", "fetch:Reach"])
def test_goal_envs_render_for_evaluation_videos(env_id, tmp_path):
    from crl.train import evaluate

    class Still:
        def act(self, obs, explore):
            return np.zeros((1,) + env.action_space.shape, np.float32)

    env = envs.make(env_id, max_episode_steps=3)
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.std() > 0
    evaluate(Still(), env, episodes=1, seed=0, video_path=tmp_path / "eval.mp4")
    assert (tmp_path / "eval.mp4").stat().st_size > 0
    env.close()
