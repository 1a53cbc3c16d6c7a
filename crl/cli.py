"""The `crl` command: train, eval, list, demo, bench, dataset, offline."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) during a command; its message says what was kept."""


@contextlib.contextmanager
def resumable_on_interrupt(agent: str, run_dir: Path):
    """Turn Ctrl-C during training into a message naming the checkpoint a resume starts from."""
    from crl.checkpoint import CheckpointManager

    try:
        yield
    except KeyboardInterrupt:
        latest = CheckpointManager(Path(run_dir) / "checkpoints").latest()
        kept = (f"`crl train {agent} --resume {run_dir}` continues from {latest}" if latest
                else "no checkpoint was written yet")
        raise Interrupted(f"{run_dir}: training interrupted; {kept}") from None


def cmd_list(args: argparse.Namespace) -> int:
    from crl import envs, registry

    if args.what == "envs":
        for suite in envs.SUITES:
            ids = envs.env_ids(suite)
            print(f"# {suite} ({len(ids)})")
            print("\n".join(ids))
    elif args.what == "agents":
        print("\n".join(registry.available()))
    else:
        for name in registry.available():
            for preset, values in registry.presets(name).items():
                settings = " ".join(f"{k}={v}" for k, v in values.items())
                print(f"{name} {preset}: {settings}")
    return 0


def default_logdir(agent: str, env_id: str, seed: int) -> Path:
    return Path("runs") / f"{agent}_{env_id.replace(':', '_')}_s{seed}"


def config_overrides(args: argparse.Namespace, options: tuple[str, ...]) -> dict:
    """`--set field=value` assignments plus the named command-line options that were given."""
    from crl.config import parse_assignments

    overrides = parse_assignments(args.set or [])
    for name in options:
        value = getattr(args, name)
        if value is None:
            continue
        if name in overrides and not same_value(overrides[name], value):
            raise ValueError(f"--{name} {value} and --set {name}={overrides[name]} disagree: give one")
        overrides[name] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from crl import envs, train

    overrides = config_overrides(args, ("frames", "seed", "device", "env"))
    if args.resume:
        return cmd_resume(args, overrides)
    if args.env is None:
        raise ValueError("crl train needs --env ID (or --resume RUN_DIR); `crl list envs` prints the ids")
    envs.check_env_id(args.env)
    run, agent_config = train.build_configs(args.agent, args.preset, overrides)
    if notice := train.task_settings_notice(args.agent, args.preset, overrides, run):
        print(notice, file=sys.stderr)
    logdir = Path(args.logdir) if args.logdir else default_logdir(args.agent, run.env, run.seed)
    with resumable_on_interrupt(args.agent, logdir):
        result = train.train(args.agent, run, agent_config, logdir)
    print(f"final evaluation ({run.eval_episodes} episodes): {json.dumps(result)}; run directory: {logdir}")
    return 0


