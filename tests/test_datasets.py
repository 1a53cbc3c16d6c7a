"""crl.datasets: D4RL and Minari loading (hand-written files in the published layouts), validation,
writers' bit-for-bit round trips, the replay bridge and normalised scores."""

from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from crl import datasets as D
from crl.datasets import DatasetError, Episode

# A hand-made D4RL file of 7 rows: a terminal at row 2, a timeout at row 5, row 6 trailing.
N = 7
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0], bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 1, 0], bool)


def d4rl_arrays(next_observations: bool = True, goals: bool = False) -> dict[str, np.ndarray]:
    obs = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
    arrays = {
        "observations": obs,
        "actions": np.linspace(-1, 1, N * 2, dtype=np.float32).reshape(N, 2),
        "rewards": np.arange(N, dtype=np.float32) + 0.5,
        "terminals": TERMINALS,
        "timeouts": TIMEOUTS,
    }
    if next_observations:
        arrays["next_observations"] = obs + 100
    if goals:
        arrays["infos/goal"] = np.repeat(np.array([[7.0, 8.0]], np.float32), N, axis=0)
        arrays["infos/qpos"] = np.arange(N * 4, dtype=np.float64).reshape(N, 4)
    return arrays


def write_h5(path: Path, arrays: dict, attrs: dict | None = None) -> Path:
    """Writes the D4RL layout by hand (keys with '/' become groups, as in D4RL's files)."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def assert_same_episodes(got: list[Episode], want: list[Episode]) -> None:
    """Bit-for-bit: same arrays, same dtypes."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        obs_a = a.observations if isinstance(a.observations, dict) else {"": a.observations}
        obs_b = b.observations if isinstance(b.observations, dict) else {"": b.observations}
        assert obs_a.keys() == obs_b.keys()
        pairs = [(obs_a[k], obs_b[k]) for k in obs_a]
        pairs += [(getattr(a, k), getattr(b, k)) for k in ("actions", "rewards", "terminations", "truncations")]
        assert a.infos.keys() == b.infos.keys()
        pairs += [(a.infos[k], b.infos[k]) for k in a.infos]
        for x, y in pairs:
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()


# ------------------------------------------------------------------------------- D4RL loading


def test_d4rl_with_next_observations_keeps_every_step(tmp_path):
    arrays = d4rl_arrays(next_observations=True)
    file_metadata = {"metadata/algorithm": "SAC", "metadata/policy/fc0/weight": np.ones((3, 3))}
    data = D.load_d4rl(write_h5(tmp_path / "hopper-medium-v2.hdf5", arrays | file_metadata))
    obs, next_obs = arrays["observations"], arrays["next_observations"]
    assert [ep.num_steps for ep in data.episodes] == [3, 3, 1]
    first, second, trailing = data.episodes
    np.testing.assert_array_equal(first.observations, np.concatenate([obs[0:3], next_obs[2:3]]))
    np.testing.assert_array_equal(second.observations, np.concatenate([obs[3:6], next_obs[5:6]]))
    np.testing.assert_array_equal(trailing.observations, np.stack([obs[6], next_obs[6]]))
    np.testing.assert_array_equal(second.actions, arrays["actions"][3:6])
    np.testing.assert_array_equal(second.rewards, arrays["rewards"][3:6])
    assert first.terminations.tolist() == [False, False, True] and not first.truncations.any()
    assert second.truncations.tolist() == [False, False, True] and not second.terminations.any()
    assert trailing.truncations.tolist() == [True] and not trailing.terminations.any()
    assert data.metadata["dropped_steps"] == 0 and data.metadata["format"] == "d4rl"
    assert data.env_id is None and data.source.endswith("hopper-medium-v2.hdf5")
    assert data.metadata["algorithm"] == "SAC"  # scalar metadata/* read, policy weights ignored


def test_d4rl_without_next_observations_drops_timeout_steps_and_keeps_terminals(tmp_path):
    arrays = d4rl_arrays(next_observations=False)
    data = D.load_d4rl(write_h5(tmp_path / "d.hdf5", arrays))
    obs = arrays["observations"]
    # terminal row 2 is kept (its successor is not needed); timeout row 5 and the last row 6 have
    # no successor in the file: dropped, their observation ends the episode; row 6 alone has no step.
    assert [ep.num_steps for ep in data.episodes] == [3, 2]
    first, second = data.episodes
    np.testing.assert_array_equal(first.observations, np.concatenate([obs[0:3], obs[2:3]]))
    assert first.terminations.tolist() == [False, False, True]
    np.testing.assert_array_equal(second.observations, obs[3:6])
    np.testing.assert_array_equal(second.actions, arrays["actions"][3:5])
    assert second.truncations.tolist() == [False, True] and not second.terminations.any()
    assert data.metadata["dropped_steps"] == 2 and data.metadata["repeated_final_observations"] == 1


