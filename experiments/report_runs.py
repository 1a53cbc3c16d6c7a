"""Evaluation curves of finished runs as a BENCHMARKS.md section and a PNG.

    .venv/bin/python experiments/report_runs.py --title "Pixel agents on CPU" \\
        --png experiments/results/cartpole_balance_cpu_smoke.png RUN_DIR [RUN_DIR ...] --write

Each run's `crl train` command comes from its config.yaml, so the section says how to reproduce it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchlib import ROOT, command_line, machine_line, write_section
from crl.logger import plot_curves, read_config


def run_rows(run_dir: Path) -> list[str]:
    config = read_config(run_dir)
    evals = pd.read_csv(run_dir / "eval.csv")
    minutes = evals.wall_time / 60
    curve = ", ".join(f"{r:.0f} @ {f / 1000:.0f}k ({m:.0f} min)"
                      for f, r, m in zip(evals.frames, evals.episode_return, minutes))
    command = config.get("command") or f"crl train {config['agent']} --env {config['run']['env']}"
    return [f"| `{command}` | {config['run']['visuals']} | {evals.episode_return.max():.0f} | {curve} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    labels = [f"{read_config(r)['agent']} (seed {read_config(r)['run']['seed']})" for r in args.runs]
    plot_curves(args.runs, args.png, labels=labels, title=args.title)
    rows = [row for run in args.runs for row in run_rows(run)]
    png = args.png.resolve().relative_to(ROOT) if args.png.resolve().is_relative_to(ROOT) else args.png
    body = "\n".join([
        f"Command: `{command_line()}`", "", machine_line(), args.note, "",
        "| run | visuals | best eval return | eval return @ frames (wall time) |", "|---|---|---:|---|",
        *rows, "", f"![curves]({png})"])
    print(body)
    if args.write:
        write_section(args.title, body)


if __name__ == "__main__":
    main()
