"""`crl dataset collect|info` and `crl offline train|eval`: datasets in, scores out.

A dataset spec is whatever `crl.datasets.load` takes: "d4rl:PATH", "minari:ID_OR_PATH", a .hdf5
file, a Minari dataset directory or a local Minari id. Offline training loads it into the shared
replay and runs `crl.train.train_offline`; the run directory records the spec (file paths made
absolute), so `crl offline eval RUN_DIR` scores the policy on the dataset's environment next to the
dataset's own score, and resuming the run on another dataset is an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from crl import datasets
from crl.fileio import atomic_write_bytes
from crl.logger import read_config


def compact(value: Any, limit: int = 8) -> Any:
    """For printing: long lists (e.g. per-episode maze cells in metadata) become a count."""
    if isinstance(value, dict):
        return {k: compact(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) > limit:
        return f"[{len(value)} items]"
    return value


def collect_command(env_id: str | None, policy: str, episodes: int, *, out: str | None, minari_id: str | None,
                    seed: int = 0, style: str = "diverse", noise: float | None = None,
                    max_episode_steps: int | None = None, minari_root: str | None = None,
                    device: str = "auto", overwrite: bool = False) -> dict:
    from crl.collect import collect

    if (out is None) == (minari_id is None):
        raise ValueError("crl dataset collect needs exactly one of --out FILE.hdf5 or --minari-id ID")
    check_collect_options(out, minari_id, seed, noise, max_episode_steps)
    if minari_id is not None:
        target = (Path(minari_root).expanduser() if minari_root else datasets.minari_root()) / minari_id
        flag = "--minari-id"
    else:
        target, flag = Path(out), "--out"
        if target.is_dir():
            raise IsADirectoryError(f"--out {target} is a directory; --out names the .hdf5 file to write")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: choose another {flag}, remove it first, or pass --overwrite")
    dataset = collect(env_id, policy, episodes, seed=seed, style=style, noise=noise,
                      max_episode_steps=max_episode_steps, device=device)
    if out is not None:
        datasets.write_d4rl(out, dataset)
        where = str(out)
    else:
        where = str(datasets.write_minari(dataset, minari_id, root=minari_root, overwrite=overwrite))
    return compact({"written": where} | datasets.summary(dataset))


def check_collect_options(out: str | None, minari_id: str | None, seed: int, noise: float | None,
                          max_episode_steps: int | None) -> None:
    """Before any episode is collected: what would fail after (or be recorded wrongly)."""
    if out is not None and Path(out).suffix.lower() not in (".hdf5", ".h5"):
        raise ValueError(f"--out {out}: a D4RL-layout file is named .hdf5 or .h5 (how `crl dataset info` "
                         "and `crl offline train` recognise it)")
    if minari_id is not None and not datasets.MINARI_ID.fullmatch(minari_id):
        raise ValueError(f"--minari-id {minari_id!r} is not a Minari id: NAMESPACE/NAME-vN or NAME-vN")
    from crl.train import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be in 0..{MAX_SEED}, got {seed}")
    if noise is not None and not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"--noise must be >= 0 (the std of the Gaussian action noise), got {noise}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"--max-episode-steps must be positive, got {max_episode_steps}")


def info_command(spec: str) -> dict:
    return compact(datasets.summary(datasets.load(spec)))


def policy_score(result: dict[str, Any], dataset: datasets.Dataset) -> dict[str, float]:
    """An evaluation result in the dataset's terms (normalised score when references exist)."""
    score = {k: result[k] for k in ("success", "final_success", "episode_return") if k in result}
    if "success" not in score:
        try:
            score["normalized_score"] = datasets.normalized_score(result["episode_return"], dataset=dataset)
        except ValueError:
            pass
    return score


def resolve_spec(spec: str | Path) -> str:
    """The spec as a run records it: file and directory paths absolute, ids as given. A prefix the
    path does not need ("d4rl:" on a .hdf5/.h5 file, "minari:" on a directory) is dropped, so one
    dataset has one spec."""
    text = str(spec)
    prefix = next((p for p in ("d4rl:", "minari:") if text.startswith(p)), "")
    path = Path(text[len(prefix):]).expanduser()
    d4rl_suffix = path.suffix.lower() in (".hdf5", ".h5")
    if prefix == "d4rl:":
        return ("" if d4rl_suffix else prefix) + str(path.resolve())
    if prefix == "minari:":
        return str(path.resolve()) if path.is_dir() else text
    return str(path.resolve()) if d4rl_suffix or path.exists() else text


def same_dataset_key(resolved: str) -> str:
    """A resolved spec less its "minari:" prefix: once paths are resolved, "minari:ID" and "ID" both
    name the Minari id ID (the prefix is kept in records: it stops a folder named ID from being
    taken for the id later). An id of a local Minari dataset is its data folder, so the id and
    the folder's path name one dataset."""
    key = resolved.removeprefix("minari:")
    if not Path(key).is_absolute() and datasets.MINARI_ID.fullmatch(key):
        local = datasets.minari_root() / key
        if local.is_dir():
            return str(local.resolve())
    return key