def test_d4rl_goal_data_from_infos_goal(tmp_path):
    arrays = d4rl_arrays(next_observations=True, goals=True)
    data = D.load_d4rl(write_h5(tmp_path / "antmaze-umaze-v2.hdf5", arrays), split_at_terminals=True)
    first = data.episodes[0]
    assert set(first.observations) == {"observation", "achieved_goal", "desired_goal"}
    obs, next_obs = arrays["observations"], arrays["next_observations"]
    # achieved goal: D4RL's maze convention, the xy position in the first two columns
    np.testing.assert_array_equal(first.observations["achieved_goal"],
                                  np.concatenate([obs[0:3, :2], next_obs[2:3, :2]]))
    np.testing.assert_array_equal(first.observations["desired_goal"], np.full((4, 2), [7.0, 8.0], np.float32))
    assert first.infos["qpos"].shape == (4, 4)  # T + 1 rows, the last one repeated
    np.testing.assert_array_equal(first.infos["qpos"][-1], arrays["infos/qpos"][2])

    arrays["infos/achieved_goal"] = np.full((N, 2), -3.0, np.float32)
    data = D.load_d4rl(write_h5(tmp_path / "explicit.hdf5", arrays), split_at_terminals=True)
    assert (data.episodes[1].observations["achieved_goal"] == -3.0).all()


def antmaze_arrays(next_observations: bool) -> dict[str, np.ndarray]:
    """D4RL AntMaze's layout: 29-d observations, infos/goal, float terminals (= reward 1) on every
    step the ant spends near the goal (rows 950-979 of the first trajectory) while the trajectory
    carries on, timeouts every 1000 rows; two 1000-row trajectories."""
    rows = 2000
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(rows, 29)).astype(np.float32)
    near_goal = (np.arange(rows) >= 950) & (np.arange(rows) < 980)
    arrays = {"observations": obs, "actions": rng.uniform(-1, 1, (rows, 8)).astype(np.float32),
              "rewards": near_goal.astype(np.float32), "terminals": near_goal.astype(np.float32),
              "timeouts": np.arange(rows) % 1000 == 999,
              "infos/goal": np.repeat(obs[[979, 1999], :2], 1000, axis=0) + np.float32(0.3)}
    if next_observations:
        arrays["next_observations"] = np.roll(obs, -1, axis=0)
    return arrays


@pytest.mark.parametrize("next_observations", [False, True])
def test_d4rl_antmaze_terminals_stay_inside_the_trajectory(tmp_path, next_observations):
    arrays = antmaze_arrays(next_observations)
    path = write_h5(tmp_path / "antmaze-umaze-v2.hdf5", arrays)
    data = D.load_d4rl(path)
    # cut at the timeouts only; without next_observations a timeout row's successor is not in the file
    steps = 1000 if next_observations else 999
    assert [ep.num_steps for ep in data.episodes] == [steps, steps]
    first = data.episodes[0]
    assert len(first.observations["observation"]) == steps + 1
    assert not first.terminations.any() and first.truncations.tolist() == [False] * (steps - 1) + [True]
    np.testing.assert_array_equal(first.rewards, arrays["rewards"][:steps])  # the goal rewards are kept
    # the flags are kept as an info column (T + 1 rows, the final row repeats the last step's)
    terminal = first.infos["terminal"]
    assert terminal.dtype == bool and len(terminal) == steps + 1
    np.testing.assert_array_equal(terminal[:steps], arrays["terminals"][:steps] == 1)
    assert data.metadata["split_at_terminals"] is False

    cut = D.load_d4rl(path, split_at_terminals=True)
    assert cut.metadata["split_at_terminals"] is True and "terminal" not in cut.episodes[0].infos
    lengths = [ep.num_steps for ep in cut.episodes]
    # rows 0-950 end at the first terminal, then one-step episodes at every terminal row 951-979
    assert lengths[:2] == [951, 1] and lengths.count(1) == 29 and len(lengths) == 32
    assert cut.episodes[0].terminations[-1] and cut.episodes[1].terminations.tolist() == [True]
    assert D.load(f"d4rl:{path}", split_at_terminals=True).metadata["split_at_terminals"] is True


def test_d4rl_split_at_terminals_auto(tmp_path):
    plain = D.load_d4rl(write_h5(tmp_path / "hopper.hdf5", d4rl_arrays()))  # not goal data: terminals end episodes
    assert plain.metadata["split_at_terminals"] is True and len(plain.episodes) == 3
    goals = D.load_d4rl(write_h5(tmp_path / "maze2d.hdf5", d4rl_arrays(goals=True)))  # D4RL goal data: they do not
    assert goals.metadata["split_at_terminals"] is False and [ep.num_steps for ep in goals.episodes] == [6, 1]
    assert goals.episodes[0].infos["terminal"][:6].tolist() == TERMINALS[:6].tolist()
    # our writer's terminals are real episode ends: its goal files are cut there, and the kept
    # flags make the round trip
    D.write_d4rl(tmp_path / "again.hdf5", goals)
    again = D.load_d4rl(tmp_path / "again.hdf5")
    assert again.metadata["split_at_terminals"] is True
    assert_same_episodes(again.episodes, goals.episodes)


