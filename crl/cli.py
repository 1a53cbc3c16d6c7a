"""The `crl` command."""

from __future__ import annotations

import argparse
import sys


def cmd_list(args: argparse.Namespace) -> int:
    from crl import envs

    if args.what == "envs":
        for suite in envs.SUITES:
            ids = envs.env_ids(suite)
            print(f"# {suite} ({len(ids)})")
            for env_id in ids:
                print(env_id)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from crl.demo import run_demo

    run_demo(args.logdir, env_id=args.env, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crl", description="Contrastive reinforcement-learning agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list environments (and, later, agents and presets)")
    p.add_argument("what", choices=["envs"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="the README's main job on an embedded default")
    p.add_argument("--logdir", default="runs/demo")
    p.add_argument("--env", default="dmc:cartpole-swingup")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Errors about the user's input are printed plainly, not as a traceback.
        print(f"crl: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
