"""Training throughput of the pixel agents: frames/s of the whole loop (render, act, store,
sample, update), with one env and with vectorised envs.

Each case builds the real training loop (crl.train.OnlineTrainer) for an agent and preset, fills
the replay with random seed steps, then times the loop for `--seconds` after a warm-up: env steps
with rendering, the agent's actions, replay writes and the updates at the preset's cadence. It
reports frames/s, updates/s and the share of the time spent in the updates.

    .venv/bin/python experiments/bench_training.py            # print the table
    .venv/bin/python experiments/bench_training.py --write    # and replace its BENCHMARKS.md section
    # the GPU check: DrQ-v2 at the released defaults (quadruped-walk, the released config's task: batch
    # 256, 3-step returns, action repeat 2; walker's own config has batch 512), fp32 and bf16
    .venv/bin/python experiments/bench_training.py --case drqv2,dmc100k,dmc:quadruped-walk,1 \
        --case drqv2,dmc100k,dmc:quadruped-walk,1,bfloat16 --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch

from benchlib import command_line, machine_line, write_section
from crl import train
from crl.config import parse_assignments
from crl.system import cpu_has_bf16_units, cpu_label, keep_freed_memory

TITLE = "Training throughput (pixel agents, rendering included)"

CASES = [
    # (agent, preset, env id, number of envs, precision: None = the preset's)
    ("drqv2", "cpu-smoke", "dmc:cartpole-balance", 1, None),
    ("drqv2", "cpu-smoke", "dmc:cartpole-balance", 2, None),
    ("drqv2", "dmc100k", "dmc:cheetah-run", 1, None),
    ("drqv2", "dmc100k", "dmc:cheetah-run", 2, None),
    ("drqv2", "dmc100k", "dmc:cheetah-run", 1, "bfloat16"),
    ("drq", "cpu-smoke", "dmc:cartpole-balance", 1, None),
    ("curl", "dmc100k", "dmc:cheetah-run", 1, None),
]


def parse_case(text: str) -> tuple[str, str, str, int, str | None]:
    parts = text.split(",")
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError(f"--case {text!r}: use AGENT,PRESET,ENV_ID,NUM_ENVS[,PRECISION]")
    return parts[0], parts[1], parts[2], int(parts[3]), parts[4] if len(parts) == 5 else None


@contextlib.contextmanager
def case_trainer(agent: str, preset: str, env_id: str, num_envs: int, precision: str | None,
                 extra: dict[str, str] | None = None):
    """The real training loop of a case (a 20k-frame replay, a temporary run directory)."""
    overrides = {"env": env_id, "seed": 0, "num_envs": num_envs, "replay_capacity": 20_000} | (extra or {})
    run, agent_config = train.build_configs(agent, preset, overrides | ({"precision": precision} if precision else {}))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = train.OnlineTrainer(agent, run, agent_config, tmp)
        try:
            yield trainer
        finally:
            trainer.close()


def seed_phase(trainer: train.OnlineTrainer):
    """Random seed steps until the replay holds a few batches (the preset's seed_frames may be
    more); from then on the agent acts and learns. Returns the current observation."""
    obs = trainer.begin()
    while trainer.counters["agent_steps"] < 2 * trainer.agent_config.batch_size:
        obs, _ = trainer.step(obs)
    trainer.run.seed_frames = trainer.counters["frames"]
    return obs


def measure(agent: str, preset: str, env_id: str, num_envs: int, precision: str | None,
            seconds: float, extra: dict[str, str] | None = None) -> dict[str, float]:
    with case_trainer(agent, preset, env_id, num_envs, precision, extra) as trainer:
        dtype = trainer.agent.encoder.compute_dtype
        return timed_loop(trainer, seconds) | {"batch": trainer.agent_config.batch_size,
                                               "precision": str(dtype).removeprefix("torch.")}


def timed_loop(trainer: train.OnlineTrainer, seconds: float) -> dict[str, float]:
    """The loop of `OnlineTrainer.train` without its logging, evaluation and checkpoints."""
    counters = trainer.counters
    obs = seed_phase(trainer)

    def loop(obs, duration: float):
        frames0, updates0, update_time = counters["frames"], counters["updates"], 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            obs, _ = trainer.step(obs)
            for _ in range(trainer.update_rounds_due()):
                t = time.perf_counter()
                trainer.update_round()
                update_time += time.perf_counter() - t
        elapsed = time.perf_counter() - start
        return obs, {"frames_per_s": (counters["frames"] - frames0) / elapsed,
                     "updates_per_s": (counters["updates"] - updates0) / elapsed,
                     "update_share": update_time / elapsed}

    obs, _ = loop(obs, min(10.0, seconds / 3))  # warm-up: allocator, first backward passes
    return loop(obs, seconds)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="timed seconds per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="config overrides for every case (e.g. replay_on_device=no)")
    parser.add_argument("--case", type=parse_case, action="append",
                        help="AGENT,PRESET,ENV_ID,NUM_ENVS[,PRECISION] instead of the default cases (repeatable)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the crl command does
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    header = f"{machine_line()} torch {torch.__version__}, {args.threads} threads{gpu}."
    rows = ["| agent | preset | env | envs | batch | precision | frames/s | updates/s | time in updates |",
            "|---|---|---|---:|---:|---|---:|---:|---:|"]
    cases = args.case or CASES
    if not args.case and train.resolve_device("auto").type == "cpu" and not cpu_has_bf16_units():
        # emulated bf16 (an AVX2-only CPU) runs at under 1 GFLOP/s: an update would take minutes
        cases = [case for case in cases if case[4] != "bfloat16"]
    for agent, preset, env_id, num_envs, precision in cases:
        m = measure(agent, preset, env_id, num_envs, precision, args.seconds, parse_assignments(args.set))
        rows.append(f"| {agent} | {preset} | `{env_id}` | {num_envs} | {m['batch']} | {m['precision']} | {m['frames_per_s']:.1f} | "
                    f"{m['updates_per_s']:.2f} | {100 * m['update_share']:.0f}% |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"Command: `{command_line()}`", "", header, "",
        "The whole training loop after the seed phase: env steps with standard-visuals rendering, "
        "actions, replay writes, sampling and updates at each preset's cadence (DrQ-v2: one update "
        "every 2 agent steps; DrQ, CURL: every agent step). Frames include the action repeat "
        "(the preset's: DrQ-v2 cpu-smoke 2, DrQ cpu-smoke 8, cheetah 4). With 2 envs the loop steps "
        "both (AsyncVectorEnv) and updates at "
        "the same cadence in agent steps. Where the updates take most of the loop's time, more envs add "
        "little. GPU check (the DrQ-v2 paper reports about 96 frames/s on a V100 at batch 256, action "
        "repeat 2): `.venv/bin/python experiments/bench_training.py --case drqv2,dmc100k,dmc:quadruped-walk,1 "
        "--case drqv2,dmc100k,dmc:quadruped-walk,1,bfloat16 --seconds 60`. Precision: the convs' (`precision`; "
        "cpu-smoke presets' `auto` picks bf16 where it measures faster than fp32, crl/encoders.py).", "", *rows,
    ])
    print(body)
    if args.write:
        # one section per CPU (bf16 units or not change every ratio); a GPU run gets its own
        where = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_label()
        settings = "".join(f", {item}" for item in args.set)  # a section of its own per override
        write_section(f"{TITLE} ({where}{', chosen cases' if args.case else ''}{settings})", body)


if __name__ == "__main__":
    main()
