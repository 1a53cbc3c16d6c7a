"""`make demo`: SAC learns cartpole swing-up from states on the CPU in a few minutes.

Trains with the `cpu-smoke` preset, scores a uniformly random policy on the same evaluation
seeds for comparison, and writes a learning-curve PNG and an evaluation video into the run
directory. Everything is local: no download, no server.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

ENV_ID = "dmc-state:cartpole-swingup"


class RandomPolicy:
    def __init__(self, action_space, seed: int):
        self.space = action_space
        self.space.seed(seed)

    def act(self, obs, explore: bool) -> np.ndarray:
        return self.space.sample()[None]


def run_demo(logdir: str | Path = "runs/demo", seed: int = 0, **overrides) -> dict:
    """The demo run; `overrides` (run or agent config fields) shorten it for tests."""
    from crl import envs, train
    from crl.logger import plot_curves

    logdir = Path(logdir)
    if (logdir / "config.yaml").exists():
        shutil.rmtree(logdir)  # the demo's own previous run
    start = time.time()
    run, agent_config = train.build_configs("sac", "cpu-smoke", {"env": ENV_ID, "seed": seed, **overrides})

    env = envs.make(ENV_ID)
    random_result = train.evaluate(RandomPolicy(env.action_space, seed), env, run.eval_episodes,
                                   seed=run.seed + 10_000)
    print(f"{ENV_ID}: random policy scores {random_result['episode_return']:.1f} "
          f"(mean of {run.eval_episodes} episodes)")

    print(f"training SAC (preset cpu-smoke) for {run.frames:,} frames into {logdir} ...")
    result = train.train("sac", run, agent_config, logdir)
    final = train.evaluate_checkpoint(logdir, episodes=1, video=True)
    plot = logdir / "learning_curve.png"
    plot_curves([logdir], plot, labels=["SAC (cpu-smoke)"],
                reference={"random policy": random_result["episode_return"]},
                title=f"SAC on {ENV_ID}")
    videos = sorted((logdir / "videos").glob("*.mp4"))
    minutes = (time.time() - start) / 60
    print(f"SAC evaluation return {result['episode_return']:.1f} vs random {random_result['episode_return']:.1f} "
          f"after {run.frames:,} frames ({minutes:.1f} min)")
    print(f"learning curve: {plot}; video: {videos[-1] if videos else 'none'}; "
          f"TensorBoard: tensorboard --logdir {logdir / 'tb'}")
    return {"sac": result, "random": random_result, "final_episode": final, "minutes": minutes}