def consecutive_next_observations(obs: np.ndarray) -> np.ndarray:
    """next_observations[t] = observations[t + 1], as in a file recorded without resets."""
    return np.concatenate([obs[1:], obs[-1:] + 1000])


def test_d4rl_float_flags_column_rewards_and_no_timeouts(tmp_path):
    arrays = d4rl_arrays(next_observations=True)
    arrays["next_observations"] = consecutive_next_observations(arrays["observations"])
    arrays["terminals"] = TERMINALS.astype(np.float32)[:, None]  # AntMaze stores float 0/1
    arrays["rewards"] = arrays["rewards"][:, None]
    del arrays["timeouts"]  # D4RL v0 files have none
    data = D.load_d4rl(write_h5(tmp_path / "d.hdf5", arrays))
    assert [ep.num_steps for ep in data.episodes] == [3, 4]
    assert data.episodes[0].terminations.dtype == bool and data.metadata["timeouts_absent"]
    assert data.episodes[1].rewards.shape == (4,)


def test_d4rl_without_timeouts_cuts_where_the_next_observation_is_not_the_next_row(tmp_path):
    # an env reset the file does not flag (D4RL v0 files have no timeouts): row 4's next
    # observation is not row 5's observation, so an episode ends at row 4 as a truncation
    arrays = d4rl_arrays(next_observations=True)
    del arrays["timeouts"]
    arrays["next_observations"] = consecutive_next_observations(arrays["observations"])
    arrays["next_observations"][4] += 0.5
    arrays["next_observations"][2] += 0.25  # the terminal row's successor is a reset too: already flagged
    data = D.load_d4rl(write_h5(tmp_path / "d.hdf5", arrays))
    assert [ep.num_steps for ep in data.episodes] == [3, 2, 2]
    assert data.metadata["cut_at_observation_gaps"] == 1
    first = data.episodes[0]  # ends at its terminal row: a termination, not also a truncation
    assert first.terminations[-1] and not first.truncations.any()
    middle = data.episodes[1]
    assert middle.truncations.tolist() == [False, True] and not middle.terminations.any()
    np.testing.assert_array_equal(middle.observations[-1], arrays["next_observations"][4])
    # with timeouts in the file, they alone say where truncations are
    arrays["timeouts"] = TIMEOUTS
    flagged = D.load_d4rl(write_h5(tmp_path / "t.hdf5", arrays))
    assert "cut_at_observation_gaps" not in flagged.metadata and len(flagged.episodes) == 3


def _nan_at(key: str, row: int):
    def mutate(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][row] = np.nan
    return mutate


def _set(key: str, value):
    return lambda arrays: arrays.__setitem__(key, value(arrays) if callable(value) else value)


INVALID_D4RL = {
    "missing key": (lambda a: a.pop("actions"), ["missing key 'actions'"]),
    "different lengths": (_set("rewards", lambda a: a["rewards"][:-1]), ["rewards", "6 rows", "observations", "7"]),
    "NaN observation": (_nan_at("observations", 4), ["observations[4]", "NaN"]),
    "inf action": (_set("actions", lambda a: np.where(np.arange(N)[:, None] == 2, np.inf, a["actions"])),
                   ["actions[2]"]),
    "NaN goal": (_nan_at("infos/goal", 1), ["infos/goal[1]"]),
    "string observations": (_set("observations", np.array([b"x"] * N)), ["observations", "dtype"]),
    "non-boolean terminals": (_set("terminals", np.array([0, 0, 1, 2, 0, 0, 0], np.int64)), ["terminals[3]", "2"]),
    "non-boolean timeouts": (_set("timeouts", np.full(N, 0.5, np.float32)), ["timeouts[0]", "0.5"]),
    "zero steps": (lambda a: a.update({k: v[:0] for k, v in a.items()}), ["zero rows"]),
    "reward beyond float32": (_set("rewards", lambda a: np.where(np.arange(N) == 3, 1e39, a["rewards"].astype(np.float64))),
                              ["rewards[3]", "beyond float32's range"]),
    "next_observations shape": (_set("next_observations", lambda a: a["next_observations"][:, :2]),
                                ["next_observations"]),
}


@pytest.mark.parametrize("case", sorted(INVALID_D4RL))
def test_d4rl_validation_names_file_key_and_index(tmp_path, case):
    mutate, expected = INVALID_D4RL[case]
    arrays = d4rl_arrays(next_observations=True, goals=True)
    mutate(arrays)
    path = write_h5(tmp_path / "broken.hdf5", arrays)
    with pytest.raises(DatasetError) as error:
        D.load_d4rl(path)
    message = str(error.value)
    assert str(path) in message
    for text in expected:
        assert text in message


