"""Evaluation curves of finished runs as a BENCHMARKS.md section and a PNG.

    .venv/bin/python experiments/report_runs.py --title "Pixel agents on CPU" \\
        --png experiments/results/cartpole_balance_cpu_smoke.png RUN_DIR [RUN_DIR ...] --write

Each run's `crl train` command comes from its config.yaml, so the section says how to reproduce it.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pandas as pd

from benchlib import ROOT, command_line, machine_line, write_section
from crl.logger import plot_curves, read_config, read_csv


def note_elided(command: str, note: str) -> str:
    """The command with its --note text (printed below it anyway) shortened."""
    return command.replace(shlex.quote(note), "'(the note below)'") if note else command


def run_command(config: dict) -> str:
    if config.get("command"):
        return " && ".join([config["command"], *config.get("resumed_with", [])])
    if config.get("dataset"):
        return f"crl offline train {config['agent']} --dataset {config['dataset']} --seed {config['run']['seed']}"
    return f"crl train {config['agent']} --env {config['run']['env']} --seed {config['run']['seed']}"


def run_rows(run_dir: Path, metric: str, x: str) -> list[str]:
    config = read_config(run_dir)
    path = run_dir / "eval.csv"
    fields, rows = read_csv(path)  # less a last line a crash cut short
    evals = pd.DataFrame(rows, columns=fields).apply(pd.to_numeric, errors="coerce")
    minutes = evals.wall_time / 60
    digits = 2 if metric in ("success", "final_success") else 0
    curve = ", ".join(f"{v:.{digits}f} @ {n / 1000:g}k ({m:.0f} min)"
                      for n, v, m in zip(evals[x], evals[metric], minutes))
    visuals = config["run"]["visuals"] if config["run"]["env"].startswith("dmc:") else "-"
    return [f"| `{run_command(config)}` | {visuals} | {evals[metric].max():.{digits}f} | {curve} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--metric", default="episode_return", help="eval.csv column (e.g. success)")
    parser.add_argument("--x", default="frames", choices=["frames", "updates"], help="updates for offline runs")
    parser.add_argument("--labels", help="comma-separated curve labels, one per run (default: agent and seed)")
    parser.add_argument("--note", default="")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    if args.labels:
        labels = args.labels.split(",")
        if len(labels) != len(args.runs):
            parser.error(f"--labels gives {len(labels)} labels for {len(args.runs)} runs")
    else:
        labels = [f"{read_config(r)['agent']} (seed {read_config(r)['run']['seed']})" for r in args.runs]
    plot_curves(args.runs, args.png, x=args.x, y=args.metric, labels=labels, title=args.title)
    rows = [row for run in args.runs for row in run_rows(run, args.metric, args.x)]
    png = args.png.resolve().relative_to(ROOT) if args.png.resolve().is_relative_to(ROOT) else args.png
    body = "\n".join([
        f"Command: `{note_elided(command_line(), args.note)}`", "",
        # the runs may have trained elsewhere: the note says where; this is the reporting machine
        "Report written on: " + machine_line().removeprefix("Machine: "), args.note, "",
        f"| run | visuals | best eval {args.metric} | eval {args.metric} @ {args.x} (wall time) |",
        "|---|---|---:|---|", *rows, "", f"![curves]({png})"])
    print(body)
    if args.write:
        write_section(args.title, body)


if __name__ == "__main__":
    main()
