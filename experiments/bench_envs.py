"""Environment throughput: simulator frames/s and agent steps/s with random actions.

    .venv/bin/python experiments/bench_envs.py            # print the table
    .venv/bin/python experiments/bench_envs.py --write    # and replace "## Environments" in BENCHMARKS.md

It also times DMC's standard 84x84 renders with the suite's own shadow map (2048) against the one the
wrapper picks by image size (crl/envs/dmc.py), and counts the pixels that differ ("## Rendering").

These numbers set the budget of every CPU preset: a pixel run cannot go faster than its env.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchlib import command_line, machine_line, write_section
from crl import envs
from crl.envs.dmc import DMCEnv, import_suite

RENDER_TASKS = [("cartpole", "balance"), ("cheetah", "run"), ("walker", "walk"), ("finger", "spin"),
                ("reacher", "easy"), ("ball_in_cup", "catch"), ("quadruped", "walk"), ("hopper", "stand")]

CASES = [
    # (label, env id, options, number of envs)
    ("DMC pixels, standard visuals", "dmc:cheetah-run", {}, 1),
    ("DMC pixels, standard visuals, suite's 2048 shadow map", "dmc:cheetah-run", {"shadow_size": 2048}, 1),
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


def shadow_map_row(domain: str, task: str, steps: int) -> str:
    """Two envs on the same seed and actions, the suite's shadow map and ours, stepped in turns
    (action repeat 1: one render per step); render+step time and the pixels that differ."""
    suite_size = import_suite().load(domain, task).physics.model.vis.quality.shadowsize
    pair = [DMCEnv(domain, task, seed=0, action_repeat=1, shadow_size=suite_size),
            DMCEnv(domain, task, seed=0, action_repeat=1)]
    sizes = [int(env.physics.model.vis.quality.shadowsize) for env in pair]
    for env in pair:
        env.reset(seed=0)
    rng = np.random.default_rng(0)
    seconds, changed, mean_diff = [0.0, 0.0], [], []
    for _ in range(steps):
        action = rng.uniform(-1, 1, pair[0].action_space.shape)
        frames = []
        for i, env in enumerate(pair):
            start = time.perf_counter()
            frames.append(env.step(action)[0].astype(int))
            seconds[i] += time.perf_counter() - start
        diff = np.abs(frames[1] - frames[0])
        changed.append((diff.max(axis=0) > 0).mean())
        mean_diff.append(diff.mean())
    suite_ms, ours_ms = (1000 * s / steps for s in seconds)
    return (f"| {domain}-{task} | {sizes[0]} | {suite_ms:.1f} | {sizes[1]} | {ours_ms:.1f} | {suite_ms / ours_ms:.2f}x | "
            f"{100 * np.mean(changed):.3f}% | {100 * max(changed):.3f}% | {np.mean(mean_diff):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
    parser.add_argument("--render-steps", type=int, default=60, help="steps per task in the rendering table")
    parser.add_argument("--write", action="store_true", help="replace the Environments and Rendering sections")
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

    rows = ["| task | suite's map | ms per step | our map | ms per step | speed-up | pixels changed (mean) | "
            "(worst frame) | mean abs difference (levels) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for domain, task in RENDER_TASKS:
        rows.append(shadow_map_row(domain, task, args.render_steps))
        print(rows[-1], flush=True)
    body = "\n".join([
        f"Command: `{command_line()}`", "", header,
        f"Standard visuals at 84x84, one render per step, {args.render_steps} random-action steps from seed 0, "
        "the two envs stepped in turns on the same actions. The suite's models ask for a 2048 x 2048 shadow "
        "map (read from each model below); the wrapper draws it at 8 texels per image pixel (at least 1024, at most the model's own) unless `shadow_size` is given. "
        "A pixel is changed when any of its channels differs.", "", *rows,
    ])
    print(body)
    if args.write:
        write_section("Rendering: shadow map size", body)


if __name__ == "__main__":
    main()