def check_same_dataset(run_dir: Path, spec: str) -> str:
    """A run directory that will be resumed (it holds checkpoints) must be given its own dataset.
    Returns the spec to record: the run's own (as first given), else `spec`."""
    from crl.checkpoint import CheckpointManager

    if CheckpointManager(run_dir / "checkpoints").latest() is None or not (run_dir / "config.yaml").is_file():
        return spec
    recorded = read_config(run_dir).get("dataset")
    if recorded is not None and same_dataset_key(resolve_spec(recorded)) != same_dataset_key(spec):
        raise ValueError(f"{run_dir} was trained on dataset {recorded}, not {spec}; resuming it on another "
                         "dataset would mix the two: pass --logdir with a new run directory")
    return recorded if recorded is not None else spec


def _data_shapes(rows: Any) -> Any:
    """Per-step shapes of episode rows: {key: shape} for dict observations, else one shape."""
    if isinstance(rows, dict):
        return {k: tuple(np.asarray(v).shape[1:]) for k, v in rows.items()}
    return tuple(np.asarray(rows).shape[1:])


def _space_shapes(space: Any) -> Any:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return {k: tuple(s.shape) for k, s in space.spaces.items()}
    return tuple(space.shape)


def check_dataset_fits_env(dataset: datasets.Dataset, spec: str, env_id: str, env: Any,
                           remedy: str = "Pass --env with an environment whose spaces match the data "
                                         "(`crl list envs`).") -> None:
    """The agent is built on the evaluation env's spaces and trained on the data: their observation
    and action shapes must agree (a Discrete action may be stored as one number per step)."""
    first = dataset.episodes[0]
    data_obs, env_obs = _data_shapes(first.observations), _space_shapes(env.observation_space)
    data_action, env_action = _data_shapes(first.actions), _space_shapes(env.action_space)
    if env_action == () and data_action in ((), (1,)):
        data_action = ()
    problems = []
    if data_obs != env_obs:
        problems.append(f"observations of shape {data_obs} against {env_id}'s {env_obs}")
    if data_action != env_action:
        problems.append(f"actions of shape {data_action} against {env_id}'s {env_action}")
    if not problems:
        problems = _positions_outside_the_maze(dataset, env)
    if not problems:
        return
    message = f"{spec}: the dataset does not fit the environment {env_id}: it has {' and '.join(problems)}."
    if dataset.metadata.get("format") == "d4rl" and env_id.startswith("antmaze:"):
        message += (" D4RL's AntMaze observations are the ant's full qpos and qvel (29-d, xy position"
                    " included), gymnasium-robotics' AntMaze leaves the xy position out (27-d).")
    raise ValueError(f"{message} {remedy}")


def resumed_offline_configs(run_dir: Path, agent_name: str, preset: str | None, overrides: dict[str, Any],
                            fresh: tuple[Any, Any]) -> tuple[Any, Any]:
    """A run directory with a checkpoint goes on with the checkpoint's configs: the preset and
    --set values given again may change only the resumable fields (train.RESUMABLE_FIELDS), as
    `crl train --resume` does; `fresh` (the configs from defaults) otherwise."""
    from crl import train
    from crl.checkpoint import CheckpointManager

    manager = CheckpointManager(run_dir / "checkpoints")
    if manager.latest() is None:
        return fresh
    payload = manager.load_latest()
    if "replay" in payload:  # an online checkpoint (an offline one never stores its data)
        raise ValueError(f"{run_dir} is an online run (`crl train`), not an offline one: choose another --logdir "
                         f"(or go on with `crl train {payload.get('agent')} --resume {run_dir}`)")
    train.check_checkpoint_keys(payload, manager.loaded_path, train.OFFLINE_RESUME_KEYS)
    train.check_offline_checkpoint_agent(payload, manager.loaded_path, agent_name)
    settings = dict(train.agent_module(agent_name).PRESETS[preset]) if preset else {}
    # as an online resume: config.yaml's resumable values (an interrupted resume's --updates) carry on
    recorded = read_config(run_dir).get("run") if (run_dir / "config.yaml").is_file() else None
    carried = train.carried_resumable_fields(recorded, payload["config"]["run"])
    return train.resumed_configs(agent_name, payload["config"], carried | settings | overrides, manager.loaded_path)


def _image_size_of(dataset: datasets.Dataset, overrides: dict[str, Any]) -> dict[str, int]:
    """{"image_size": N} for square (C, N, N) images from a pixel env unless --set gives one: the
    env is rendered at the data's size (`crl dataset collect` records maze-pixels at 64, training
    defaults to 84)."""
    if "image_size" in overrides or str(overrides["env"]).partition(":")[0] not in ("dmc", "maze-pixels"):
        return {}
    observations = dataset.episodes[0].observations
    images = np.asarray(observations["observation"] if isinstance(observations, dict) else observations)
    if images.ndim == 4 and images.shape[2] == images.shape[3]:
        return {"image_size": int(images.shape[3])}
    return {}


