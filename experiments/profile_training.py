"""Where a pixel agent's training loop spends its time: the replay's sample (gather, conversion,
copy to the device), the agent's update on that batch, and an agent step (act, env step with
rendering, replay write), each timed alone with the device synchronised, then the top operators
of a few updates under torch.profiler.

    .venv/bin/python experiments/profile_training.py --case drqv2,dmc100k,dmc:quadruped-walk,1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_training import case_trainer, parse_case, seed_phase
from benchlib import machine_line
from crl import train
from crl.config import parse_assignments
from crl.system import keep_freed_memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, reps: int) -> float:
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def profile_case(agent: str, preset: str, env_id: str, num_envs: int, precision: str | None,
                 reps: int, top: int, extra: dict[str, str]) -> None:
    with case_trainer(agent, preset, env_id, num_envs, precision, extra) as trainer:
        report(trainer, f"{agent} {preset} {env_id} x{num_envs} {precision or ''}", reps, top)


def report(trainer: train.OnlineTrainer, label: str, reps: int, top: int) -> None:
    device, counters = trainer.device, trainer.counters
    obs = seed_phase(trainer)

    def sample(to=device):
        return trainer.replay.sample(trainer.agent_config.batch_size, kind=trainer.agent.batch_kind,
                                     device=to, **trainer.agent.sampler_options())

    batch = sample()

    def update():
        counters["updates"] += 1
        trainer.agent.update(batch, counters["updates"])

    state = {"obs": obs}

    def agent_step():
        state["obs"], _ = trainer.step(state["obs"])

    for fn in (sample, update, agent_step):  # warm-up: allocator, cuDNN's algorithm search
        median_ms(fn, device, 5)
    times = {name: median_ms(fn, device, reps) for name, fn in
             (("sample", sample), ("sample kept on the host", lambda: sample(None)), ("update", update),
              ("agent step", agent_step))}
    print(f"\n## {label}: batch {trainer.agent_config.batch_size}, device {device}, "
          f"convs in {str(trainer.agent.encoder.compute_dtype).removeprefix('torch.')}, "
          f"replay frames on {trainer.replay.frames_on_device or 'the host'}")
    print("median ms: " + ", ".join(f"{name} {ms:.2f}" for name, ms in times.items()))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(10):
            batch = sample()
            update()
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=top))
    if device.type == "cuda":
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=parse_case, action="append", required=True,
                        help="AGENT,PRESET,ENV_ID,NUM_ENVS[,PRECISION] (repeatable)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions of each part")
    parser.add_argument("--top", type=int, default=15, help="operators listed per profile table")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="config overrides for every case (e.g. replay_on_device=no)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"{machine_line()} torch {torch.__version__}, {args.threads} threads{gpu}.")
    for case in args.case:
        profile_case(*case, reps=args.reps, top=args.top, extra=parse_assignments(args.set))


if __name__ == "__main__":
    main()
