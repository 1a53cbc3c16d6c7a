"""Offline datasets: D4RL HDF5 and Minari in and out, validation, normalised scores.

In memory a dataset is a list of episodes in Minari's convention: an episode of T steps holds
T + 1 observations (obs_0 .. obs_T), T actions, rewards, terminations and truncations, and
optional per-step infos with T + 1 rows (the reset info first). Goal data has dict observations
{"observation", "achieved_goal", "desired_goal"}. Every episode that comes out of a loader ends
with a flagged step: if its last step is neither terminated nor truncated it is marked truncated
(the data stops there; the replay does the same on load).

Loading works offline only, and validates everything before it returns: every failure is a
`DatasetError` naming the file, the key and the first bad index. Nothing is half-loaded.

D4RL layout (flat arrays of N rows, one per step)
-------------------------------------------------
``observations``, ``actions``, ``rewards``, ``terminals`` (required), ``timeouts``,
``next_observations`` (optional), ``infos/*`` (per-step extras aligned with ``observations``;
``infos/goal`` is the desired goal of goal data), ``metadata/*`` (scalars are read, the rest such
as policy weights is ignored), file attributes (our writer stores ``env_id``, reference scores,
``action_space`` and the whole metadata as JSON in ``crl_metadata``).

Episodes end at rows with ``terminals`` (termination: no bootstrap) or ``timeouts`` (truncation:
bootstrap), except in D4RL's own goal data (AntMaze, maze2d), whose ``terminals`` only flag steps
near the goal and which is cut at timeouts alone. See `load_d4rl` for the rule and for where each
episode's final observation comes from.

Minari layout
-------------
A directory ``<root>/<dataset id>/data`` with ``metadata.json`` and the episodes, read and
written through the ``minari`` package (HDF5 storage; images stored raw, never JPEG).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crl.fileio import atomic_path

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
REFERENCE_TABLE = Path(__file__).resolve().parent.parent / "experiments" / "reference" / "d4rl_reference_returns.csv"
MINARI_ID = re.compile(r"[\w-]+(/[\w-]+)*-v\d+")
D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals")
# D4RL info keys that hold goal data; our writer adds the `next_` rows of each episode's last step.
D4RL_GOAL_INFOS = ("goal", "achieved_goal", "next_goal", "next_achieved_goal")
# Metadata a loader computes for one load; a writer does not store it again.
LOAD_ONLY_KEYS = ("format", "source", "dropped_steps", "repeated_final_observations", "skipped_infos",
                  "ignored_keys", "skipped_empty_episodes", "timeouts_absent", "cut_at_observation_gaps",
                  "split_at_terminals")
# Where `load_d4rl(split_at_terminals=False)` keeps the file's terminal flags (infos["terminal"]).
TERMINAL_INFO = "terminal"
# D4RL's mazes count a goal reached within 0.5 (d4rl/pointmaze/maze_model.py and
# d4rl/locomotion/goal_reaching_env.py: norm(xy - target) <= 0.5); gymnasium-robotics uses 0.45.
D4RL_SUCCESS_RADIUS = 0.5
ACTION_TOLERANCE = 1e-6  # relative slack on Box bounds for float rounding


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, the key and the index."""


@dataclass
class Episode:
    """One episode of T steps (Minari's convention; see the module docstring)."""

    observations: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.actions)


@dataclass
class Dataset:
    episodes: list[Episode]
    env_id: str | None = None
    metadata: dict = field(default_factory=dict)
    source: str = ""

    @property
    def num_steps(self) -> int:
        return sum(ep.num_steps for ep in self.episodes)


# ============================================================================ validation


def _fail(where: str, message: str) -> None:
    raise DatasetError(f"{where}: {message}")


def _rows(array: np.ndarray) -> np.ndarray:
    """A (rows, -1) view for per-row reductions."""
    return array.reshape(len(array), -1)


def _check_numeric(array: np.ndarray, where: str, key: str) -> None:
    if array.ndim == 0:
        _fail(where, f"{key} is a scalar, expected one row per step")
    if array.dtype.kind not in "biuf":
        _fail(where, f"{key} has dtype {array.dtype}, expected numbers (bool, int or float)")


def _check_finite(array: np.ndarray, where: str, key: str) -> None:
    if array.dtype.kind != "f" or array.size == 0:
        return
    rows = _rows(array)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        index = int(np.argmax(bad))
        _fail(where, f"{key}[{index}] holds NaN or inf (the first bad row)")
    if array.dtype.itemsize > 4:  # the replay stores float32: a larger finite value would become inf
        bad = (np.abs(rows) > np.finfo(np.float32).max).any(axis=1)
        if bad.any():
            index = int(np.argmax(bad))
            _fail(where, f"{key}[{index}] holds a value beyond float32's range (the first such row; "
                         f"crl trains on float32)")


def _check_array(array: np.ndarray, where: str, key: str) -> None:
    _check_numeric(array, where, key)
    _check_finite(array, where, key)


def _as_flags(array: np.ndarray, where: str, key: str) -> np.ndarray:
    """Boolean-like flags (bool, or numbers that are all 0 or 1) as a bool vector."""
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    _check_numeric(array, where, key)
    if array.ndim != 1:
        _fail(where, f"{key} has shape {array.shape}, expected one flag per step")
    if array.dtype != bool:
        bad = (array != 0) & (array != 1)
        if bad.any():
            index = int(np.argmax(bad))
            _fail(where, f"{key}[{index}] = {array[index]!r} is not boolean-like (flags must be 0 or 1)")
    return array.astype(bool)


def _check_lengths(arrays: dict[str, np.ndarray], expected: int, reference: str, where: str) -> None:
    for key, array in arrays.items():
        if len(array) != expected:
            _fail(where, f"{key} has {len(array)} rows but {reference} has {expected}")


