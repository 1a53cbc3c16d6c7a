"""`crl dataset collect|info` and `crl offline train|eval`: datasets in, scores out.

A dataset spec is whatever `crl.datasets.load` takes: "d4rl:PATH", "minari:ID_OR_PATH", a .hdf5
file, a Minari dataset directory or a local Minari id. Offline training loads it into the shared
replay and runs `crl.train.train_offline`; the run directory records the spec, so `crl offline
eval RUN_DIR` scores the policy on the dataset's environment next to the dataset's own score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
                    max_episode_steps: int | None = None, minari_root: str | None = None) -> dict:
    from crl.collect import collect

    if (out is None) == (minari_id is None):
        raise ValueError("crl dataset collect needs exactly one of --out FILE.hdf5 or --minari-id ID")
    dataset = collect(env_id, policy, episodes, seed=seed, style=style, noise=noise,
                      max_episode_steps=max_episode_steps)
    if out is not None:
        datasets.write_d4rl(out, dataset)
        where = str(out)
    else:
        where = str(datasets.write_minari(dataset, minari_id, root=minari_root))
    return compact({"written": where} | datasets.summary(dataset))


def info_command(spec: str) -> dict:
    return compact(datasets.summary(datasets.load(spec)))


def dataset_score(dataset: datasets.Dataset) -> dict[str, float]:
    """The dataset's own score: success rate for goal data, else the D4RL normalised score."""
    try:
        return {"success": datasets.success_rate(dataset)}
    except ValueError:
        pass
    returns = datasets.episode_returns(dataset)
    score = {"episode_return": float(returns.mean())}
    try:
        score["normalized_score"] = datasets.normalized_score(returns.mean(), dataset=dataset)
    except ValueError:
        pass
    return score


def policy_score(result: dict[str, Any], dataset: datasets.Dataset) -> dict[str, float]:
    """An evaluation result in the dataset's terms (normalised score when references exist)."""
    score = {k: result[k] for k in ("success", "final_success", "episode_return") if k in result}
    if "success" not in score:
        try:
            score["normalized_score"] = datasets.normalized_score(result["episode_return"], dataset=dataset)
        except ValueError:
            pass
    return score


def train_command(agent_name: str, spec: str, preset: str | None, overrides: dict[str, Any],
                  logdir: str | None) -> dict:
    from crl import train

    dataset = datasets.load(spec)
    overrides = dict(overrides)
    overrides.setdefault("env", dataset.env_id)
    if overrides["env"] is None:
        raise ValueError(f"{spec}: the dataset names no crl environment (gym id "
                         f"{dataset.metadata.get('gym_env_id')!r}); pass --env ID to evaluate in")
    run, agent_config = train.build_configs(agent_name, preset, overrides)
    run_dir = Path(logdir) if logdir else Path("runs") / f"offline_{agent_name}_{Path(str(spec)).stem}_s{run.seed}"
    replay = datasets.to_replay(dataset, seed=run.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train.train_offline(agent_name, run, agent_config, replay, run_dir, extra_config={"dataset": str(spec)})
    return {"run_dir": str(run_dir), "policy": policy_score(result, dataset), "dataset": dataset_score(dataset)}


def eval_command(path: str, spec: str | None, episodes: int, video: bool = False) -> dict:
    from crl import train

    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent.parent
    if spec is None:
        spec = read_config(run_dir).get("dataset") if (run_dir / "config.yaml").is_file() else None
        if spec is None:
            raise ValueError(f"{path}: no --dataset given and the run's config.yaml names none")
    dataset = datasets.load(spec)
    result = train.evaluate_checkpoint(path, episodes=episodes, video=video)
    report = {"checkpoint": str(path), "dataset": str(spec), "env": result["env"], "episodes": episodes,
              "updates": result["updates"], "policy": policy_score(result, dataset),
              "dataset_score": dataset_score(dataset)}
    atomic_write_bytes(run_dir / "offline_eval.json", (json.dumps(report, indent=2) + "\n").encode())
    return report