def cmd_resume(args: argparse.Namespace, overrides: dict) -> int:
    from crl import train
    from crl.checkpoint import CheckpointError

    if args.preset:
        raise CheckpointError(f"cannot change the preset when resuming {args.resume}; "
                              f"only {', '.join(sorted(train.RESUMABLE_FIELDS))} may change")
    if args.logdir and Path(args.logdir).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--logdir {args.logdir} with --resume {args.resume}: a resumed run continues in its own "
                         "directory (copy it first to continue a copy)")
    with resumable_on_interrupt(args.agent, args.resume):
        result = train.resume(args.resume, agent=args.agent, overrides=overrides)
    print(f"final evaluation: {json.dumps(result)}; run directory: {args.resume}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from crl import train

    result = train.evaluate_checkpoint(args.path, episodes=args.episodes, video=args.video, device=args.device)
    print(json.dumps(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from crl import bench

    return bench.command(args.spec, agents=args.agents, seeds=args.seeds, tasks=args.tasks, frames=args.frames,
                         out=args.out, preset=args.preset, report_only=args.report_only, reps=args.reps)


def cmd_dataset(args: argparse.Namespace) -> int:
    from crl import offline

    if args.action == "info":
        print(json.dumps(offline.info_command(args.spec), indent=2, default=str))
        return 0
    result = offline.collect_command(args.env, args.policy, args.episodes, out=args.out, minari_id=args.minari_id,
                                     seed=args.seed, style=args.style, noise=args.noise,
                                     max_episode_steps=args.max_episode_steps, minari_root=args.minari_root,
                                     device=args.device, overwrite=args.overwrite)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_offline(args: argparse.Namespace) -> int:
    from crl import offline

    if args.action == "eval":
        print(json.dumps(offline.eval_command(args.path, args.dataset, args.episodes, video=args.video,
                                              device=args.device), indent=2))
        return 0
    overrides = config_overrides(args, ("updates", "seed", "device", "env"))
    result = offline.train_command(args.agent, args.dataset, args.preset, overrides, args.logdir)
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from crl.demo import run_demo

    run_demo(args.logdir, seed=args.seed, which="states" if args.states else "pixels")
    return 0


DEVICE_HELP = "auto (a GPU if torch sees one), cpu, cuda, cuda:N"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crl", description="Contrastive reinforcement-learning agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an agent online (or continue a run with --resume)")
    p.add_argument("agent", help="agent name; `crl list agents`")
    p.add_argument("--env", help="environment id; `crl list envs`")
    p.add_argument("--preset", help="named preset; `crl list presets`")
    p.add_argument("--frames", type=int, help="budget in frames (action repeat counted)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--logdir", help="run directory (default runs/AGENT_ENV_sSEED, ':' in ENV as '_')")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    p.add_argument("--set", nargs="*", action="extend", metavar="FIELD=VALUE",
                   help="override any config field (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run directory's latest checkpoint, or a checkpoint file")
    p.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--episodes", type=positive_int, default=10)
    p.add_argument("--video", action="store_true", help="save an mp4 of the first episode")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("list", help="list agents, environments or presets")
    p.add_argument("what", choices=["agents", "envs", "presets"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("bench", help="run a benchmark spec over agents, tasks and seeds, then report")
    p.add_argument("spec", help="spec name in experiments/specs (dmc100k, dmc500k, atari100k) or a YAML path")
    p.add_argument("--agents", help="comma-separated agent names; `crl list agents`")
    p.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default: the spec's)")
    p.add_argument("--tasks", help="comma-separated environment ids, a subset of the spec's tasks (default: all of them)")
    p.add_argument("--frames", type=int, help="budget in frames (default: the spec's)")
    p.add_argument("--out", help="output directory (default runs/bench/SPEC)")
    p.add_argument("--preset", help="preset for every agent (default: the spec's, else its name)")
    p.add_argument("--report-only", action="store_true", help="write the report from the runs already there")
    p.add_argument("--reps", type=int, default=50_000, help="bootstrap replications for the 95%% intervals")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("dataset", help="collect an offline dataset, or describe one")
    dsub = p.add_subparsers(dest="action", required=True)
    q = dsub.add_parser("collect", help="run a policy and write its episodes (D4RL HDF5 or Minari)")
    q.add_argument("--env", help="environment id (default for a checkpoint: its own)")
    q.add_argument("--policy", required=True, help="random, planner (mazes), or a checkpoint / run directory")
    q.add_argument("--episodes", type=positive_int, required=True)
    q.add_argument("--out", help="D4RL-layout HDF5 file to write")
    q.add_argument("--minari-id", help="Minari dataset id to write (under MINARI_DATASETS_PATH or --minari-root)")
    q.add_argument("--minari-root", help="Minari datasets folder (default MINARI_DATASETS_PATH or ~/.minari/datasets)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--style", default="diverse", help="mazes: diverse (random goal and start) or fixed-goal")
    q.add_argument("--noise", type=float, help="action noise (planner default 0.5, checkpoints 0)")
    q.add_argument("--max-episode-steps", type=int, help="truncate episodes earlier than the env's limit")
    q.add_argument("--device", default="auto", help=f"where a checkpoint policy runs: {DEVICE_HELP}")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file or Minari dataset")
    q.set_defaults(func=cmd_dataset)
    q = dsub.add_parser("info", help="episodes, steps, returns and the data's own score")
    q.add_argument("spec", help="d4rl:PATH, minari:ID_OR_PATH, a .hdf5 file, a Minari folder or id")
    q.set_defaults(func=cmd_dataset)

    p = sub.add_parser("offline", help="train on a fixed dataset, or score an offline run")
    osub = p.add_subparsers(dest="action", required=True)
    q = osub.add_parser("train", help="gradient steps on a dataset (no env steps); resumes a run directory")
    q.add_argument("agent", help="agent name (td-infonce, gcrl, gcbc, ...); `crl list agents`")
    q.add_argument("--dataset", required=True, help="d4rl:PATH, minari:ID_OR_PATH, a .hdf5 file, a Minari folder or id")
    q.add_argument("--env", help="environment to evaluate in (default: the dataset's)")
    q.add_argument("--preset", help="named preset, e.g. offline; `crl list presets`")
    q.add_argument("--updates", type=int, help="budget in gradient steps")
    q.add_argument("--seed", type=int)
    q.add_argument("--device", help=DEVICE_HELP)
    q.add_argument("--logdir", help="run directory (default runs/offline_AGENT_DATASET_sSEED)")
    q.add_argument("--set", nargs="*", action="extend", metavar="FIELD=VALUE",
                   help="override any config field (repeatable)")
    q.set_defaults(func=cmd_offline)
    q = osub.add_parser("eval", help="roll a checkpoint's policy in the dataset's env; score beside the data's")
    q.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    q.add_argument("--dataset", help="dataset spec (default: the one the run was trained on)")
    q.add_argument("--episodes", type=positive_int, default=10)
    q.add_argument("--video", action="store_true")
    q.add_argument("--device", default="auto", help=DEVICE_HELP)
    q.set_defaults(func=cmd_offline)

    p = sub.add_parser("demo", help="the README's main job: DrQ-v2 learns a DMC task from pixels in minutes")
    p.add_argument("--states", action="store_true", help="the faster state-based demo (SAC, cartpole swing-up)")
    p.add_argument("--logdir", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def same_value(text: str, value) -> bool:
    """--set's text against an option's value: 1e5 and 100000 are one number."""
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return str(text) == str(value)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # loaded wherever a torch allocation failed
    return isinstance(error, MemoryError) or (torch is not None and isinstance(error, torch.OutOfMemoryError))


def main(argv: list[str] | None = None) -> int:
    from crl.system import keep_freed_memory

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # large tensors reused instead of re-faulted each update (crl/system.py)
    try:
        return args.func(args)
    except (MemoryError, ValueError, OSError, RuntimeError) as error:
        if out_of_memory(error):  # e.g. a replay_capacity or dataset the machine cannot hold, a batch the GPU cannot
            detail = f" ({error})" if str(error) else ""
            print(f"crl: error: out of memory{detail}; a training run needs less with a smaller replay_capacity, "
                  "batch_size or num_envs", file=sys.stderr)
            return 2
        # Errors about the user's input (and files: missing, not writable, a file where a folder
        # goes) are printed plainly, not as a traceback; a RuntimeError of another type than crl's
        # own (torch's CUDA, cuDNN or shape errors, dm_control's PhysicsError on a diverged agent)
        # is a crash and keeps its traceback (exit 1), as does every error with CRL_DEBUG=1.
        crash = isinstance(error, RuntimeError) and not type(error).__module__.startswith("crl")
        if crash or os.environ.get("CRL_DEBUG", "0") not in ("", "0"):
            traceback.print_exception(error)
            print(f"crl: error: {error}", file=sys.stderr)
            return 1
        print(f"crl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # no traceback for Ctrl-C; 130 as a shell reports it
        print(f"crl: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