def _check_actions(actions: np.ndarray, space: Any, where: str, key: str) -> None:
    """The first action outside `space` (Box bounds, Discrete range, else space.contains)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box):
        if actions.shape[1:] != space.shape:
            _fail(where, f"{key} have shape {actions.shape[1:]} per step, the action space {space} has {space.shape}")
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        slack_low = ACTION_TOLERANCE * np.maximum(1.0, np.abs(np.where(np.isfinite(low), low, 0)))
        slack_high = ACTION_TOLERANCE * np.maximum(1.0, np.abs(np.where(np.isfinite(high), high, 0)))
        values = actions.astype(np.float64)
        bad = _rows((values < low - slack_low) | (values > high + slack_high)).any(axis=1)
    elif isinstance(space, gym.spaces.Discrete):
        values = actions.reshape(len(actions), -1)
        if values.shape[1] != 1:
            _fail(where, f"{key} have shape {actions.shape[1:]} per step, a Discrete action is one number")
        values = values[:, 0]
        bad = (values != np.round(values)) | (values < space.start) | (values >= space.start + space.n)
    else:
        bad = np.array([not space.contains(np.asarray(a, dtype=space.dtype)) for a in actions])
    if bad.any():
        index = int(np.argmax(bad))
        _fail(where, f"{key}[{index}] = {actions[index].tolist()!r} is outside the action space {space}")


def _obs_fields(observations: Any) -> dict[str, np.ndarray]:
    if isinstance(observations, dict):
        return {f"observations/{k}": np.asarray(v) for k, v in observations.items()}
    return {"observations": np.asarray(observations)}


def _check_episode(episode: Episode, where: str, action_space: Any = None) -> None:
    """Shapes, dtypes, finiteness and flags of one episode (flags only on the last step)."""
    steps = len(episode.actions)
    if steps < 1:
        _fail(where, "the episode has no steps")
    observations = _obs_fields(episode.observations)
    arrays = [("rewards", episode.rewards), *observations.items()]
    rows = {"actions": steps} | {key: len(array) for key, array in arrays if np.ndim(array)}
    if len({n - (key in observations) for key, n in rows.items()}) > 1:  # T, or T+1 observations
        listed = ", ".join(f"{key} {n}" for key, n in rows.items())
        _fail(where, f"the arrays disagree on the number of steps T (observations hold T+1 rows): rows {listed}")
    for key, array in observations.items():
        _check_array(array, where, key)
    _check_goal_widths(episode.observations, where)
    actions = np.asarray(episode.actions)
    _check_array(actions, where, "actions")
    rewards = np.asarray(episode.rewards)
    _check_array(rewards, where, "rewards")
    if rewards.shape != (steps,):
        _fail(where, f"rewards has shape {rewards.shape}, expected ({steps},)")
    for key in ("terminations", "truncations"):
        flags = _as_flags(getattr(episode, key), where, key)
        if len(flags) != steps:
            _fail(where, f"{key} has {len(flags)} rows, expected {steps}")
        early = np.flatnonzero(flags[:-1])
        if len(early):
            _fail(where, f"{key}[{early[0]}] is set before the episode's last step ({steps - 1})")
    for key, array in episode.infos.items():
        array = np.asarray(array)
        _check_numeric(array, where, f"infos/{key}")
        if len(array) != steps + 1:
            _fail(where, f"infos/{key} has {len(array)} rows, expected T+1 = {steps + 1}")
    if action_space is not None:
        _check_actions(actions, action_space, where, "actions")


def _check_goal_widths(observations: Any, where: str) -> None:
    """A goal's rows compare with the achieved goal's (success is their distance): same width."""
    if isinstance(observations, dict) and {"achieved_goal", "desired_goal"} <= set(observations):
        achieved, desired = (np.asarray(observations[k]) for k in ("achieved_goal", "desired_goal"))
        if achieved.shape[1:] != desired.shape[1:]:
            _fail(where, f"desired_goal rows of shape {desired.shape[1:]} do not match achieved_goal rows of "
                         f"shape {achieved.shape[1:]} (a goal is compared with the achieved goal)")


def _check_dataset(dataset: Dataset) -> None:
    """Every episode valid, all with the same observation fields, shapes, dtypes and infos keys."""
    if not dataset.episodes:
        _fail(dataset.source or "dataset", "no episodes")
    for i, episode in enumerate(dataset.episodes):
        _check_episode(episode, f"{dataset.source or 'dataset'} episode {i}")
    _check_episodes_agree(dataset)


def _check_episodes_agree(dataset: Dataset) -> None:
    """All episodes with episode 0's observation fields, shapes, dtypes and infos keys."""
    first = dataset.episodes[0]
    first_fields = {k: (v.shape[1:], v.dtype) for k, v in _obs_fields(first.observations).items()}
    for i, episode in enumerate(dataset.episodes):
        where = f"{dataset.source or 'dataset'} episode {i}"
        fields = {k: (v.shape[1:], v.dtype) for k, v in _obs_fields(episode.observations).items()}
        if fields != first_fields:
            _fail(where, f"observations {fields} differ from episode 0's {first_fields}")
        if set(episode.infos) != set(first.infos):
            _fail(where, f"infos keys {sorted(episode.infos)} differ from episode 0's {sorted(first.infos)}")


def _check_dataset_actions(dataset: Dataset, action_space: Any) -> None:
    for i, episode in enumerate(dataset.episodes):
        _check_actions(np.asarray(episode.actions), action_space, f"{dataset.source or 'dataset'} episode {i}",
                       "actions")


def _mark_last_step(terminations: np.ndarray, truncations: np.ndarray) -> np.ndarray:
    """Truncations with the last step marked when the episode ends without a flag."""
    if not (terminations[-1] or truncations[-1]):
        truncations = truncations.copy()
        truncations[-1] = True
    return truncations


# ============================================================================ metadata helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars/arrays, paths, sets and tuples converted)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _valid_env_id(env_id: Any) -> str | None:
    """`env_id` if crl.envs knows it, else None."""
    if not isinstance(env_id, str) or ":" not in env_id:
        return None
    from crl.envs import check_env_id

    try:
        check_env_id(env_id)
    except ValueError:
        return None
    return env_id


def env_id_from_gym(gym_id: str | None) -> str | None:
    """The crl env id of a gymnasium id: PointMaze_* -> maze:, AntMaze_* -> antmaze:,
    FetchX-v4 -> fetch:X; None when crl has no such env (other ids, other versions)."""
    if not gym_id:
        return None
    if gym_id.startswith("PointMaze_"):
        return _valid_env_id(f"maze:{gym_id}")
    if gym_id.startswith("AntMaze_"):
        return _valid_env_id(f"antmaze:{gym_id}")
    match = re.fullmatch(r"Fetch(\w+)-v4", gym_id)
    return _valid_env_id(f"fetch:{match.group(1)}") if match else None


@lru_cache(maxsize=None)
def _env_spaces(env_id: str) -> tuple[Any, Any, Any]:
    """(observation space, action space, gymnasium spec) of a crl env, made once."""
    from crl import envs

    env = envs.make(env_id)
    try:
        return env.observation_space, env.action_space, env.spec
    finally:
        env.close()


def _serialize_space(space: Any) -> str | None:
    from minari.serialization import serialize_space

    try:
        return serialize_space(space)
    except (NotImplementedError, TypeError):
        return None


def _deserialize_space(text: Any, where: str, key: str) -> Any:
    from minari.serialization import deserialize_space

    try:
        return deserialize_space(_jsonable(text))
    except Exception as err:  # malformed JSON or space description, whatever the cause
        raise DatasetError(f"{where}: {key} is not a valid space description ({err})") from err


# ============================================================================ D4RL


@dataclass
class _D4RLColumns:
    """Validated flat arrays of a D4RL file; `fields` are obs-aligned (observation fields and
    infos), each with its `next_` rows or None."""

    fields: dict[str, np.ndarray]
    next_fields: dict[str, np.ndarray | None]
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    goal_data: bool
    has_next: bool


