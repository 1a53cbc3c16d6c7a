"""maze-pixels: state and goal images of PointMaze; the goal image is the ball at the goal."""

import mujoco
import numpy as np
import pytest

from crl import envs
from crl.envs.goals import MAZE_SUCCESS_RADIUS

ENV_ID = "maze-pixels:PointMaze_UMaze-v3"


@pytest.fixture
def make():
    made = []

    def make_env(env_id=ENV_ID, **options):
        made.append(envs.make(env_id, **options))
        return made[-1]

    yield make_env
    for env in made:
        env.close()


def teleport(env, xy):
    """Puts the ball at rest at `xy` in the running simulation."""
    point = env.unwrapped.point_env
    point.data.qpos[:2] = xy
    point.data.qvel[:] = 0.0
    mujoco.mj_forward(point.model, point.data)


def assert_near_equal(a, b):
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.mean() < 0.5 and diff.max() <= 8, (diff.mean(), diff.max())


def test_id_is_listed_and_made_with_options(make):
    assert ENV_ID in envs.env_ids("maze-pixels")
    assert "maze-pixels:PointMaze_Large_Diverse_GR-v3" in envs.env_ids("maze-pixels")
    env = make(size=32, max_episode_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs["observation"].shape == obs["desired_goal"].shape == (3, 32, 32)
    truncated = [env.step(np.zeros(2))[3] for _ in range(3)]
    assert truncated == [False, False, True]


def test_observations_are_images_in_their_space(make):
    env = make()
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation", "desired_goal"}  # no positions: the agent sees pixels only
    for key in obs:
        assert obs[key].shape == (3, 64, 64) and obs[key].dtype == np.uint8
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert info["position"].shape == info["goal_position"].shape == (2,)
    assert info["position"].dtype == np.float32 and info["frames"] == 1 and info["step_frames"] == 1
    frame = env.render()
    assert frame.shape == (64, 128, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[:, :64], obs["observation"].transpose(1, 2, 0))
    np.testing.assert_array_equal(frame[:, 64:], obs["desired_goal"].transpose(1, 2, 0))


def test_goal_image_is_the_ball_at_the_goal(make):
    env = make()
    obs, info = env.reset(seed=0)
    assert not np.array_equal(obs["observation"], obs["desired_goal"])
    teleport(env, info["goal_position"])
    obs, _, _, _, info = env.step(np.zeros(2))
    np.testing.assert_allclose(info["position"], info["goal_position"], atol=1e-6)
    assert info["success"] and info["distance"] < 1e-6
    assert_near_equal(obs["observation"], obs["desired_goal"])


def test_goal_marker_is_not_drawn(make):
    """Same seed and start cell, two goal cells: the state images must not show the goal."""
    env = make()
    start = np.array([1, 1])
    first, info_a = env.reset(seed=5, options={"reset_cell": start, "goal_cell": np.array([3, 1])})
    second, info_b = env.reset(seed=5, options={"reset_cell": start, "goal_cell": np.array([1, 3])})
    np.testing.assert_array_equal(info_a["position"], info_b["position"])
    assert not np.allclose(info_a["goal_position"], info_b["goal_position"])
    np.testing.assert_array_equal(first["observation"], second["observation"])
    assert not np.array_equal(first["desired_goal"], second["desired_goal"])


def test_success_and_distance_agree_with_positions(make):
    env = make()
    obs, info = env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(40):
        distance = np.linalg.norm(info["position"].astype(np.float64) - info["goal_position"])
        assert info["distance"] == pytest.approx(distance, abs=1e-5)
        assert info["success"] == (info["distance"] <= MAZE_SUCCESS_RADIUS)
        obs, _, _, _, info = env.step(env.action_space.sample())


def test_images_change_when_the_ball_moves(make):
    env = make()
    obs, info = env.reset(seed=2, options={"reset_cell": np.array([1, 1]), "goal_cell": np.array([3, 1])})
    start_image, goal_image, start = obs["observation"], obs["desired_goal"], info["position"]
    for _ in range(20):
        obs, _, _, _, info = env.step(np.array([1.0, 0.0]))  # along the top corridor
    assert np.linalg.norm(info["position"] - start) > 0.4
    assert np.abs(obs["observation"].astype(int) - start_image).sum() > 0
    np.testing.assert_array_equal(obs["desired_goal"], goal_image)


def test_goal_image_follows_a_moved_goal(make):
    """reset_target=True: the maze draws a new goal once reached; the goal image must follow."""
    env = make(continuing_task=True, reset_target=True)
    obs, info = env.reset(seed=3)
    first_goal_image = obs["desired_goal"]
    teleport(env, info["goal_position"])
    obs, _, _, _, info = env.step(np.zeros(2))
    assert info["success"]
    obs, _, _, _, info = env.step(np.zeros(2))  # the maze reports its new goal from this step on
    assert np.linalg.norm(info["goal_position"] - info["position"]) > MAZE_SUCCESS_RADIUS
    assert not np.array_equal(obs["desired_goal"], first_goal_image)
    teleport(env, info["goal_position"])
    obs, _, _, _, info = env.step(np.zeros(2))
    assert_near_equal(obs["observation"], obs["desired_goal"])


def test_seeds_reproduce(make):
    def rollout(env, seed):
        obs, _ = env.reset(seed=seed)
        images = [obs["observation"], obs["desired_goal"]]
        for action in np.random.default_rng(0).uniform(-1, 1, (10, 2)):
            obs, *_ = env.step(action)
            images.append(obs["observation"])
        return np.stack(images)

    a, b = make(), make()
    np.testing.assert_array_equal(rollout(a, 7), rollout(b, 7))
    assert not np.array_equal(rollout(a, 7), rollout(a, 8))
