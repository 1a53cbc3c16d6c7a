"""`make demo`: DrQ learns cartpole balance from pixels on the CPU in under 10 minutes.

Trains DrQ (preset `cpu-smoke`: small batch and MLPs, the convs in bfloat16 where the CPU has
bf16 units) on 84x84 renders of `dmc:cartpole-balance`, scores a uniformly random policy on the
same evaluation seeds for comparison, and writes a learning-curve PNG and an evaluation video into
the run directory. `crl demo --states` is the faster state-based one: SAC on cartpole swing-up.
Everything is local: no download, no server.
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
    # BENCHMARKS.md, "Pixel agents on CPU": DrQ cpu-smoke scored 318-565 on balance at 32k
    # frames (seeds 0 and 1, and the demo runs), where a random policy scores about 270; the
    # preset's full 64k frames pass 700 (about 20 min with bf16 convs). The
    # 10-minute budget holds where the convs run in bf16 on AMX (8.5 min) or a GPU; with
    # AVX512-BF16 (AMD EPYC) it took 11.5 min (565); where they run in fp32 it took 13 min (320; an
    # Intel Xeon without AMX, with the smaller shadow map) to 24 min (370, AVX2 only): FP32_CPU_NOTE.
    "pixels": Demo("drq", "dmc:cartpole-balance", "DrQ from pixels (cpu-smoke)", {"frames": 32_000}),
    "states": Demo("sac", "dmc-state:cartpole-swingup", "SAC from states (cpu-smoke)"),
}


# Measured with `crl demo` on 2-core CPUs: see BENCHMARKS.md.
FP32_CPU_NOTE = ("note: bf16 convs are not faster than fp32 on this CPU (no bf16 units, or measured "
                 "slower), so the convs run in fp32 and the pixel demo takes 13-24 minutes on 2-core "
                 "CPUs (8.5 with AMX). `crl demo --states` is the 4-minute state-based demo.")


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