def test_d4rl_observations_and_next_observations_of_other_dtypes_keep_their_values(tmp_path):
    arrays = d4rl_arrays()
    arrays["observations"] = np.arange(N * 3, dtype=np.int64).reshape(N, 3)
    arrays["next_observations"] = arrays["observations"] + 0.5
    data = D.load_d4rl(write_h5(tmp_path / "d.hdf5", arrays))
    np.testing.assert_array_equal(data.episodes[-1].observations[-1], arrays["next_observations"][-1])
    np.testing.assert_array_equal(data.episodes[0].observations[0], arrays["observations"][0])
    # float32 observations with float64 next observations: one episode, float32, no gaps
    x = np.random.default_rng(0).normal(size=(N + 1, 3))
    arrays = d4rl_arrays()
    del arrays["timeouts"]
    arrays["observations"], arrays["next_observations"] = x[:-1].astype(np.float32), x[1:]
    data = D.load_d4rl(write_h5(tmp_path / "f.hdf5", arrays))
    assert data.metadata["cut_at_observation_gaps"] == 0 and data.episodes[0].observations.dtype == np.float32


def test_d4rl_actions_outside_the_action_space(tmp_path):
    arrays = d4rl_arrays()
    arrays["actions"][5] = [0.5, 1.5]
    path = write_h5(tmp_path / "d.hdf5", arrays)
    space = gym.spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(DatasetError, match=r"actions\[5\] = \[0\.5, 1\.5\] is outside"):
        D.load_d4rl(path, action_space=space)
    assert len(D.load_d4rl(path).episodes) == 3  # no space known: not checked
    # a space stored in the file (our writer's attribute) is checked without an argument
    from minari.serialization import serialize_space

    write_h5(path, arrays, attrs={"action_space": serialize_space(space)})
    with pytest.raises(DatasetError, match=r"actions\[5\]"):
        D.load(str(path))


