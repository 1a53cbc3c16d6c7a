"""Update throughput of the goal-conditioned agents at the papers' batch sizes.

Times one update (critic + actor, targets) of contrastive RL, TD-InfoNCE and GCBC on goal batches
sampled from a replay of PointMaze episodes (sampling included), with the papers' network sizes:
online batch 256; offline 1024 (TD-InfoNCE, AntMaze) and 2048 (contrastive RL, Zheng et al.).
The CPU presets' small networks are timed too, as what the evidence runs used.

    .venv/bin/python experiments/bench_goal_agents.py --write
"""

from __future__ import annotations

import argparse

import torch

from benchlib import command_line, machine_line, median_seconds, write_section
from crl import envs
from crl.agents import gcbc, gcrl, td_infonce
from crl.collect import collect
from crl.datasets import to_replay

ENV = "maze:PointMaze_UMaze-v3"
SETTINGS = [  # (agent label, module, config overrides, batch size, what)
    ("gcrl", gcrl, {}, 256, "online, 4x1024 LayerNorm (Zheng et al.)"),
    ("gcrl", gcrl, {"actor_goals": "future", "bc_coef": 0.05}, 2048, "offline, 4x1024 (Zheng et al.)"),
    ("gcrl", gcrl, {"hidden_dims": (256, 256)}, 256, "cpu-smoke, 2x256"),
    ("td-infonce", td_infonce, {}, 256, "online, 4x512 (released code)"),
    ("td-infonce", td_infonce, {"hidden_dims": (1024,) * 4, "actor_goals": "future", "bc_coef": 0.2}, 1024,
     "offline AntMaze, 4x1024"),
    ("td-infonce", td_infonce, {"hidden_dims": (256, 256)}, 256, "cpu-smoke, 2x256"),
    ("gcbc", gcbc, {"hidden_dims": (1024,) * 4}, 1024, "offline, 4x1024"),
]


def pointmaze_replay(episodes: int = 20, seed: int = 0):
    """A replay of random-policy PointMaze episodes, and the env (for the agents' spaces)."""
    data = collect(ENV, "random", episodes, seed=seed, progress=False)
    return to_replay(data, seed=seed), envs.make(ENV)


def updates_per_second(module, overrides: dict, batch_size: int, replay, env, reps: int) -> float:
    torch.manual_seed(0)
    agent = module.Agent(env.observation_space, env.action_space, module.Config(batch_size=batch_size, **overrides))
    step = iter(range(1, 10**9))

    def one_update():
        batch = replay.sample(batch_size, kind=agent.batch_kind, **agent.sampler_options())
        agent.update(batch, next(step))

    return 1.0 / median_seconds(one_update, reps=reps, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the training loops do: near-zero critic layers make denormals
    machine = machine_line()
    replay, env = pointmaze_replay()
    rows = []
    for label, module, overrides, batch_size, what in SETTINGS:
        rate = updates_per_second(module, overrides, batch_size, replay, env, args.reps)
        rows.append(f"| {label} | {what} | {batch_size} | {rate:.1f} | {1000 / rate:.0f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"Command: `{command_line()}`", "", machine, f"torch threads: {args.threads}; median of {args.reps} "
        f"updates after 2 warm-up ones, each with its batch sampled from a replay of {ENV} episodes.", "",
        "| agent | networks | batch | updates/s | ms/update |", "|---|---|---:|---:|---:|", *rows, "",
        "No reference implementation runs here (the papers' code is JAX/acme), so these are absolute numbers; "
        "the papers ran on GPUs/TPUs."])
    print(body)
    if args.write:
        write_section("Goal-conditioned agents: update throughput", body)


if __name__ == "__main__":
    main()