def load_d4rl(path: str | os.PathLike, *, action_space: Any = None,
              split_at_terminals: bool | None = None) -> Dataset:
    """A D4RL HDF5 file as episodes, validated.

    Episodes end at ``terminals`` (terminated) and ``timeouts`` (truncated) rows; rows after the
    last such row form a truncated episode.

    ``split_at_terminals=False`` cuts at timeouts only: terminal rows stay inside their episode as
    ordinary steps (terminated False, reward kept) and the flags are kept in infos["terminal"]
    (the final row repeats the last step's flag). That is D4RL's convention for its goal data:
    AntMaze sets ``terminals`` (= reward 1) on every step while the ant is near the goal and the
    trajectory carries on (https://github.com/Farama-Foundation/D4RL/issues/199; IQL and HIQL
    ignore or relabel these flags), so cutting there would make many one-step episodes with made-up
    finals and destroy the future-goal horizon goal agents sample from. ``None`` (auto) picks True
    for files written by `write_d4rl` (attribute ``crl_metadata``: their terminals are real episode
    ends), False for other goal data (``infos/goal`` present: AntMaze, maze2d), True otherwise; the
    choice is in metadata ``split_at_terminals``. Without ``timeouts`` and without splitting, the
    file is one episode unless its ``next_observations`` show resets (below).

    An episode's final observation obs_T:

    * with ``next_observations``: every step is kept and obs_T is the next observation of the
      episode's last row;
    * without, a timeout row (and the file's last row) has no successor in the file, so that
      step is dropped and its observation becomes obs_T (metadata ``dropped_steps`` counts them);
    * without, a terminal row is kept, because its reward and the termination matter (AntMaze
      marks its goal-reaching rewards as terminals) and a terminated step is never bootstrapped
      through: obs_T repeats the terminal row's observation (``repeated_final_observations``).

    Goal data (``infos/goal`` present) has dict observations: "observation" = observations,
    "desired_goal" = infos/goal, "achieved_goal" = infos/achieved_goal if present, else the first
    two columns of the observation (D4RL's maze convention: the xy position comes first). The
    final row of the goals uses ``infos/next_goal`` / ``infos/next_achieved_goal`` (written by
    `write_d4rl`) when present, else the goal of the last row; other ``infos/*`` likewise.

    Infos that are not numeric or not one row per step are skipped (metadata ``skipped_infos``).
    A file without ``timeouts`` is cut at terminals and, when it has ``next_observations``, at
    rows whose next observation is not the following row's observation (an unflagged reset;
    metadata ``cut_at_observation_gaps``). Actions are checked against
    ``action_space`` (argument, else the file's ``action_space`` attribute, else the env of its
    ``env_id`` attribute) when one is known.
    """
    path = Path(path)
    where = str(path)
    arrays, attrs, file_meta = _read_hdf5(path)
    metadata, ignored = _d4rl_metadata(attrs, file_meta, where), []
    columns = _d4rl_columns(arrays, where, metadata, ignored)
    if split_at_terminals is None:
        split_at_terminals = "crl_metadata" in attrs or not columns.goal_data
    if not split_at_terminals:
        _keep_terminals_as_info(columns, where)
    env_id = _valid_env_id(metadata.get("env_id"))
    space = action_space
    if space is None and "action_space" in attrs:
        space = _deserialize_space(attrs["action_space"], where, "attribute action_space")
    if space is None and env_id is not None:
        space = _env_info(env_id)[1]
    if space is not None:
        _check_actions(columns.actions, space, where, "actions")
    episodes, stats = _cut_episodes(columns, split_at_terminals)
    if not episodes:
        _fail(where, "no complete transition: every episode has a single row and no next_observations")
    metadata.update(stats, format="d4rl", source=where, split_at_terminals=bool(split_at_terminals))
    if ignored:
        metadata["ignored_keys"] = ignored
    return Dataset(episodes=episodes, env_id=env_id, metadata=metadata, source=where)


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(datasets by path, root attributes, scalar datasets under metadata/) of an HDF5 file."""
    import h5py

    if not path.exists():
        _fail(str(path), "no such file")
    if not path.is_file():
        _fail(str(path), "not a file (a D4RL dataset is one HDF5 file)")
    arrays, file_meta = {}, {}

    def visit(name: str, item: Any) -> None:
        if not isinstance(item, h5py.Dataset):
            return
        if name.startswith("metadata/"):
            if item.shape == ():  # policy weights and other arrays are not metadata we use
                file_meta[name[len("metadata/"):]] = _jsonable(item[()])
            return
        arrays[name] = item[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
            attrs = {k: f.attrs[k] for k in f.attrs}
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, MemoryError) as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({type(err).__name__}: {err})") from err
    return arrays, attrs, file_meta


def _d4rl_metadata(attrs: dict, file_meta: dict, where: str) -> dict:
    metadata = dict(file_meta)
    for key, value in attrs.items():
        if key not in ("crl_metadata", "action_space"):
            metadata[key] = _jsonable(value)
    if "crl_metadata" in attrs:
        try:
            stored = json.loads(_jsonable(attrs["crl_metadata"]))
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: attribute crl_metadata is not valid JSON ({err})") from err
        if not isinstance(stored, dict):
            _fail(where, "attribute crl_metadata is not a JSON object")
        metadata.update(stored)
    return metadata


def _squeeze_column(array: np.ndarray) -> np.ndarray:
    return array[:, 0] if array.ndim == 2 and array.shape[1] == 1 else array


def _d4rl_columns(arrays: dict, where: str, metadata: dict, ignored: list) -> _D4RLColumns:
    missing = [k for k in D4RL_REQUIRED if k not in arrays]
    if missing:
        keys = sorted(arrays)
        listed = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "") if keys else "none"
        hint = ("; this is a Minari data file: pass its dataset directory" if any(k.startswith("episode_") for k in keys)
                else "")
        _fail(where, f"missing key {missing[0]!r} (keys in the file: {listed}){hint}")
    observations = arrays["observations"]
    _check_array(observations, where, "observations")
    n = len(observations)
    if n == 0:
        _fail(where, "observations has zero rows: the file holds no steps")
    core = {k: arrays[k] for k in ("actions", "rewards", "terminals", "timeouts", "next_observations")
            if k in arrays}
    for key, array in core.items():
        _check_numeric(array, where, key)
    _check_lengths(core, n, "observations", where)
    actions = arrays["actions"]
    _check_finite(actions, where, "actions")
    rewards = _squeeze_column(arrays["rewards"])
    if rewards.ndim != 1:
        _fail(where, f"rewards has shape {arrays['rewards'].shape}, expected one number per step")
    _check_finite(rewards, where, "rewards")
    terminals = _as_flags(arrays["terminals"], where, "terminals")
    next_obs = arrays.get("next_observations")
    if next_obs is not None:
        _check_finite(next_obs, where, "next_observations")
        if next_obs.shape != observations.shape:
            _fail(where, f"next_observations has shape {next_obs.shape}, observations {observations.shape}")
        if next_obs.dtype != observations.dtype:
            converted = next_obs.astype(observations.dtype)
            if observations.dtype.kind in "biu" and not np.array_equal(converted, next_obs):
                # integer observations cannot hold these next observations: one wider dtype for both
                common = np.result_type(observations.dtype, next_obs.dtype)
                observations, converted = observations.astype(common), next_obs.astype(common)
            next_obs = converted
    if "timeouts" in arrays:
        timeouts = _as_flags(arrays["timeouts"], where, "timeouts")
    else:
        timeouts = np.zeros(n, bool)
        metadata["timeouts_absent"] = True
        if next_obs is not None:
            _cut_at_unflagged_resets(observations, next_obs, timeouts, terminals, metadata)
    infos = {k[len("infos/"):]: v for k, v in arrays.items() if k.startswith("infos/")}
    known = set(core) | {"observations"} | {f"infos/{k}" for k in infos}
    ignored.extend(sorted(k for k in arrays if k not in known))
    goal_data = "goal" in infos
    if goal_data:
        fields, next_fields = _d4rl_goal_fields(observations, next_obs, infos, where)
    else:
        fields, next_fields = {"observations": observations}, {"observations": next_obs}
    _add_d4rl_infos(infos, n, fields, next_fields, metadata, goal_data)
    return _D4RLColumns(fields, next_fields, actions, rewards, terminals, timeouts, goal_data,
                        next_obs is not None)


def _cut_at_unflagged_resets(observations: np.ndarray, next_obs: np.ndarray, timeouts: np.ndarray,
                             terminals: np.ndarray, metadata: dict) -> None:
    """Without ``timeouts``, a row whose next observation is not the following row's observation
    ends an episode (a reset the file did not flag); such rows are marked as timeouts, unless a
    terminal already flags them (a reset always follows a terminal). D4RL's own
    ``qlearning_dataset`` cuts such files at the env's step limit instead, which a file alone
    does not give."""
    gaps = np.any((next_obs[:-1] != observations[1:]).reshape(len(observations) - 1, -1), axis=1)
    gaps &= ~terminals[:-1]
    timeouts[:-1] |= gaps
    metadata["cut_at_observation_gaps"] = int(gaps.sum())


def _goal_array(infos: dict, key: str, n: int, where: str) -> np.ndarray | None:
    if key not in infos:
        return None
    array = infos[key]
    if array.ndim == 1:
        array = array[:, None]
    _check_array(array, where, f"infos/{key}")
    _check_lengths({f"infos/{key}": array}, n, "observations", where)
    return array


def _d4rl_goal_fields(observations, next_obs, infos, where):
    n = len(observations)
    goal = _goal_array(infos, "goal", n, where)
    achieved = _goal_array(infos, "achieved_goal", n, where)
    next_achieved = _goal_array(infos, "next_achieved_goal", n, where)
    if achieved is None:
        if observations.ndim != 2 or observations.shape[1] < 2:
            _fail(where, f"observations of shape {observations.shape} have no xy position in their first "
                         "two columns; add infos/achieved_goal")
        achieved = observations[:, :2]
        if next_obs is not None:
            next_achieved = next_obs[:, :2]
    if goal is not None and goal.shape[1:] != achieved.shape[1:]:
        source = "infos/achieved_goal" if "achieved_goal" in infos else "the observations' first two columns (xy)"
        _fail(where, f"infos/goal has shape {infos['goal'].shape}: its rows must be as wide as the achieved goal's, "
                     f"{achieved.shape[1:]} from {source}")
    fields = {"observation": observations, "achieved_goal": achieved, "desired_goal": goal}
    next_fields = {"observation": next_obs, "achieved_goal": next_achieved,
                   "desired_goal": _goal_array(infos, "next_goal", n, where)}
    for key, next_rows in next_fields.items():
        if next_rows is not None and next_rows.shape != fields[key].shape:
            _fail(where, f"the next rows of {key} have shape {next_rows.shape}, its rows {fields[key].shape}")
        next_fields[key] = None if next_rows is None else next_rows.astype(fields[key].dtype, copy=False)
    return fields, next_fields


def _add_d4rl_infos(infos, n, fields, next_fields, metadata, goal_data) -> None:
    """Per-step infos into `fields` as ("infos/<key>"); unusable ones are listed, not loaded."""
    skipped = []
    for key, array in sorted(infos.items()):
        if goal_data and key in D4RL_GOAL_INFOS:
            continue
        if key.startswith("next_") and key[len("next_"):] in infos:
            continue
        if array.ndim == 0 or array.dtype.kind not in "biuf" or len(array) != n:
            skipped.append(f"infos/{key} ({array.dtype}, shape {array.shape})")
            continue
        next_array = infos.get(f"next_{key}")
        usable_next = next_array is not None and next_array.shape == array.shape and next_array.dtype.kind in "biuf"
        fields[f"infos/{key}"] = array
        next_fields[f"infos/{key}"] = next_array.astype(array.dtype, copy=False) if usable_next else None
    if skipped:
        metadata["skipped_infos"] = skipped


def _keep_terminals_as_info(columns: _D4RLColumns, where: str) -> None:
    key = f"infos/{TERMINAL_INFO}"
    if key in columns.fields:
        _fail(where, f"{key} is in the file, where split_at_terminals=False would keep the terminals; "
                     "load it with split_at_terminals=True")
    columns.fields[key] = columns.terminals
    columns.next_fields[key] = None


def _episode_rows(rows: np.ndarray, next_rows: np.ndarray | None, start: int, cut: int, final: str):
    """Rows start..cut of an obs-aligned array plus the episode's final row (see load_d4rl)."""
    if final == "own":
        return rows[start:cut + 1]
    last = next_rows[cut:cut + 1] if final == "next" and next_rows is not None else rows[cut:cut + 1]
    return np.concatenate([rows[start:cut + 1], last])