def _positions_outside_the_maze(dataset: datasets.Dataset, env: Any) -> list[str]:
    """Goal positions of a maze dataset must lie in the env's maze, whose map is centred on the
    origin (gymnasium-robotics); D4RL's maze2d files count cells from a corner, so their shapes
    fit while every position is in another frame."""
    maze = getattr(env.unwrapped, "maze", None)
    first = dataset.episodes[0].observations
    if maze is None or not isinstance(first, dict) or "achieved_goal" not in first:
        return []
    half = np.array([maze.x_map_center, maze.y_map_center])
    positions = np.concatenate([np.asarray(ep.observations[key], np.float64)[:, :2]
                                for ep in dataset.episodes for key in ("achieved_goal", "desired_goal")])
    low, high = positions.min(axis=0), positions.max(axis=0)
    if np.all(low >= -half) and np.all(high <= half):
        return []
    return [f"goal positions x {low[0]:.2f}..{high[0]:.2f}, y {low[1]:.2f}..{high[1]:.2f} outside the maze's "
            f"x, y in [-{half[0]:g}, {half[0]:g}] x [-{half[1]:g}, {half[1]:g}] (D4RL's maze2d positions "
            "count from the map's corner; gymnasium-robotics centres the map on the origin)"]


def _why_no_env(dataset: datasets.Dataset) -> str:
    named = dataset.metadata.get("env_id")
    if isinstance(named, str):
        from crl import envs

        try:
            envs.check_env_id(named)
        except ValueError as err:
            return f"the dataset's env_id is not a crl environment: {err}"
    return f"the dataset names no crl environment (gym id {dataset.metadata.get('gym_env_id')!r})"


def train_command(agent_name: str, spec: str, preset: str | None, overrides: dict[str, Any],
                  logdir: str | None) -> dict:
    from crl import envs, train

    resolved = resolve_spec(spec)
    dataset = datasets.load(spec)
    overrides = dict(overrides)
    overrides.setdefault("env", dataset.env_id)
    if overrides["env"] is None:
        raise ValueError(f"{spec}: {_why_no_env(dataset)}; pass --env ID to evaluate in")
    overrides.update(_image_size_of(dataset, overrides))
    run, agent_config = train.build_configs(agent_name, preset, overrides)
    run_dir = Path(logdir) if logdir else Path("runs") / f"offline_{agent_name}_{Path(str(spec)).stem}_s{run.seed}"
    train.check_not_a_file(run_dir)
    resolved = check_same_dataset(run_dir, resolved)
    run, agent_config = resumed_offline_configs(run_dir, agent_name, preset, overrides, (run, agent_config))
    env = envs.make(run.env, **train.env_options(run, training=False))  # checked, then evaluated in
    created = not run_dir.exists()
    try:
        check_dataset_fits_env(dataset, str(spec), run.env, env)
        replay = datasets.to_replay(dataset, seed=run.seed)
        batch_size = getattr(agent_config, "batch_size", 0)
        if batch_size > dataset.num_steps:
            print(f"warning: batch_size {batch_size} is more than the dataset's {dataset.num_steps} transitions: "
                  "each batch repeats transitions", file=sys.stderr)
        run_dir.mkdir(parents=True, exist_ok=True)
    except BaseException:
        env.close()
        raise
    with train.removed_if_left_empty(run_dir, created):  # a start that failed leaves nothing
        result = train.train_offline(agent_name, run, agent_config, replay, run_dir, eval_env=env,
                                     extra_config={"dataset": resolved, "command": train.invoking_command()})
    return {"run_dir": str(run_dir), "policy": policy_score(result, dataset), "dataset": datasets.dataset_score(dataset)}


def recorded_dataset(loaded: Any) -> str:
    """The dataset spec a loaded checkpoint (`crl.train.load_agent`) was trained on: its own
    config's, else its run directory's config.yaml."""
    spec = loaded.payload.get("config", {}).get("dataset")
    if spec is None and (loaded.run_dir / "config.yaml").is_file():
        spec = read_config(loaded.run_dir).get("dataset")
    if spec is None:
        raise ValueError(f"{loaded.run_dir}: no --dataset given and the run records none")
    return spec


def eval_command(path: str, spec: str | None, episodes: int, video: bool = False, device: str = "auto") -> dict:
    from crl import train

    loaded = train.load_agent(path, device)
    try:
        spec = resolve_spec(spec) if spec is not None else recorded_dataset(loaded)
        dataset = datasets.load(spec)
        check_dataset_fits_env(dataset, spec, loaded.run.env, loaded.env,
                               remedy=f"The run was trained in {loaded.run.env}: pass a dataset of that environment.")
    except BaseException:
        loaded.env.close()
        raise
    result = train.evaluate_loaded(loaded, episodes, video)  # the episodes `crl eval` scores
    report = {"checkpoint": str(path), "dataset": spec, "env": loaded.run.env, "episodes": episodes,
              "updates": result["updates"], "policy": policy_score(result, dataset),
              "dataset_score": datasets.dataset_score(dataset)} | {k: result[k] for k in ("video",) if k in result}
    atomic_write_bytes(loaded.run_dir / "offline_eval.json", (json.dumps(report, indent=2) + "\n").encode())
    return report
