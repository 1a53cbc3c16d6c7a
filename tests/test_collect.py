"""Dataset generation: the maze waypoint planner, collection styles, episode layout, seeds."""

import re

import numpy as np
import pytest

from crl import envs, train
from crl.collect import collect
from crl.envs.maze_planner import (MazePlanner, default_goal_cell, episode_cells, free_cells,
                                   maze_of, shortest_path)
from gymnasium_robotics.envs.maze.maps import U_MAZE

UMAZE = "maze:PointMaze_UMaze-v3"
MEDIUM = "maze:PointMaze_Medium-v3"


def cell(env, xy):
    return tuple(int(v) for v in maze_of(env).cell_xy_to_rowcol(xy))


def planner_success_rate(env_id, episodes):
    env = envs.make(env_id)
    planner = MazePlanner(env)
    reached = []
    for k in range(episodes):
        options = episode_cells(planner.maze_map, "diverse", np.random.default_rng(k))
        obs, info = env.reset(seed=k, options=options)
        planner.reset(seed=k)
        success, done = False, False
        while not done:
            obs, _, terminated, truncated, info = env.step(planner.act(obs))
            success, done = success or info["success"], terminated or truncated
        reached.append(success)
    return float(np.mean(reached))


# ---------------------------------------------------------------------------------- planner


def test_shortest_path_goes_round_the_u():
    assert shortest_path(U_MAZE, (1, 1), (3, 1)) == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    assert default_goal_cell(U_MAZE) == (3, 1)
    assert len(free_cells(U_MAZE)) == 7


@pytest.mark.parametrize("env_id", [UMAZE, MEDIUM])
def test_planner_reaches_the_goal_from_seeded_starts(env_id):
    assert planner_success_rate(env_id, episodes=20) >= 0.9


def test_planner_waypoints_are_cell_centres_then_the_goal():
    env = envs.make(UMAZE)
    planner = MazePlanner(env, noise=0.0)
    obs, _ = env.reset(seed=0, options={"goal_cell": (3, 1), "reset_cell": (1, 1)})
    path = planner.path(obs["achieved_goal"], obs["desired_goal"])
    centres = [maze_of(env).cell_rowcol_to_xy(np.array(c)) for c in [(1, 2), (1, 3), (2, 3), (3, 3), (3, 2)]]
    np.testing.assert_allclose(path[:-1], centres)
    np.testing.assert_allclose(path[-1], obs["desired_goal"])
    np.testing.assert_allclose(planner.waypoint(obs["achieved_goal"], obs["desired_goal"]), centres[0])


def test_noiseless_planner_comes_to_rest_on_the_goal():
    env = envs.make(UMAZE)  # continuing task: the episode runs on after the goal is reached
    planner = MazePlanner(env, noise=0.0)
    obs, _ = env.reset(seed=1, options={"goal_cell": (3, 1), "reset_cell": (1, 1)})
    for _ in range(300):
        obs, _, _, _, info = env.step(planner.act(obs))
    assert info["distance"] < 0.05 and np.abs(obs["observation"][2:]).max() < 0.1  # the D term damps


def test_planner_replans_when_a_continuing_task_moves_the_goal():
    env = envs.make(UMAZE, reset_target=True)  # continuing task: a reached goal is replaced
    planner = MazePlanner(env, seed=0)
    obs, _ = env.reset(seed=0)
    goals = {cell(env, obs["desired_goal"])}
    for _ in range(300):
        obs, *_ = env.step(planner.act(obs))
        goals.add(cell(env, obs["desired_goal"]))
    assert len(goals) >= 3


def test_antmaze_needs_a_walking_policy():
    env = envs.make("antmaze:AntMaze_UMaze-v5")
    with pytest.raises(ValueError, match="walking policy"):
        MazePlanner(env)
    with pytest.raises(ValueError, match="walking policy"):
        collect("antmaze:AntMaze_UMaze-v5", "planner", 1, progress=False)
    targets = []
    planner = MazePlanner(env, noise=0.0, low_level=lambda obs, xy: targets.append(xy) or np.full(8, 5.0))
    obs, _ = env.reset(seed=0, options={"goal_cell": (3, 1), "reset_cell": (1, 1)})
    action = planner.act(obs)
    np.testing.assert_allclose(action, env.action_space.high)  # clipped to the action space
    np.testing.assert_allclose(targets[0], maze_of(env).cell_rowcol_to_xy(np.array((1, 2))))