def _cut_episodes(columns: _D4RLColumns, split_at_terminals: bool) -> tuple[list[Episode], dict]:
    n = len(columns.actions)
    ends = columns.terminals | columns.timeouts if split_at_terminals else columns.timeouts
    cuts = np.flatnonzero(ends).tolist()
    if not cuts or cuts[-1] != n - 1:
        cuts.append(n - 1)  # trailing rows: an episode the file stops in the middle of
    episodes, dropped, repeated, start = [], 0, 0, 0
    for cut in cuts:
        if columns.has_next:
            final, stop = "next", cut + 1
        elif split_at_terminals and columns.terminals[cut]:
            final, stop = "repeat", cut + 1
            repeated += 1
        else:
            final, stop = "own", cut
            dropped += 1
        if stop > start:
            episodes.append(_d4rl_episode(columns, start, cut, stop, final, split_at_terminals))
        start = cut + 1
    return episodes, {"dropped_steps": dropped, "repeated_final_observations": repeated}


def _d4rl_episode(columns: _D4RLColumns, start: int, cut: int, stop: int, final: str,
                  split_at_terminals: bool) -> Episode:
    rows = {k: _episode_rows(v, columns.next_fields[k], start, cut, final) for k, v in columns.fields.items()}
    infos = {k[len("infos/"):]: rows.pop(k) for k in list(rows) if k.startswith("infos/")}
    observations = rows if columns.goal_data else rows["observations"]
    terminations = columns.terminals[start:stop] if split_at_terminals else np.zeros(stop - start, bool)
    truncations = _mark_last_step(terminations, columns.timeouts[start:stop])
    return Episode(observations=observations, actions=columns.actions[start:stop],
                   rewards=columns.rewards[start:stop], terminations=terminations,
                   truncations=truncations, infos=infos)


