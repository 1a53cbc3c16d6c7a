"""Replay benchmark: memory per stored transition and sampling time against one pixel-SAC update.

1. Bytes per stored transition of crl.replay for 3x84x84 uint8 frames with frame stack 3, against
   one frame + scalars, DrQ-v2's layout (the stacked obs stored every step: ~3x) and CURL's
   (stacked obs and stacked next obs every step: ~6x).
2. Time to sample a batch of 256 stacked obs + next obs (9x84x84) from a replay of ~20k frames,
   against one full update of crl.agents.sac from pixels at batch 256 (critic with the conv
   encoder, actor, temperature, Polyak targets).

    .venv/bin/python experiments/bench_replay.py            # print the tables
    .venv/bin/python experiments/bench_replay.py --write    # and update BENCHMARKS.md (## Replay)

Exit status 1 if a target is missed (DrQ-v2 ratio >= 2.9x, CURL ratio >= 5.8x, sampling < 10% of
one pixel-SAC update, crl.replay <= 1.05 x one frame + scalars).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from benchlib import command_line, machine_line, median_seconds, write_section
from crl.replay import EpisodeReplay

ROOT = Path(__file__).resolve().parents[1]
FRAME = (3, 84, 84)
STACK = 3
ACTION_DIM = 6
BATCH = 256


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def random_episode(steps: int, rng: np.random.Generator) -> dict:
    return {
        "observations": rng.integers(0, 256, (steps + 1, *FRAME), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32),
        "rewards": rng.random(steps, dtype=np.float32),
        "truncated": np.arange(steps) == steps - 1,
    }


def fill(replay: EpisodeReplay, episodes: int, steps: int, rng: np.random.Generator) -> None:
    """Bulk-load random pixel episodes (single frames)."""
    for _ in range(episodes):
        replay.add_episode(**random_episode(steps, rng))


def memory_rows(steps: int, rng: np.random.Generator) -> dict:
    """Bytes per transition of a replay filled to capacity with ``steps``-step episodes."""
    episodes = 10
    episode = random_episode(steps, rng)  # made before measuring: RSS growth is the replay's own
    before = rss_bytes()
    replay = EpisodeReplay(capacity=episodes * (steps + 1), frame_stack=STACK)
    for _ in range(episodes):
        replay.add_episode(**episode)
    assert replay.num_frames == replay.capacity
    rss = (rss_bytes() - before) / len(replay)
    ours = replay.nbytes / len(replay)
    frame = int(np.prod(FRAME))
    scalars = 4 * ACTION_DIM + 4 + 1 + 1  # action, reward, terminated, truncated
    return {
        "steps": steps, "ours": ours, "rss": rss, "one_frame": frame + scalars,
        "drqv2": STACK * frame + scalars, "curl": 2 * STACK * frame + scalars,
    }


def dmc100k_run_memory(rng: np.random.Generator) -> dict:
    """Peak RSS growth of the replay of a 100k-frame DMC run at action repeat 2 (DrQ-v2's walker:
    50,000 agent steps in 100 episodes of 500), against one frame + scalars per transition plus
    one extra frame per episode (the formula of the shared-core issue)."""
    import resource

    steps, episodes = 500, 100
    episode = random_episode(steps, rng)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_before = rss_bytes()
    replay = EpisodeReplay(capacity=60_000, frame_stack=STACK)  # drqv2's dmc100k preset
    for _ in range(episodes):
        replay.add_episode(**episode)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    growth = max(peak - max(peak_before, rss_before), rss_bytes() - rss_before)
    frame = int(np.prod(FRAME))
    formula = len(replay) * (frame + 4 * ACTION_DIM + 4 + 1 + 1) + episodes * frame
    return {"transitions": len(replay), "growth": growth, "formula": formula}


def time_sac_update(batch: dict, reps: int) -> float:
    """One full pixel-SAC update (critic, actor, temperature, targets) of crl.agents.sac."""
    import gymnasium as gym

    from crl.agents.sac import Agent, Config

    torch.manual_seed(0)
    agent = Agent(gym.spaces.Box(0, 255, (STACK * 3, 84, 84), np.uint8),
                  gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32), Config(batch_size=BATCH))
    return median_seconds(lambda: agent.update(batch, step=2), reps, warmup=2)


def run(args) -> tuple[str, bool]:
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)

    mem = [memory_rows(steps, rng) for steps in (500, 125)]
    run_memory = dmc100k_run_memory(rng)

    steps = 500
    replay = EpisodeReplay(capacity=40 * (steps + 1), frame_stack=STACK, seed=0)
    fill(replay, 40, steps, rng)
    sample_1 = median_seconds(lambda: replay.sample_transitions(BATCH, n_step=1), args.reps)
    sample_3 = median_seconds(lambda: replay.sample_transitions(BATCH, n_step=3, gamma=0.99), args.reps)
    batch = replay.sample_transitions(BATCH)
    fastest = time_sac_update(batch, args.critic_reps)
    sample = max(sample_1, sample_3)

    m = mem[0]
    checks = {
        "crl.replay <= 1.05 x one frame + scalars": m["ours"] <= 1.05 * m["one_frame"],
        "DrQ-v2 layout / crl.replay >= 2.9x": m["drqv2"] / m["ours"] >= 2.9,
        "CURL layout / crl.replay >= 5.8x": m["curl"] / m["ours"] >= 5.8,
        "sampling < 10% of one pixel-SAC update": sample / fastest < 0.10,
        "100k-frame run: RSS growth <= 1.05 x formula": run_memory["growth"] <= 1.05 * run_memory["formula"],
    }

    lines = [
        "Memory per stored transition: 3x84x84 uint8 frames, frame stack 3, 6-d float32 actions, "
        "replay filled to capacity with 10 episodes (T = 500: DMC at action repeat 2; T = 125: "
        "cartpole at action repeat 8). Other layouts computed from their per-step arrays.",
        "",
        "| layout | bytes / transition (T=500) | vs crl.replay | bytes / transition (T=125) | vs crl.replay |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [("crl.replay (each frame once; allocated)", "ours"),
            ("crl.replay, measured RSS growth", "rss"),
            ("one frame + scalars", "one_frame"),
            ("DrQ-v2 (stacked obs per step)", "drqv2"),
            ("CURL (stacked obs + next obs per step)", "curl")]
    for label, key in rows:
        cells = [f"{r[key]:,.0f} | {r[key] / r['ours']:.2f}x" for r in mem]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        f"A 100k-frame DMC run at action repeat 2 ({run_memory['transitions']:,} transitions in 100 "
        f"episodes): replay RSS growth {run_memory['growth'] / 2**30:.3f} GiB against the formula "
        f"(transitions x (one frame + scalars) + one frame per episode) "
        f"{run_memory['formula'] / 2**30:.3f} GiB: {run_memory['growth'] / run_memory['formula']:.3f}x.",
        "",
        f"Sampling from a replay of {replay.num_frames:,} frames ({replay.num_episodes} episodes of "
        f"{steps} steps) against one pixel-SAC update (crl.agents.sac: critic, actor, temperature and target updates; encoder channels_last), batch {BATCH}, medians of {args.reps} samples / "
        f"{args.critic_reps} updates (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "flush denormals on).",
        "",
        "| operation | time (ms) | vs one pixel-SAC update |",
        "|---|---:|---:|",
        f"| sample 256 obs + next obs (9x84x84 uint8), n = 1 | {sample_1 * 1e3:.2f} | {sample_1 / fastest:.2%} |",
        f"| sample 256 obs + next obs, n = 3 (n-step returns) | {sample_3 * 1e3:.2f} | {sample_3 / fastest:.2%} |",
    ]
    lines.append(f"| pixel-SAC update | {fastest * 1e3:.0f} | 1.00x |")
    lines += ["", "| target | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()]
    return "\n".join(lines), all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the ## Replay section of BENCHMARKS.md")
    parser.add_argument("--reps", type=int, default=30, help="timed samples per measurement")
    parser.add_argument("--critic-reps", type=int, default=5, help="timed pixel-SAC updates")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    header = f"Command: `{command_line()}`  \n{machine_line()} numpy {np.__version__}."
    table, ok = run(args)
    body = header + "\n\n" + table
    print(body)
    if args.write:
        write_section("Replay", body, args.output)
        print(f"\nwrote the ## Replay section of {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