def test_d4rl_unreadable_files(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not an HDF5 file")
    good = write_h5(tmp_path / "good.hdf5", d4rl_arrays())
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (text, cut, tmp_path / "missing.hdf5", tmp_path):
        with pytest.raises(DatasetError, match=str(path)):
            D.load_d4rl(path)


# ------------------------------------------------------------------------------- D4RL writing


def array_dataset() -> D.Dataset:
    rng = np.random.default_rng(0)

    def episode(steps: int, terminated: bool) -> Episode:
        last = np.arange(steps) == steps - 1
        return Episode(observations=rng.normal(size=(steps + 1, 5)).astype(np.float32),
                       actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                       rewards=rng.normal(size=steps).astype(np.float32),
                       terminations=last & terminated, truncations=last & (not terminated),
                       infos={"success": rng.random(steps + 1) < 0.3,
                              "distance": rng.random(steps + 1).astype(np.float32)})

    return D.Dataset([episode(4, True), episode(6, False), episode(1, True)], env_id=None,
                     metadata={"policy": "random", "seed": 3, "ref_min_score": -1.0, "ref_max_score": 9.0,
                               "goal_cells": [[1, 2]]}, source="unit")


def goal_dataset(env_id: str | None = "maze:PointMaze_UMaze-v3") -> D.Dataset:
    rng = np.random.default_rng(1)
    episodes = []
    for steps in (5, 3):
        obs = {k: rng.normal(size=(steps + 1, d)).astype(np.float32)
               for k, d in (("observation", 4), ("achieved_goal", 2), ("desired_goal", 2))}
        episodes.append(Episode(observations=obs, actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                                rewards=np.zeros(steps, np.float32), terminations=np.zeros(steps, bool),
                                truncations=np.eye(steps, dtype=bool)[-1],
                                infos={"success": np.arange(steps + 1) == steps}))
    return D.Dataset(episodes, env_id=env_id, metadata={"policy": "planner", "seed": 0, "max_episode_steps": 30},
                     source="unit-goals")


@pytest.mark.parametrize("make", [array_dataset, goal_dataset])
def test_write_d4rl_round_trip_bit_for_bit(tmp_path, make):
    dataset = make()
    path = tmp_path / "out.hdf5"
    D.write_d4rl(path, dataset)
    with h5py.File(path) as f:  # the published layout, readable by D4RL's own loader
        for key in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
            assert len(f[key]) == dataset.num_steps
        assert ("infos/goal" in f) == isinstance(dataset.episodes[0].observations, dict)
    loaded = D.load_d4rl(path)
    assert_same_episodes(loaded.episodes, dataset.episodes)
    assert loaded.env_id == dataset.env_id
    for key, value in dataset.metadata.items():
        assert loaded.metadata[key] == value
    assert [p.name for p in tmp_path.iterdir()] == ["out.hdf5"]  # no temp file left


def test_write_d4rl_rejects_invalid_data_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.hdf5"
    D.write_d4rl(path, array_dataset())
    before = path.read_bytes()
    broken = array_dataset()
    broken.episodes[1].rewards[2] = np.nan
    with pytest.raises(DatasetError, match=r"episode 1: rewards\[2\]"):
        D.write_d4rl(path, broken)
    broken = array_dataset()
    broken.episodes[0].terminations[1] = True  # a flag before the last step
    with pytest.raises(DatasetError, match=r"episode 0: terminations\[1\] is set before"):
        D.write_d4rl(path, broken)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.hdf5"]


# ------------------------------------------------------------------------------- Minari


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def create_with_minari(dataset_id: str, episodes: list[dict], obs_space, action_space):
    """A dataset built by minari's own API (create_dataset_from_buffers, explicit spaces)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = [EpisodeBuffer(**ep) for ep in episodes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=obs_space,
                                                  action_space=action_space, algorithm_name="expert",
                                                  jpeg_encoding=False)


def maze_like_episodes(nan_at: tuple[int, int] | None = None) -> list[dict]:
    """PointMaze-style episodes (float64 dict obs, infos with T+1 rows)."""
    rng = np.random.default_rng(2)
    episodes = []
    for i, (steps, terminated) in enumerate([(4, True), (3, False), (2, None)]):
        obs = {"observation": rng.normal(size=(steps + 1, 4)), "achieved_goal": rng.normal(size=(steps + 1, 2)),
               "desired_goal": np.zeros((steps + 1, 2))}
        if nan_at is not None and nan_at[0] == i:
            obs["observation"][nan_at[1], 1] = np.nan
        last = np.arange(steps) == steps - 1
        episodes.append(dict(observations=obs, actions=rng.uniform(-1, 1, (steps, 2)),
                             rewards=rng.normal(size=steps), terminations=last & (terminated is True),
                             truncations=last & (terminated is False),
                             infos={"success": np.arange(steps + 1) == steps, "note": ["x"] * (steps + 1)}))
    return episodes


MAZE_OBS = gym.spaces.Dict({k: gym.spaces.Box(-np.inf, np.inf, (d,), np.float64)
                            for k, d in (("observation", 4), ("achieved_goal", 2), ("desired_goal", 2))})
BOX2 = gym.spaces.Box(-1, 1, (2,), np.float32)


def test_minari_loads_by_id_and_by_path(minari_root):
    episodes = maze_like_episodes()
    create_with_minari("maze/umaze-v0", episodes, MAZE_OBS, BOX2)
    by_id = D.load_minari("maze/umaze-v0")
    for spec in ("minari:maze/umaze-v0", "maze/umaze-v0", str(minari_root / "maze/umaze-v0"),
                 str(minari_root / "maze/umaze-v0" / "data")):
        assert_same_episodes(D.load(spec).episodes, by_id.episodes)
    assert [ep.num_steps for ep in by_id.episodes] == [4, 3, 2]
    first, second, third = by_id.episodes
    assert first.observations["observation"].dtype == np.float32  # goal obs cast like crl's goal envs
    np.testing.assert_array_equal(second.observations["observation"],
                                  episodes[1]["observations"]["observation"].astype(np.float32))
    np.testing.assert_array_equal(second.actions, episodes[1]["actions"])
    assert first.terminations[-1] and second.truncations[-1]
    assert third.truncations.tolist() == [False, True]  # stored unflagged: the data stops there
    assert first.infos["success"].tolist() == [False] * 4 + [True]
    assert by_id.metadata["policy"] == "expert" and by_id.metadata["format"] == "minari"
    assert any("note" in s for s in by_id.metadata["skipped_infos"])  # strings are not loaded
    assert by_id.env_id is None
    assert D.success_rate(by_id) == 1.0


def test_minari_validation_names_episode_key_and_index(minari_root):
    create_with_minari("bad/nan-v0", maze_like_episodes(nan_at=(1, 2)), MAZE_OBS, BOX2)
    message = r"bad/nan-v0/data/main_data.hdf5 episode_1: observations/observation\[2\] holds NaN"
    with pytest.raises(DatasetError, match=message):
        D.load("bad/nan-v0")

    episodes = maze_like_episodes()
    episodes[2]["actions"][1] = [0.0, -2.5]
    create_with_minari("bad/actions-v0", episodes, MAZE_OBS, BOX2)
    with pytest.raises(DatasetError, match=r"episode_2: actions\[1\] = \[0\.0, -2\.5\] is outside"):
        D.load("bad/actions-v0")

    episodes = maze_like_episodes()
    episodes[1]["actions"] = episodes[1]["actions"][:-1]  # one action short of the rewards and observations
    create_with_minari("bad/lengths-v0", episodes, MAZE_OBS, BOX2)
    with pytest.raises(DatasetError, match=r"episode_1: the arrays disagree on the number of steps T .*"
                                           r"rows actions 2, rewards 3, observations/observation 4, observations/achieved_goal 4"):
        D.load("bad/lengths-v0")

    episodes = maze_like_episodes()
    episodes[0]["terminations"] = np.array([False, True, False, True])
    create_with_minari("bad/flags-v0", episodes, MAZE_OBS, BOX2)
    with pytest.raises(DatasetError, match=r"episode_0: terminations\[1\] is set before"):
        D.load("bad/flags-v0")

    data_dir = minari_root / "bad/nan-v0/data"
    (data_dir / "main_data.hdf5").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=str(data_dir)):
        D.load_minari(data_dir)


def test_minari_never_makes_the_env_a_file_names(minari_root, monkeypatch):
    import json

    create_with_minari("bad/spec-v0", maze_like_episodes(), MAZE_OBS, BOX2)
    metadata_path = minari_root / "bad/spec-v0/data/metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["action_space"]  # minari would then gym.make(env_spec): any entry point
    metadata["env_spec"] = gym.envs.registration.EnvSpec("Evil-v0", entry_point="os:system",
                                                         kwargs={"command": "true"}).to_json()
    metadata_path.write_text(json.dumps(metadata))

    def refuse(*args, **kwargs):
        raise AssertionError("made an environment named by the file")

    monkeypatch.setattr(gym, "make", refuse)
    with pytest.raises(DatasetError, match="no action_space; refusing"):
        D.load("bad/spec-v0")


def test_minari_unknown_id_is_an_offline_error(minari_root, monkeypatch):
    import minari

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(minari, "download_dataset", no_network)
    create_with_minari("local/here-v0", maze_like_episodes(), MAZE_OBS, BOX2)
    with pytest.raises(DatasetError) as error:
        D.load("D4RL/pointmaze/umaze-v2")
    message = str(error.value)
    assert "D4RL/pointmaze/umaze-v2" in message and str(minari_root) in message and "local/here-v0" in message
    with pytest.raises(DatasetError, match="neither a Minari dataset directory nor a dataset id"):
        D.load("no such dataset!")


def test_env_id_from_gym():
    assert D.env_id_from_gym("PointMaze_UMaze-v3") == "maze:PointMaze_UMaze-v3"
    assert D.env_id_from_gym("AntMaze_Medium-v5") == "antmaze:AntMaze_Medium-v5"
    assert D.env_id_from_gym("FetchPush-v4") == "fetch:Push"
    for other in ("AntMaze_UMaze-v4", "FetchPush-v2", "Hopper-v5", None):
        assert D.env_id_from_gym(other) is None


def test_write_minari_round_trip_bit_for_bit(minari_root):
    import minari

    # uint8 HWC images of 64x64: minari's default would JPEG them (lossy); ours stay raw
    rng = np.random.default_rng(4)
    episodes = [Episode(observations=rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
                        actions=rng.integers(0, 4, steps), rewards=rng.normal(size=steps),
                        terminations=np.arange(steps) == steps - 1, truncations=np.zeros(steps, bool),
                        infos={"lives": np.arange(steps + 1, dtype=np.int32), "a/b": np.ones(steps + 1)})
                for steps in (3, 2)]
    images = D.Dataset(episodes, metadata={"policy": "random", "ref_min_score": 0.0, "ref_max_score": 10.0})
    path = D.write_minari(images, "crl/images-v0", action_space=gym.spaces.Discrete(4))
    assert path == minari_root / "crl/images-v0"
    loaded = D.load("crl/images-v0")
    assert_same_episodes(loaded.episodes, images.episodes)
    assert loaded.metadata["ref_max_score"] == 10.0 and loaded.metadata["policy"] == "random"
    original = minari.load_dataset("crl/images-v0")  # readable by minari itself, scores included
    assert minari.get_normalized_score(original, np.array([5.0])) == pytest.approx(0.5)

    goals = goal_dataset("maze:PointMaze_UMaze-v3")
    D.write_minari(goals, "crl/maze-v0")
    loaded = D.load_minari("crl/maze-v0")
    assert_same_episodes(loaded.episodes, goals.episodes)
    assert loaded.env_id == "maze:PointMaze_UMaze-v3" and loaded.metadata["gym_env_id"] == "PointMaze_UMaze-v3"
    for key, value in goals.metadata.items():
        assert loaded.metadata[key] == value

    with pytest.raises(FileExistsError):
        D.write_minari(goals, "crl/maze-v0")
    D.write_minari(array_dataset(), "crl/maze-v0", overwrite=True)
    assert_same_episodes(D.load_minari("crl/maze-v0").episodes, array_dataset().episodes)
    assert sorted(p.name for p in (minari_root / "crl").iterdir()) == ["images-v0", "maze-v0"]  # no temp dirs


# ------------------------------------------------------------------------------- replay, scores, summary


@pytest.mark.parametrize("make", [array_dataset, goal_dataset])
def test_to_replay_holds_the_same_transitions(make):
    dataset = make()
    replay = D.to_replay(dataset, seed=0)
    assert replay.num_frames == sum(ep.num_steps + 1 for ep in dataset.episodes)
    batch = replay.sample(64, kind="transitions", return_index=True)
    for i, (e, t) in enumerate(zip(batch["episode"].tolist(), batch["step"].tolist())):
        episode = dataset.episodes[e]
        fields = episode.observations if isinstance(episode.observations, dict) else {"obs": episode.observations}
        for name, rows in fields.items():
            np.testing.assert_array_equal(batch[name][i].numpy(), rows[t])
            np.testing.assert_array_equal(batch[f"next_{name}"][i].numpy(), rows[t + 1])
        np.testing.assert_array_equal(batch["action"][i].numpy(), episode.actions[t])
        assert batch["reward"][i].item() == np.float32(episode.rewards[t])
        assert batch["terminated"][i].item() == float(episode.terminations[t])
    with pytest.raises(ValueError, match="capacity"):
        D.to_replay(dataset, capacity=5)


def test_normalized_score_against_hand_computation():
    hopper = D.normalized_score(1000.0, task="hopper-medium-v2")
    assert hopper == pytest.approx(100 * (1000.0 + 20.272305) / (3234.3 + 20.272305))
    returns = np.array([0.0, 1.0])
    np.testing.assert_allclose(D.normalized_score(returns, task="antmaze-umaze-v2"), [0.0, 100.0])
    with_refs = D.Dataset([], metadata={"ref_min_score": -1.0, "ref_max_score": 9.0}, source="x")
    assert D.normalized_score(4.0, dataset=with_refs) == pytest.approx(50.0)
    named = D.Dataset([], source="/data/walker2d-medium-replay-v2.hdf5")
    assert D.normalized_score(1.629008, dataset=named) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="known tasks are antmaze, halfcheetah, hopper, walker2d"):
        D.normalized_score(1.0, task="pointmaze-umaze")
    # data collected in a crl env is not D4RL's task, whatever its file is called
    dmc = D.Dataset([], env_id="dmc-state:hopper-hop", source="/data/dmc_hopper-hop.hdf5")
    with pytest.raises(ValueError, match="no reference scores for data of 'dmc-state:hopper-hop'"):
        D.normalized_score(1.0, dataset=dmc)
    dmc.metadata.update(ref_min_score=0.0, ref_max_score=2.0)  # its own references still apply
    assert D.normalized_score(1.0, dataset=dmc) == pytest.approx(50.0)


def test_success_rate_from_infos_or_final_distance():
    dataset = goal_dataset()
    dataset.episodes[1].infos["success"][:] = False
    assert D.success_rate(dataset) == 0.5
    for episode in dataset.episodes:
        episode.infos.clear()
        episode.observations["desired_goal"][-1] = episode.observations["achieved_goal"][-1] + [0.3, 0.3]
    assert D.success_rate(dataset) == 1.0  # distance 0.42 <= 0.45
    assert D.success_rate(dataset, radius=0.4) == 0.0
    with pytest.raises(ValueError, match="not goal data"):
        D.success_rate(D.Dataset([Episode(np.zeros((2, 1)), np.zeros((1, 1)), np.zeros(1), np.ones(1, bool),
                                          np.zeros(1, bool))]))


def test_success_radius_is_d4rls_for_d4rl_data(tmp_path):
    # final distance 0.3 * sqrt(2) = 0.42 from the goal would pass both; make it 0.47: within
    # D4RL's 0.5, outside gymnasium-robotics' 0.45
    arrays = antmaze_arrays(next_observations=True)
    arrays["infos/goal"] = arrays["next_observations"][:, :2] + np.float32([0.47, 0.0])
    d4rl_data = D.load_d4rl(write_h5(tmp_path / "antmaze-umaze-v2.hdf5", arrays))
    assert d4rl_data.env_id is None and D.success_radius(d4rl_data) == D.D4RL_SUCCESS_RADIUS == 0.5
    assert D.success_rate(d4rl_data) == 1.0
    collected = goal_dataset("maze:PointMaze_UMaze-v3")  # data from a crl env: that env's radius
    D.write_d4rl(tmp_path / "collected.hdf5", collected)
    collected = D.load_d4rl(tmp_path / "collected.hdf5")
    assert collected.metadata["format"] == "d4rl" and D.success_radius(collected) == 0.45
    for episode in collected.episodes:
        episode.infos.clear()
        episode.observations["desired_goal"][-1] = episode.observations["achieved_goal"][-1] + [0.47, 0.0]
    assert D.success_rate(collected) == 0.0
    collected.env_id = None  # a D4RL file without a crl env id: D4RL's radius
    assert D.success_rate(collected) == 1.0
    assert D.success_radius(goal_dataset(None)) == 0.45  # not D4RL-format data


def test_load_dispatch_and_summary(tmp_path):
    path = write_h5(tmp_path / "hopper-medium-v2.h5", d4rl_arrays())
    data = D.load(f"d4rl:{path}")
    assert_same_episodes(D.load(str(path)).episodes, data.episodes)
    other = tmp_path / "data.npz"
    other.write_bytes(b"")
    with pytest.raises(DatasetError, match="unknown dataset file type"):
        D.load(str(other))
    info = D.summary(data)
    returns = [0.5 + 1.5 + 2.5, 3.5 + 4.5 + 5.5, 6.5]
    assert info["episodes"] == 3 and info["steps"] == 7 and info["env_id"] is None
    assert info["return_mean"] == pytest.approx(np.mean(returns)) and info["return_max"] == 13.5
    assert info["normalized_score"] == pytest.approx(D.normalized_score(np.mean(returns), task="hopper"))
    assert info["observation"] == {"observations": {"shape": [3], "dtype": "float32"}}
    assert info["format"] == "d4rl" and "success_rate" not in info


def test_summary_scores_goal_data_by_success_not_by_summed_rewards(tmp_path):
    # an AntMaze-like file: reward 1 on every step near the goal, so returns sum to more than the
    # 0..1 reference range; the summary gives the success rate instead of a normalised return
    arrays = d4rl_arrays(goals=True)
    arrays["rewards"] = np.ones(N, np.float32)
    data = D.load_d4rl(write_h5(tmp_path / "antmaze-umaze-v2.hdf5", arrays))
    info = D.summary(data)
    assert "normalized_score" not in info and info["return_max"] > 1.0
    assert info["success_rate"] == D.success_rate(data)


def test_minari_episodes_that_disagree_are_refused_naming_the_episode(minari_root):
    create_with_minari("bad/widths-v0", maze_like_episodes(), MAZE_OBS, BOX2)
    data_file = minari_root / "bad/widths-v0/data/main_data.hdf5"
    with h5py.File(data_file, "a") as f:
        del f["episode_1/observations/observation"]
        f["episode_1/observations/observation"] = np.zeros((4, 5))
    with pytest.raises(DatasetError, match=r"episode 1: observations .*differ from episode 0's"):
        D.load("bad/widths-v0")

    create_with_minari("bad/infos-v0", maze_like_episodes(), MAZE_OBS, BOX2)
    with h5py.File(minari_root / "bad/infos-v0/data/main_data.hdf5", "a") as f:
        del f["episode_2/infos/success"]
    with pytest.raises(DatasetError, match=r"episode 2: infos keys \[\] differ from episode 0's \['success'\]"):
        D.load("bad/infos-v0")


@pytest.mark.parametrize("total", [2, 4])
def test_minari_total_episodes_that_disagree_with_the_file_is_an_error(minari_root, total):
    create_with_minari("bad/count-v0", maze_like_episodes(), MAZE_OBS, BOX2)
    assert len(D.load("bad/count-v0").episodes) == 3
    metadata_file = minari_root / "bad/count-v0/data/metadata.json"
    raw = json.loads(metadata_file.read_text())
    raw["total_episodes"] = total  # minari would read 2 of the 3 episodes without a word
    metadata_file.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=rf"main_data.hdf5: holds 3 episodes but metadata.json's "
                                           rf"total_episodes is {total}"):
        D.load("bad/count-v0")


@pytest.mark.parametrize("goal_shape", [(N, 3), (N,)])
def test_d4rl_goals_narrower_or_wider_than_the_achieved_goal_are_refused(tmp_path, goal_shape):
    arrays = d4rl_arrays(goals=True)
    arrays["infos/goal"] = np.ones(goal_shape, np.float32)
    path = write_h5(tmp_path / "maze2d.hdf5", arrays)
    with pytest.raises(DatasetError, match=rf"{path}: infos/goal has shape \({goal_shape[0]},.*achieved goal's, \(2,\)"):
        D.load_d4rl(path)


def test_a_minari_data_file_given_as_d4rl_is_named_as_such_in_a_short_error(minari_root):
    create_with_minari("maze/many-v0", maze_like_episodes() * 10, MAZE_OBS, BOX2)
    path = minari_root / "maze/many-v0/data/main_data.hdf5"
    with pytest.raises(DatasetError, match=r"missing key 'observations' .*\(\d+ in all\)\); this is a Minari data file") as error:
        D.load_d4rl(path)
    assert len(str(error.value)) < 1500