def test_planner_is_only_for_mazes_and_policies_are_checked():
    with pytest.raises(ValueError, match="maze"):
        collect("dmc-state:cartpole-balance", "planner", 1, progress=False)
    with pytest.raises(ValueError, match="unknown policy"):
        collect(UMAZE, "no-such-policy", 1, progress=False)
    with pytest.raises(ValueError, match="style"):
        collect(UMAZE, "random", 1, style="play", progress=False)
    with pytest.raises(ValueError, match="style"):  # the pixel maze has styles too
        collect("maze-pixels:PointMaze_UMaze-v3", "random", 1, style="play", progress=False)
    with pytest.raises(ValueError, match="'random' policy takes no noise"):
        collect(UMAZE, "random", 1, noise=0.3, progress=False)
    with pytest.raises(ValueError, match="max_episode_steps 1000 is above maze:PointMaze_UMaze-v3's own limit of 300"):
        collect(UMAZE, "random", 1, max_episode_steps=1000, progress=False)


# ---------------------------------------------------------------------------------- styles


def test_diverse_varies_goals_and_starts_fixed_goal_keeps_the_goal():
    env = envs.make(UMAZE)
    diverse = collect(UMAZE, "planner", 10, seed=0, max_episode_steps=5, progress=False)
    goals = [cell(env, e.observations["desired_goal"][0]) for e in diverse.episodes]
    starts = [cell(env, e.observations["achieved_goal"][0]) for e in diverse.episodes]
    assert len(set(goals)) >= 4 and len(set(starts)) >= 4
    assert all(g != s for g, s in zip(goals, starts))
    assert goals == [tuple(c) for c in diverse.metadata["goal_cells"]]

    fixed = collect(UMAZE, "planner", 10, seed=0, style="fixed-goal", max_episode_steps=5, progress=False)
    goals = [cell(env, e.observations["desired_goal"][0]) for e in fixed.episodes]
    starts = [cell(env, e.observations["achieved_goal"][0]) for e in fixed.episodes]
    assert set(goals) == {(3, 1)} and len(set(starts)) >= 3
    assert fixed.metadata["style"] == "fixed-goal"

    pinned = collect(UMAZE, "planner", 3, style="fixed-goal", start_cell=(1, 1), max_episode_steps=5,
                     progress=False)
    assert {cell(env, e.observations["achieved_goal"][0]) for e in pinned.episodes} == {(1, 1)}
    with pytest.raises(ValueError, match=r"start_cell \(3, 1\) is the goal cell"):
        collect(UMAZE, "planner", 1, style="fixed-goal", start_cell=(3, 1), progress=False)
    rng = np.random.default_rng(0)  # a pinned start is never drawn as a diverse goal
    assert all(episode_cells(env.unwrapped.maze.maze_map, "diverse", rng, start_cell=(1, 1))["goal_cell"] != (1, 1)
               for _ in range(50))

    pixels = collect("maze-pixels:PointMaze_UMaze-v3", "random", 2, style="fixed-goal", max_episode_steps=2,
                     progress=False)
    assert pixels.metadata["style"] == "fixed-goal" and pixels.metadata["goal_cells"] == [[3, 1], [3, 1]]


# ---------------------------------------------------------------------------------- collect


