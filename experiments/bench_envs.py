"""Environment throughput: simulator frames/s and agent steps/s with random actions.

    .venv/bin/python experiments/bench_envs.py            # print the table
    .venv/bin/python experiments/bench_envs.py --write    # and replace "## Environments" in BENCHMARKS.md

These numbers set the budget of every CPU preset: a pixel run cannot go faster than its env.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchlib import command_line, machine_line, write_section
from crl import envs

CASES = [
    # (label, env id, options, number of envs)
    ("DMC pixels, standard visuals", "dmc:cheetah-run", {}, 1),
    ("DMC pixels, fast visuals", "dmc:cheetah-run", {"visuals": "fast"}, 1),
    ("DMC pixels, standard visuals, 2 async envs", "dmc:cheetah-run", {}, 2),
    ("DMC pixels, fast visuals, 2 async envs", "dmc:cheetah-run", {"visuals": "fast"}, 2),
    ("DMC states", "dmc-state:cheetah-run", {}, 1),
    ("Atari-100k", "atari:Pong", {}, 1),
    ("Atari-100k, 2 async envs", "atari:Pong", {}, 2),
    ("PointMaze (states)", "maze:PointMaze_UMaze-v3", {}, 1),
]


def measure(env_id: str, options: dict, num_envs: int, seconds: float) -> tuple[float, float]:
    """Returns (frames/s, agent steps/s) summed over all envs, after a warm-up."""
    if num_envs == 1:
        env = envs.make_vector(env_id, 1, asynchronous=False, **options)
    else:
        env = envs.make_vector(env_id, num_envs, **options)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    frames = steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        *_, info = env.step(env.action_space.sample())
        frames += int(np.sum(info["step_frames"]))
        steps += num_envs
    elapsed = time.perf_counter() - start
    env.close()
    return frames / elapsed, steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
    parser.add_argument("--write", action="store_true", help="replace the Environments section")
    args = parser.parse_args()

    header = machine_line()
    rows = ["| environment | id | envs | frames/s | agent steps/s |", "|---|---|---:|---:|---:|"]
    for label, env_id, options, num_envs in CASES:
        fps, sps = measure(env_id, options, num_envs, args.seconds)
        rows.append(f"| {label} | `{env_id}` | {num_envs} | {fps:,.0f} | {sps:,.1f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"Command: `{command_line()}`", "", header,
        "Random actions; frames count simulator steps with action repeat (DMC cheetah: 4, Atari: 4);"
        " one render per agent step. Fast visuals (no shadows, reflections, skybox) are for smoke runs"
        " and tests only, never for reported numbers.", "", *rows,
    ])
    print(body)
    if args.write:
        write_section("Environments", body)


if __name__ == "__main__":
    main()
