"""`make demo`: DrQ-v2 learns cartpole balance from pixels on the CPU in about 9 minutes (AMX).

Trains DrQ-v2 (preset `cpu-smoke`: batch 128, action repeat 2, the convs in bfloat16 where that is
faster on the CPU) for 12k frames on 84x84 renders of `dmc:cartpole-balance`, scores a uniformly
random policy on the same evaluation seeds for comparison, and writes a learning-curve PNG and an
evaluation video into the run directory. `crl demo --states` is the faster state-based one: SAC
on cartpole swing-up. Everything is local: no download, no server.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crl.encoders import resolve_precision


@dataclass(frozen=True)
class Demo:
    agent: str
    env_id: str
    label: str
    overrides: dict = field(default_factory=dict)


DEMOS = {
    # BENCHMARKS.md: the current DrQ-v2 cpu-smoke preset scored 491-543 at 12k frames in the nine
    # runs recorded (seeds 0 and 1, several CPUs), where a random policy scores 270 +- 34; 12k
    # frames took 8.6 min with AMX, 13-17 min with AVX512-BF16 (AMD EPYC), longer where the convs
    # run in fp32 (FP32_CPU_NOTE). The preset's full 32k frames pass 700 (20-21 min with AMX).
    # DrQ's cpu-smoke, the demo before, stays near random on some seeds until 48k-64k frames.
    "pixels": Demo("drqv2", "dmc:cartpole-balance", "DrQ-v2 from pixels (cpu-smoke)", {"frames": 12_000}),
    "states": Demo("sac", "dmc-state:cartpole-swingup", "SAC from states (cpu-smoke)"),
}


# Measured with `crl demo` on 2-core CPUs: see BENCHMARKS.md.
FP32_CPU_NOTE = ("note: bf16 convs are not faster than fp32 on this CPU (no bf16 units, or measured "
                 "slower), so the convs run in fp32 and the pixel demo takes about 20 minutes or more on "
                 "2-core CPUs (9 with AMX). `crl demo --states` is the 4-minute state-based demo.")


def convs_in_fp32_on_cpu(agent_config, device: torch.device) -> bool:
    return device.type == "cpu" and resolve_precision(agent_config.precision, device) == torch.float32


class RandomPolicy:
    def __init__(self, action_space, seed: int):
        self.space = action_space
        self.space.seed(seed)

    def act(self, obs, explore: bool) -> np.ndarray:
        return self.space.sample()[None]


DEMO_MARKER = "DEMO"  # in a run directory the demo made (and may replace)


def _made_by_crl_demo(logdir: Path) -> bool:
    """A demo run from before the marker: its config.yaml records the `crl demo` command."""
    from crl.logger import read_config

    try:
        return str(read_config(logdir).get("command") or "").startswith("crl demo")
    except (OSError, ValueError):
        return False


def run_demo(logdir: str | Path = "runs/demo", seed: int = 0, which: str = "pixels", **overrides) -> dict:
    """The demo run; `overrides` (run or agent config fields) shorten it for tests."""
    from crl import envs, train
    from crl.logger import plot_curves

    demo = DEMOS[which]
    logdir = Path(logdir)
    if (logdir / "config.yaml").exists():
        if not (logdir / DEMO_MARKER).exists() and not _made_by_crl_demo(logdir):
            raise FileExistsError(f"{logdir} holds a run that `crl demo` did not make; the demo replaces only its "
                                  "own earlier run: choose another --logdir")
        shutil.rmtree(logdir)  # the demo's own previous run
    elif logdir.is_dir() and any(logdir.iterdir()) and not (logdir / DEMO_MARKER).exists():
        raise FileExistsError(f"{logdir} is a folder with other files in it; the demo writes into a new or empty "
                              "one (a later demo run replaces it): choose another --logdir")
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / DEMO_MARKER).write_text(f"made by `crl demo` ({which}); the next demo run replaces this directory\n")
    start = time.time()
    run, agent_config = train.build_configs(demo.agent, "cpu-smoke",
                                            {"env": demo.env_id, "seed": seed, **demo.overrides, **overrides})
    if which == "pixels" and convs_in_fp32_on_cpu(agent_config, train.resolve_device(run.device)):
        print(FP32_CPU_NOTE)

    env = envs.make(demo.env_id)
    random_result = train.evaluate(RandomPolicy(env.action_space, seed), env, run.eval_episodes,
                                   seed=run.seed + 10_000)
    env.close()
    print(f"{demo.env_id}: random policy scores {random_result['episode_return']:.1f} "
          f"(mean of {run.eval_episodes} episodes)")

    print(f"training {demo.label} for {run.frames:,} frames into {logdir} ...")
    result = train.train(demo.agent, run, agent_config, logdir)
    final = train.evaluate_checkpoint(logdir, episodes=1, video=True)
    plot = logdir / "learning_curve.png"
    plot_curves([logdir], plot, labels=[demo.label], reference={"random policy": random_result["episode_return"]},
                title=f"{demo.label} on {demo.env_id}")
    videos = sorted((logdir / "videos").glob("*.mp4"))
    minutes = (time.time() - start) / 60
    print(f"{demo.agent} evaluation return {result['episode_return']:.1f} vs random "
          f"{random_result['episode_return']:.1f} after {run.frames:,} frames ({minutes:.1f} min)")
    print(f"learning curve: {plot}; video: {videos[-1] if videos else 'none'}; "
          f"TensorBoard: tensorboard --logdir {logdir / 'tb'}")
    return {"agent": result, "random": random_result, "final_episode": final, "minutes": minutes}