def assert_same(a, b):
    assert len(a.episodes) == len(b.episodes)
    for x, y in zip(a.episodes, b.episodes):
        if isinstance(x.observations, dict):
            for key in x.observations:
                np.testing.assert_array_equal(x.observations[key], y.observations[key])
        else:
            np.testing.assert_array_equal(x.observations, y.observations)
        for field in ("actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        for key in x.infos:
            np.testing.assert_array_equal(x.infos[key], y.infos[key])


def test_collection_reproduces_bit_for_bit():
    first = collect(UMAZE, "planner", 2, seed=5, max_episode_steps=40, progress=False)
    assert_same(first, collect(UMAZE, "planner", 2, seed=5, max_episode_steps=40, progress=False))
    # episode k depends on (seed, k) only, so it can be regenerated alone
    second = type(first)(episodes=first.episodes[1:], env_id=None, metadata={}, source="")
    assert_same(second, collect(UMAZE, "planner", 1, seed=5, first_episode=1, max_episode_steps=40, progress=False))
    # and the next dataset seed does not repeat it (seed + k would have: seeds 5 and 6 shared it)
    shifted = collect(UMAZE, "planner", 1, seed=6, max_episode_steps=40, progress=False)
    assert not np.array_equal(second.episodes[0].actions, shifted.episodes[0].actions)
    other = collect(UMAZE, "planner", 2, seed=7, max_episode_steps=40, progress=False)
    assert not np.array_equal(first.episodes[0].actions, other.episodes[0].actions)
    random_a = collect(UMAZE, "random", 1, seed=1, max_episode_steps=20, progress=False)
    random_b = collect(UMAZE, "random", 1, seed=2, max_episode_steps=20, progress=False)
    assert not np.array_equal(random_a.episodes[0].actions, random_b.episodes[0].actions)
    assert_same(random_a, collect(UMAZE, "random", 1, seed=1, max_episode_steps=20, progress=False))


def test_episodes_follow_minaris_layout_and_truncate_at_the_time_limit():
    data = collect(UMAZE, "planner", 2, seed=0, progress=False)
    for episode in data.episodes:
        steps = len(episode.actions)
        assert steps == 300  # PointMaze_UMaze-v3's time limit; the default task never terminates
        assert episode.actions.shape == (steps, 2) and episode.rewards.shape == (steps,)
        assert all(v.shape[0] == steps + 1 for v in episode.observations.values())
        assert {k: v.shape for k, v in episode.infos.items()} == {"success": (steps + 1,),
                                                                   "distance": (steps + 1,)}
        assert episode.truncations[-1] and not episode.truncations[:-1].any()
        assert not episode.terminations.any()
        assert episode.terminations.dtype == bool and episode.truncations.dtype == bool
        np.testing.assert_allclose(episode.infos["distance"],
                                   np.linalg.norm(episode.observations["achieved_goal"]
                                                  - episode.observations["desired_goal"], axis=1), atol=1e-5)
    assert data.metadata["success_rate"] == 1.0
    assert {"env_id", "policy", "style", "noise", "seed", "episodes"} <= set(data.metadata)

    short = collect(UMAZE, "random", 1, max_episode_steps=25, progress=False).episodes[0]
    assert len(short.actions) == 25 and short.truncations[-1] and not short.terminations.any()

    episodic = collect(UMAZE, "planner", 1, env_options={"continuing_task": False},
                       progress=False).episodes[0]
    assert episodic.terminations[-1] and not episodic.truncations.any() and episodic.infos["success"][-1]
    assert len(episodic.actions) < 300


def test_random_actions_lie_in_the_action_space():
    data = collect(MEDIUM, "random", 2, max_episode_steps=100, progress=False)
    actions = np.concatenate([e.actions for e in data.episodes])
    assert actions.dtype == np.float32
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert actions.std() > 0.4  # uniform on [-1, 1] has std 0.58
    assert "noise" not in data.metadata


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run, agent = train.build_configs("sac", None, dict(
        env="dmc-state:cartpole-balance", frames=1200, seed_frames=800, eval_every_frames=1200,
        eval_episodes=1, checkpoint_every_frames=0, hidden_dims=(16, 16), batch_size=16))
    train.train("sac", run, agent, run_dir)
    return run_dir


def test_collect_from_a_checkpoint(tiny_run):
    data = collect(None, tiny_run, 2, seed=3, progress=False)
    assert data.env_id == "dmc-state:cartpole-balance"
    for episode in data.episodes:
        assert episode.observations.shape == (126, 5) and episode.actions.shape == (125, 1)
        assert np.abs(episode.actions).max() <= 1.0 and episode.truncations[-1]
    assert_same(data, collect("dmc-state:cartpole-balance", tiny_run, 2, seed=3, progress=False))
    noisy = collect(None, tiny_run, 1, seed=3, noise=0.3, progress=False)
    assert not np.array_equal(noisy.episodes[0].actions, data.episodes[0].actions)
    assert noisy.metadata["noise"] == 0.3
    assert data.metadata["checkpoint_frames"] == 1200 and data.metadata["checkpoint_updates"] > 0
    with pytest.raises(ValueError, match="trained on"):
        collect("dmc-state:cartpole-swingup", tiny_run, 1, progress=False)
    assert_same(data, collect(None, tiny_run, 2, seed=3, progress=False, device="cpu"))


def test_collect_from_a_checkpoint_on_a_device_that_is_not_there(tiny_run, tmp_path, capsys):
    from crl.cli import main

    out = tmp_path / "data.hdf5"
    argv = ["dataset", "collect", "--policy", str(tiny_run), "--episodes", "1", "--out", str(out)]
    assert main([*argv, "--device", "cuda:99"]) == 2  # (no machine has 100 GPUs)
    assert re.search(r"'cuda:99'.*torch sees", capsys.readouterr().err)
    assert not out.exists()


def test_round_trip_through_d4rl_and_minari_files(tmp_path):
    datasets = pytest.importorskip("crl.datasets")
    if not hasattr(datasets, "write_d4rl"):
        pytest.skip("crl.datasets.write_d4rl does not exist yet")
    data = collect(UMAZE, "planner", 2, max_episode_steps=30, progress=False)
    datasets.write_d4rl(tmp_path / "umaze.hdf5", data)
    from_d4rl = datasets.load_d4rl(tmp_path / "umaze.hdf5")
    assert_same(data, from_d4rl)
    assert from_d4rl.env_id == UMAZE and from_d4rl.metadata["style"] == "diverse"
    pytest.importorskip("minari")
    datasets.write_minari(data, "crl/umaze-planner-v0", root=tmp_path / "minari")
    assert_same(data, datasets.load_minari(tmp_path / "minari" / "crl/umaze-planner-v0"))