def write_d4rl(path: str | os.PathLike, dataset: Dataset, *, action_space: Any = None,
               compression: str | None = "gzip") -> None:
    """Writes `dataset` in the D4RL layout, atomically (temp file in the same directory, then rename).

    Flat arrays of every step: observations, next_observations, actions, rewards, terminals
    (terminations), timeouts (truncations; an episode's unflagged last step is written as a
    timeout), infos/<key> and infos/next_<key> for the infos (next = the rows after each step).
    Goal data: "observation" goes to observations, "desired_goal" to infos/goal, "achieved_goal"
    to infos/achieved_goal (and their next_ rows). Root attributes: env_id, ref_min_score,
    ref_max_score, policy, seed when known, action_space (Minari's JSON space description) and the
    whole metadata as JSON in crl_metadata. `load_d4rl` gives back the same episodes bit for bit.
    """
    _check_dataset(dataset)
    if action_space is None:
        env_action = _env_info(dataset.env_id)[1]
        first_action = _box_of(np.asarray(dataset.episodes[0].actions)[0])
        action_space = env_action if env_action is not None and _same_shapes(env_action, first_action) else None
    if action_space is not None:
        _check_dataset_actions(dataset, action_space)
    columns = _d4rl_flat_arrays(dataset)
    attrs = _d4rl_attrs(dataset, action_space)
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, array in columns.items():
                f.create_dataset(key, data=array, compression=compression if array.size else None)
            for key, value in attrs.items():
                f.attrs[key] = value


def _d4rl_flat_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    first = dataset.episodes[0]
    goal_data = isinstance(first.observations, dict)
    if goal_data and set(first.observations) != set(GOAL_KEYS):
        _fail(dataset.source or "dataset", f"D4RL holds array observations or the goal keys {GOAL_KEYS}, "
                                           f"not {sorted(first.observations)}")
    names = {"observation": "observations", "desired_goal": "infos/goal", "achieved_goal": "infos/achieved_goal"}
    for key in first.infos:
        clash = key.startswith("next_") or (goal_data and key in D4RL_GOAL_INFOS)
        if clash:
            _fail(dataset.source or "dataset", f"infos key {key!r} clashes with the D4RL layout's names")
    parts: dict[str, list] = {}

    def add(key: str, array: np.ndarray) -> None:
        parts.setdefault(key, []).append(np.asarray(array))

    for episode in dataset.episodes:
        obs = episode.observations if goal_data else {"observation": episode.observations}
        for name, rows in obs.items():
            target = names[name]
            add(target, rows[:-1])
            add(_next_name(target), rows[1:])
        for key, rows in episode.infos.items():
            add(f"infos/{key}", rows[:-1])
            add(f"infos/next_{key}", rows[1:])
        terminations = np.asarray(episode.terminations, bool)
        add("actions", episode.actions)
        add("rewards", episode.rewards)
        add("terminals", terminations)
        add("timeouts", _mark_last_step(terminations, np.asarray(episode.truncations, bool)))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def _next_name(key: str) -> str:
    head, _, tail = key.rpartition("/")
    return f"{head}/next_{tail}" if head else f"next_{tail}"


def _d4rl_attrs(dataset: Dataset, action_space: Any) -> dict:
    metadata = {k: v for k, v in dataset.metadata.items() if k not in LOAD_ONLY_KEYS and v is not None}
    if dataset.env_id is not None:
        metadata["env_id"] = dataset.env_id
    attrs = {"crl_metadata": json.dumps(_jsonable(metadata))}
    for key in ("env_id", "ref_min_score", "ref_max_score", "policy", "seed"):
        value = _jsonable(metadata.get(key))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            attrs[key] = value
    space = _serialize_space(action_space) if action_space is not None else None
    if space is not None:
        attrs["action_space"] = space
    return attrs


# ============================================================================ Minari


def minari_root() -> Path:
    """Where Minari keeps datasets: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root).expanduser() if root else Path.home() / ".minari" / "datasets"


def local_minari_ids(root: str | os.PathLike | None = None) -> list[str]:
    """Ids of the Minari datasets under `root` (directories holding data/metadata.json)."""
    root = Path(root) if root is not None else minari_root()
    found = []
    for directory, subdirs, _ in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if (Path(directory) / "data" / "metadata.json").is_file():
            found.append(Path(directory).relative_to(root).as_posix())
            subdirs[:] = []
    return found


def _minari_data_dir(id_or_path: str | os.PathLike) -> Path:
    """The `data` directory of a Minari dataset given by directory path or local id."""
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        for data_dir in (path / "data", path):
            if (data_dir / "metadata.json").is_file():
                return data_dir
        _fail(str(path), "not a Minari dataset directory (no data/metadata.json)")
    text = str(id_or_path)
    if not MINARI_ID.fullmatch(text):
        _fail(text, "neither a Minari dataset directory nor a dataset id like 'namespace/name-v0'")
    root = minari_root()
    data_dir = root / text / "data"
    if (data_dir / "metadata.json").is_file():
        return data_dir
    local = local_minari_ids(root) if root.is_dir() else []
    raise DatasetError(
        f"Minari dataset {text!r} is not in {root} (ids there: {', '.join(local) or 'none'}). Nothing is "
        "downloaded: copy the dataset directory there, set MINARI_DATASETS_PATH, or pass its path.")


def load_minari(id_or_path: str | os.PathLike, *, action_space: Any = None) -> Dataset:
    """A Minari dataset by local id (under `minari_root()`) or by directory, validated; no network.

    Goal dict observations (keys "observation", "achieved_goal", "desired_goal") are cast to
    float32 like crl's goal envs; other observations keep their dtype. Nested infos become
    "a/b" keys; infos that are not numeric with T+1 rows are skipped (metadata ``skipped_infos``);
    empty episodes are skipped (``skipped_empty_episodes``). Actions are checked against
    ``action_space`` (default: the dataset's own). The crl env id comes from our writer's
    ``crl_env_id``, else from the env spec (`env_id_from_gym`); the spec's id, kwargs and step
    limit are kept in metadata as gym_env_id, gym_env_kwargs, gym_max_episode_steps.
    """
    data_dir = _minari_data_dir(id_or_path)
    where = str(data_dir)
    try:
        import minari

        raw = json.loads((data_dir / "metadata.json").read_text())
        _check_minari_metadata(raw, where)
        minari_dataset = minari.MinariDataset(data_dir)
        space = action_space if action_space is not None else minari_dataset.action_space
        data_file = data_dir / "main_data.hdf5" if raw.get("data_format") == "hdf5" else data_dir
        if data_file != data_dir:
            _check_minari_episode_count(data_file, raw)
        episodes, skipped_infos, empty = [], set(), 0
        for data in minari_dataset.iterate_episodes():
            episode = _minari_episode(data, f"{data_file} episode_{data.id}", space, skipped_infos)
            if episode is None:
                empty += 1
            else:
                episodes.append(episode)
        spec = minari_dataset.env_spec
    except DatasetError:
        raise
    except Exception as err:  # minari raises anything from AssertionError to ImportError on bad data
        detail = f"{type(err).__name__}: {err}" if str(err) else f"{type(err).__name__} in minari, with no message"
        raise DatasetError(f"{where}: cannot read the Minari dataset ({detail})") from err
    if not episodes:
        _fail(where, "the dataset holds no steps")
    metadata = _minari_metadata(raw, spec)
    metadata.update(format="minari", source=where)
    if skipped_infos:
        metadata["skipped_infos"] = sorted(skipped_infos)
    if empty:
        metadata["skipped_empty_episodes"] = empty
    env_id = _valid_env_id(raw.get("crl_env_id")) or env_id_from_gym(spec.id if spec else None)
    dataset = Dataset(episodes=episodes, env_id=env_id, metadata=metadata, source=where)
    _check_episodes_agree(dataset)  # each episode was checked as it was read
    return dataset


def _check_minari_metadata(raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        _fail(where, "metadata.json is not a JSON object")
    # Without stored spaces minari would build the env from env_spec, i.e. import and call
    # whatever entry point the file names: never do that for a file from elsewhere.
    for key in ("observation_space", "action_space"):
        if not isinstance(raw.get(key), str):
            _fail(where, f"metadata.json has no {key}; refusing to make the environment named in env_spec to get it")


def _check_minari_episode_count(data_file: Path, raw: dict) -> None:
    """Minari reads metadata.json's total_episodes episodes and silently ignores the rest."""
    import h5py

    with h5py.File(data_file, "r") as f:
        stored = sum(1 for name in f if name.startswith("episode_"))
    if raw.get("total_episodes") != stored:
        _fail(str(data_file), f"holds {stored} episodes but metadata.json's total_episodes is "
                              f"{raw.get('total_episodes')!r}")


def _flatten_infos(infos: Any, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in (infos or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten_infos(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _minari_observations(observations: Any, where: str) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(observations, np.ndarray):
        return observations
    if not isinstance(observations, dict) or not all(isinstance(v, np.ndarray) for v in observations.values()):
        _fail(where, f"observations of type {type(observations).__name__} are not supported "
                     "(an array or a flat dict of arrays)")
    if set(observations) == set(GOAL_KEYS):
        for key, value in observations.items():
            _check_numeric(value, where, f"observations/{key}")
        return {k: observations[k].astype(np.float32, copy=False) for k in GOAL_KEYS}
    return dict(observations)


def _minari_episode(data: Any, where: str, action_space: Any, skipped_infos: set) -> Episode | None:
    if len(data.rewards) == 0:
        return None
    if not isinstance(data.actions, np.ndarray):
        _fail(where, f"actions of type {type(data.actions).__name__} are not supported (an array)")
    steps = len(data.rewards)
    infos = {}
    for key, value in _flatten_infos(data.infos).items():
        value = np.asarray(value)
        if value.ndim == 0 or value.dtype.kind not in "biuf" or len(value) != steps + 1:
            skipped_infos.add(f"{key} ({value.dtype}, shape {value.shape})")
        else:
            infos[key] = value
    rewards = np.asarray(data.rewards)
    rewards = rewards[:, 0] if rewards.ndim == 2 and rewards.shape[1] == 1 else rewards
    terminations = _as_flags(data.terminations, where, "terminations")
    truncations = _as_flags(data.truncations, where, "truncations")
    episode = Episode(observations=_minari_observations(data.observations, where), actions=data.actions,
                      rewards=rewards, terminations=terminations, truncations=truncations, infos=infos)
    _check_episode(episode, where, action_space)
    episode.truncations = _mark_last_step(terminations, truncations)
    return episode


def _minari_metadata(raw: dict, spec: Any) -> dict:
    skip = {"observation_space", "action_space", "env_spec", "eval_env_spec", "crl_metadata", "crl_env_id"}
    metadata = {k: _jsonable(v) for k, v in raw.items() if k not in skip}
    if isinstance(raw.get("crl_metadata"), dict):
        metadata.update(raw["crl_metadata"])
    if isinstance(raw.get("crl_env_id"), str):  # kept even when not a crl id, to name it in errors
        metadata.setdefault("env_id", raw["crl_env_id"])
    if "policy" not in metadata and "algorithm_name" in metadata:
        metadata["policy"] = metadata["algorithm_name"]
    if spec is not None:
        metadata.update(gym_env_id=spec.id, gym_env_kwargs=_jsonable(spec.kwargs),
                        gym_max_episode_steps=spec.max_episode_steps)
    return metadata


def write_minari(dataset: Dataset, dataset_id: str, *, root: str | os.PathLike | None = None,
                 observation_space: Any = None, action_space: Any = None, overwrite: bool = False,
                 description: str | None = None) -> Path:
    """Writes `dataset` as the Minari dataset `dataset_id` under `root` (default `minari_root()`).

    HDF5 storage with raw arrays (jpeg_encoding off: Minari's image encoding is lossy). Spaces:
    the arguments, else the env of `dataset.env_id` (crl.envs.make) when its shapes match the
    data, else unbounded Boxes built from the data; the env's gymnasium spec is recorded when
    there is one. Metadata: crl_env_id, crl_metadata (all of `dataset.metadata`), algorithm_name
    (the policy), ref_min_score / ref_max_score when known (as `minari.get_normalized_score`
    reads them). Built in a hidden directory next to the target, then renamed into place.
    `load_minari` gives back the same episodes bit for bit. Returns the dataset directory.
    """
    if not MINARI_ID.fullmatch(dataset_id):
        raise ValueError(f"Minari ids look like 'namespace/name-v0', got {dataset_id!r}")
    target = (Path(root).expanduser() if root is not None else minari_root()) / dataset_id
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    _check_dataset(dataset)
    obs_space, action_space, spec = _writer_spaces(dataset, observation_space, action_space)
    _check_observation_space(dataset, obs_space)
    _check_dataset_actions(dataset, action_space)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        _write_minari_storage(tmp / "data", dataset, dataset_id, obs_space, action_space, spec, description)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_minari_storage(data_dir, dataset, dataset_id, obs_space, action_space, spec, description):
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    storage = MinariStorage.new(data_dir, observation_space=obs_space, action_space=action_space,
                                env_spec=_serializable_spec(spec), data_format="hdf5", jpeg_encoding=False)
    metadata = {k: v for k, v in dataset.metadata.items() if k not in LOAD_ONLY_KEYS and v is not None}
    extra = {"dataset_id": dataset_id, "minari_version": minari.__version__,
             "crl_metadata": _jsonable(metadata)}
    if dataset.env_id is not None:
        extra["crl_env_id"] = dataset.env_id
    if metadata.get("policy") is not None:
        extra["algorithm_name"] = str(metadata["policy"])
    if description is not None:
        extra["description"] = description
    for key in ("ref_min_score", "ref_max_score"):
        if key in metadata:
            extra[key] = float(metadata[key])
    storage.update_metadata(extra)
    storage.update_episodes(
        EpisodeBuffer(observations=ep.observations, actions=np.asarray(ep.actions),
                      rewards=np.asarray(ep.rewards), terminations=np.asarray(ep.terminations, bool),
                      truncations=_mark_last_step(np.asarray(ep.terminations, bool), np.asarray(ep.truncations, bool)),
                      infos=_nest_infos(ep.infos) or None)
        for ep in dataset.episodes)


def _serializable_spec(spec: Any) -> Any:
    """The gymnasium spec if it can be stored as JSON (registered envs; not e.g. callables)."""
    try:
        spec.to_json()
    except Exception:
        return None
    return spec


def _nest_infos(infos: dict[str, np.ndarray]) -> dict:
    """The inverse of `_flatten_infos`: "a/b" keys become nested dicts (Minari stores groups)."""
    nested: dict = {}
    for key, value in infos.items():
        *groups, leaf = key.split("/")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = np.asarray(value)
    return nested


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.rename(target, old / "dataset")
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _env_info(env_id: str | None) -> tuple[Any, Any, Any]:
    """(observation space, action space, spec) of a crl env, or Nones when it cannot be made."""
    if env_id is None:
        return None, None, None
    try:
        return _env_spaces(env_id)
    except Exception as err:  # the env may need packages or a display this machine lacks
        warnings.warn(f"could not make {env_id} for its spaces ({type(err).__name__}: {err}); "
                      "using spaces built from the data")
        return None, None, None


def _writer_spaces(dataset: Dataset, obs_space: Any, action_space: Any) -> tuple[Any, Any, Any]:
    """(observation space, action space, gymnasium spec or None) for `write_minari`: the
    arguments, else the env's when its shapes match the data, else unbounded spaces of the data."""
    env_obs, env_action, spec = _env_info(dataset.env_id)
    first = dataset.episodes[0]
    if obs_space is None:
        obs_space = _matching(env_obs, _space_of_observations(first.observations))
    if action_space is None:
        action_space = _matching(env_action, _box_of(np.asarray(first.actions)[0]))
    return obs_space, action_space, spec


def _matching(env_space: Any, inferred: Any) -> Any:
    # Pixel datasets hold single frames while the env yields stacks: then the env's space is wrong.
    return env_space if env_space is not None and _same_shapes(env_space, inferred) else inferred


def _check_observation_space(dataset: Dataset, space: Any) -> None:
    inferred = _space_of_observations(dataset.episodes[0].observations)
    if not _same_shapes(space, inferred):
        _fail(dataset.source or "dataset", f"observations {inferred} do not fit the observation space {space}")


def _box_of(example: np.ndarray) -> Any:
    """An unbounded space with the shape and dtype of one example row."""
    import gymnasium as gym

    if example.dtype == bool:
        return gym.spaces.MultiBinary(list(example.shape) or 1)
    if example.dtype.kind in "iu":
        info = np.iinfo(example.dtype)
        return gym.spaces.Box(info.min, info.max, example.shape, example.dtype)
    return gym.spaces.Box(-np.inf, np.inf, example.shape, example.dtype)


def _space_of_observations(observations: Any) -> Any:
    import gymnasium as gym

    if isinstance(observations, dict):
        return gym.spaces.Dict({k: _box_of(np.asarray(v)[0]) for k, v in observations.items()})
    return _box_of(np.asarray(observations)[0])


def _same_shapes(a: Any, b: Any) -> bool:
    import gymnasium as gym

    if isinstance(a, gym.spaces.Dict) or isinstance(b, gym.spaces.Dict):
        return (isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict)
                and set(a.spaces) == set(b.spaces) and all(_same_shapes(a[k], b[k]) for k in a.spaces))
    return a.shape == b.shape or (isinstance(a, gym.spaces.Discrete) and b.shape == ())


# ============================================================================ entry point


def load(spec: str | os.PathLike, **kwargs: Any) -> Dataset:
    """One entry point: "d4rl:PATH", "minari:ID_OR_PATH", a .hdf5/.h5 path (D4RL), a Minari
    dataset directory, or a local Minari id. Keyword arguments go to the loader (action_space;
    split_at_terminals for D4RL files)."""
    text = str(spec)
    if text.startswith("d4rl:"):
        return load_d4rl(text[len("d4rl:"):], **kwargs)
    if text.startswith("minari:"):
        return load_minari(text[len("minari:"):], **kwargs)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".hdf5", ".h5"):
        return load_d4rl(path, **kwargs)
    if path.is_dir():
        return load_minari(path, **kwargs)
    if path.is_file():
        _fail(text, "unknown dataset file type: expected a .hdf5/.h5 D4RL file (or prefix it with 'd4rl:')")
    return load_minari(text, **kwargs)


# ============================================================================ replay


def to_replay(dataset: Dataset, capacity: int | None = None, frame_stack: int = 1, seed: int | None = None,
              stacked: bool = False):
    """An `EpisodeReplay` holding every episode, in order (episode serial i = dataset.episodes[i]).

    Observations are single frames (``stacked=False``; the replay rebuilds stacks of
    ``frame_stack``) or already stacked along axis 0 (``stacked=True``). The default capacity is
    every frame plus room for one more episode as long as the longest, so nothing is evicted.
    """
    from crl.replay import EpisodeReplay

    _check_dataset(dataset)
    frames = sum(ep.num_steps + 1 for ep in dataset.episodes)
    if capacity is None:
        capacity = frames + max(ep.num_steps + 1 for ep in dataset.episodes)
    if capacity < frames:
        raise ValueError(f"capacity {capacity} holds fewer than the dataset's {frames} frames")
    replay = EpisodeReplay(capacity, frame_stack=frame_stack, seed=seed)
    for episode in dataset.episodes:
        replay.add_episode(episode.observations, episode.actions, episode.rewards,
                           terminated=episode.terminations, truncated=episode.truncations, stacked=stacked)
    return replay


# ============================================================================ scores


def episode_returns(dataset: Dataset) -> np.ndarray:
    """Undiscounted return of every episode (float64)."""
    return np.array([np.sum(np.asarray(ep.rewards, np.float64)) for ep in dataset.episodes])


@lru_cache(maxsize=None)
def reference_table(path: Path = REFERENCE_TABLE) -> dict[str, tuple[float, float]]:
    """task -> (ref_min_score, ref_max_score) from the CSV (columns task,ref_min_score,ref_max_score)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ValueError(f"cannot read the reference score table {path}: {err}") from err
    table = {}
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    header = [c.strip() for c in lines[0].split(",")]
    for line in lines[1:]:
        row = dict(zip(header, (c.strip() for c in line.split(","))))
        table[row["task"]] = (float(row["ref_min_score"]), float(row["ref_max_score"]))
    return table


def _task_of(name: str, table: dict) -> str | None:
    """The table task named by a dataset name: "hopper-medium-v2" -> hopper (first known token)."""
    for token in re.split(r"[^a-z0-9]+", name.lower()):
        if token in table:
            return token
    return None


def reference_scores(task: str | None = None, dataset: Dataset | None = None) -> tuple[float, float]:
    """(min, max) reference returns: the dataset's own ref_min/max_score (more specific than the
    table: e.g. Minari's v5 MuJoCo datasets), else the table row of `task`, or when `task` is None
    of the dataset's task, id or file name (not for data collected in a crl env)."""
    if dataset is not None and "ref_min_score" in dataset.metadata and "ref_max_score" in dataset.metadata:
        low, high = dataset.metadata["ref_min_score"], dataset.metadata["ref_max_score"]
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{dataset.source}: reference scores {low!r}, {high!r} are not numbers") from err
        if not (math.isfinite(low) and math.isfinite(high)) or low == high:
            raise DatasetError(f"{dataset.source}: reference scores {low}, {high} cannot normalise returns")
        return low, high
    table = reference_table()
    names = [task] if task is not None else []
    if task is None and dataset is not None and dataset.env_id is not None:
        # collected in a crl env (DMC, mazes, Fetch): D4RL's gym-MuJoCo ranges do not apply, even
        # where a name shares a word with them (dmc-state:hopper-hop is not gym's Hopper)
        raise ValueError(f"no reference scores for data of {dataset.env_id!r} (D4RL's references are "
                         "for its own gym tasks; store ref_min_score/ref_max_score in the dataset's metadata)")
    if task is None and dataset is not None:
        names = [str(dataset.metadata.get(k)) for k in ("task", "dataset_id") if dataset.metadata.get(k)]
        names.append(Path(dataset.source).stem if dataset.source else "")
    for name in names:
        found = _task_of(name, table)
        if found is not None:
            return table[found]
    shown = task if task is not None else (dataset.source if dataset is not None else None)
    raise ValueError(f"no reference scores for {shown!r}: known tasks are {', '.join(sorted(table))} "
                     "(or store ref_min_score/ref_max_score in the dataset's metadata)")


def normalized_score(returns: Any, task: str | None = None, dataset: Dataset | None = None) -> Any:
    """D4RL normalised score 100 * (R - min) / (max - min), elementwise; a float for a scalar."""
    low, high = reference_scores(task, dataset)
    score = 100.0 * (np.asarray(returns, np.float64) - low) / (high - low)
    return float(score) if score.ndim == 0 else score


def _is_goal_data(dataset: Dataset) -> bool:
    first = dataset.episodes[0] if dataset.episodes else None
    return first is not None and ("success" in first.infos or (
        isinstance(first.observations, dict) and {"achieved_goal", "desired_goal"} <= set(first.observations)))


def success_radius(dataset: Dataset) -> float:
    """The goal radius the dataset's own success is measured with: D4RL's 0.5 for D4RL data (format
    d4rl and no crl env id, i.e. not collected in a crl env), else the crl env's (0.05 for
    fetch:, 0.45 for the gymnasium-robotics mazes)."""
    from crl.envs.goals import FETCH_SUCCESS_RADIUS, MAZE_SUCCESS_RADIUS

    env_id = dataset.env_id
    if env_id is None and dataset.metadata.get("format") == "d4rl":
        return D4RL_SUCCESS_RADIUS
    return FETCH_SUCCESS_RADIUS if env_id and env_id.startswith("fetch:") else MAZE_SUCCESS_RADIUS


def success_rate(dataset: Dataset, radius: float | None = None) -> float:
    """Fraction of episodes that reach their goal: any infos["success"] true, else the final
    ||achieved_goal - desired_goal|| <= radius (default: `success_radius(dataset)`)."""
    if not _is_goal_data(dataset):
        raise ValueError(f"{dataset.source}: not goal data (no infos['success'], no goal observations)")
    radius = success_radius(dataset) if radius is None else radius
    reached = []
    for episode in dataset.episodes:
        if "success" in episode.infos:
            reached.append(bool(np.any(np.asarray(episode.infos["success"], np.float64) > 0.5)))
        else:
            obs = episode.observations
            distance = np.linalg.norm(np.asarray(obs["achieved_goal"][-1], np.float64)
                                      - np.asarray(obs["desired_goal"][-1], np.float64))
            reached.append(bool(distance <= radius))
    return float(np.mean(reached))


def summary(dataset: Dataset) -> dict:
    """What `crl dataset info` prints: sizes, returns, scores, shapes, env id, format, metadata."""
    returns = episode_returns(dataset)
    first = dataset.episodes[0]
    info = {
        "source": dataset.source,
        "format": dataset.metadata.get("format"),
        "env_id": dataset.env_id,
        "episodes": len(dataset.episodes),
        "steps": dataset.num_steps,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "observation": {k.removeprefix("observations/"): {"shape": list(v.shape[1:]), "dtype": str(v.dtype)}
                        for k, v in _obs_fields(first.observations).items()},
        "action": {"shape": list(np.asarray(first.actions).shape[1:]), "dtype": str(np.asarray(first.actions).dtype)},
    }
    score = dataset_score(dataset)
    if "success" in score:
        info["success_rate"] = score["success"]
    elif "normalized_score" in score:
        info["normalized_score"] = score["normalized_score"]
    info["metadata"] = _jsonable(dataset.metadata)
    return info


def dataset_score(dataset: Dataset) -> dict[str, float]:
    """The data's own score, what a policy trained on it is compared with: the success rate for goal
    data (AntMaze's files reward every step near the goal, so a summed return is not D4RL's
    0..1-range episode score), else the mean return and, where D4RL has references, its
    normalised score."""
    if _is_goal_data(dataset):
        return {"success": success_rate(dataset)}
    mean = float(episode_returns(dataset).mean())
    try:
        return {"episode_return": mean, "normalized_score": normalized_score(mean, dataset=dataset)}
    except ValueError:
        return {"episode_return": mean}
