"""Benchmarks over agents x tasks x seeds, and their report against published numbers.

    crl bench dmc100k --agents drq,drqv2,curl,sac --seeds 5
    crl bench atari100k --agents sb3-dqn --seeds 3 --tasks atari:Pong,atari:Breakout
    crl bench dmc100k --agents drq,curl --seeds 5 --report-only

A spec is a YAML file in experiments/specs/ (dmc100k, dmc500k, atari100k) or any path: the suite,
the tasks (env ids), the budget in frames, the number of seeds, the evaluation cadence, the preset
of each agent (default: the spec's name) and optional overrides: `run` (RunConfig fields for every
run), `overrides` (per agent: its config fields, or the run fields allowed in `run`) and
`task_overrides` (per agent and task), e.g. CURL's Atari loss weight of 0.05 on four games:

    task_overrides:
      curl-rainbow:
        atari:Pong: {curl_coef: 0.05}

A run's settings are layered: the agent's RUN_DEFAULTS, its per-task settings for the task
(crl.train.task_settings: those the following layers do not give), its preset, the spec's `run`,
`overrides` of the agent, `task_overrides` of the agent on the task, then the run's env and seed; the result
is recorded in the run's config.yaml. An unknown agent, a task not in the spec or an unknown field
is an error naming the valid ones. Runs go one after another into OUT/<agent>/<task>/seed_<s>/
(task = the env id with ':' -> '_'; OUT defaults to runs/bench/<spec>) through `crl.train.train`.
Running the same command again skips finished runs (eval.csv reaches the budget), resumes crashed
runs from their latest checkpoint (`crl.train.resume`) and restarts crashed runs that have none; a
run whose checkpoints exist but none loads (damaged outside crl) fails, naming it, to be deleted.
A skipped or resumed run keeps the agent config it was made with: where that differs from what the
spec now gives (an override added after the run), a warning names the fields; delete the run
directory to run it again with the new settings. A run made with other run settings (all but the
budget, device, checkpoint cadence and videos: see RUN_FIELDS_FREE_TO_DIFFER) is neither skipped
nor resumed but fails, naming the fields, so that one report never mixes evaluation protocols; so
does a finished or crashed run whose config.yaml is missing, unreadable or names another agent
(nothing to check it against). The report leaves such runs out and lists them under "Missing"; a
run reported with another agent config than the spec's is listed there too.
A run is done when its eval.csv's frames reach the budget, whatever the return: a non-finite one
(diverged) shows in the per-task table and under "Missing", as does an eval.csv that cannot be read.

The report (OUT/report/: report.md, per_task.csv, aggregates.csv, plots/) gives, per task, the mean
and std over seeds of the evaluation return at each report budget (the spec's `report_frames`, which
must be evaluation points within its budget, and the budget run: 100k and 500k frames for DMC;
the last eval row at or below the budget, with the slack of the loop step that crosses it:
num_envs times the frames per agent step that eval.csv records) next to the published numbers of
experiments/reference/dmc_published.csv; and across tasks the mean, median and IQM with 95%
stratified-bootstrap intervals, computed by rliable (`rliable.library.get_interval_estimates`,
`rliable.metrics`) on scores normalised by /1000 for
DMC and human-normalised for Atari: (score - random) / (human - random) from
experiments/reference/atari100k_random_human.csv.

Running the full benchmark on a GPU (a paper-scale pixel run is many hours on a CPU):

    make install CUDA=1                            # .venv with the pinned dependencies, CUDA torch
    .venv/bin/python -c "import torch; print(torch.cuda.is_available())"   # True: torch sees the GPU
    export MUJOCO_GL=egl                           # headless rendering (NVIDIA's EGL, else Mesa's)
    .venv/bin/crl bench dmc100k --agents drq,drqv2,curl,sac,sb3-sac --seeds 10 --out runs/bench/dmc100k
    .venv/bin/crl bench dmc500k --agents drq,drqv2,curl,sac,sb3-sac --seeds 10 --out runs/bench/dmc500k
    .venv/bin/crl bench atari100k --agents drq-eps,curl-rainbow,sb3-dqn --seeds 5 --out runs/bench/atari100k

Runs use the GPU through `device: auto` (or put `run: {device: cuda}` in a spec) and go one at a
time. Measured on an H200 (BENCHMARKS.md, "Where the training loop's time goes on a GPU"):
DrQ-v2's loop at 260 frames/s alone with the replay's frames on the GPU (100k frames in about 6.5
minutes plus evaluation); the update is bound by the CPU that launches it, so several processes
(below) share one GPU well: 4 DrQ runs at once kept it 90% busy. The command can be stopped and
started again at any time; split the work over machines or processes with --agents / --tasks
(each (agent, task, seed) has its own directory; give each process its own agents or tasks), copy the run directories into one OUT and run
`crl bench SPEC --out OUT --report-only` there. Check the set-up first with one short run:
`crl bench dmc100k --agents sac --seeds 1 --tasks dmc:cartpole-swingup --frames 20000`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shutil
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from crl.fileio import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
SPECS_DIR = REPO / "experiments" / "specs"
REFERENCE_DIR = REPO / "experiments" / "reference"
SUITES = ("dmc", "atari")
SUITE_PREFIXES = {"dmc": ("dmc", "dmc-state"), "atari": ("atari",)}
# An evaluation lands on the first loop step at or past its cadence. A loop step is num_envs agent
# steps; an agent step is at most 8 frames (cartpole's action repeat; Atari's frame skip is 4): the
# slack per env where eval.csv does not say (eval_table; collect multiplies by num_envs).
SLACK_FRAMES = 8
DMC_SCORE_SCALE = 1000.0
METRICS = ("mean", "median", "iqm")
ATARI_TABLE = "atari100k_random_human.csv"


class SpecError(ValueError):
    pass


# -- specs -------------------------------------------------------------------------------------

@dataclass
class Spec:
    name: str
    path: Path
    suite: str
    tasks: list[str]
    frames: int
    seeds: int = 10
    eval_every_frames: int = 10_000
    eval_episodes: int = 10
    report_frames: list[int] = field(default_factory=list)  # default: the budget
    preset: str | None = None  # for every agent; None: no preset (the key absent: the spec's name)
    presets: dict[str, str | None] = field(default_factory=dict)  # per agent
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig fields for every run
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per agent: its config and run fields
    task_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # per agent, per task
    description: str = ""
    preset_from_name: bool = False  # no `preset:` key: every agent takes the preset named after the file


SPEC_KEYS = [f.name for f in dataclasses.fields(Spec) if f.name not in ("name", "path", "preset_from_name")]
REQUIRED_KEYS = ("suite", "tasks", "frames")
SPEC_RUN_KEYS = ("env", "seed", "seeds", "frames", "eval_every_frames", "eval_episodes")


def available_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        return path
    path = SPECS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SpecError(f"unknown benchmark spec {str(name_or_path)!r}; specs: {', '.join(available_specs())} "
                        "(or pass a path to a YAML file)")
    return path


def load_spec(name_or_path: str | Path) -> Spec:
    """Reads and validates a spec: an unknown key or a bad value is an error naming the file and key."""
    import yaml

    from crl import envs, registry
    from crl.config import field_names, unknown_field_error
    from crl.logger import load_yaml
    from crl.train import RunConfig

    path = spec_path(name_or_path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SpecError(f"spec {path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"spec {path} is not UTF-8 text: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec {path} must be a mapping of key: value")

    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"spec {path}: key {key!r} {message}")

    for key in data:
        if key not in SPEC_KEYS:
            raise fail(key, f"is not a spec key; keys: {', '.join(SPEC_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise fail(key, "is missing")
    if data["suite"] not in SUITES:
        raise fail("suite", f"must be one of {', '.join(SUITES)}, got {data['suite']!r}")
    tasks = data["tasks"]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise fail("tasks", "must be a non-empty list of environment ids")
    for task in tasks:
        try:
            suite, _ = envs.check_env_id(task)
        except ValueError as error:
            raise fail("tasks", str(error)) from None
        if suite not in SUITE_PREFIXES[data["suite"]]:
            raise fail("tasks", f"holds {task!r}, which is not a {data['suite']} task")
        if problem := unscorable_task(task):
            raise fail("tasks", problem)
    if repeated := duplicates(tasks):
        raise fail("tasks", f"lists {', '.join(repeated)} more than once (each task counts once in the aggregates)")
    for key in ("frames", "seeds", "eval_every_frames", "eval_episodes"):
        if key in data and not is_positive_int(data[key]):
            raise fail(key, f"must be a positive integer, got {data[key]!r}")
    report_frames = data.get("report_frames", [data["frames"]])
    if not isinstance(report_frames, list) or not all(is_positive_int(f) for f in report_frames):
        raise fail("report_frames", f"must be a list of positive integers, got {report_frames!r}")
    if repeated := duplicates(report_frames):
        raise fail("report_frames", f"lists {', '.join(map(str, repeated))} more than once")
    every = data.get("eval_every_frames", 10_000)
    for budget in report_frames:
        if budget > data["frames"]:
            raise fail("report_frames", f"holds {budget}, beyond the spec's budget of {data['frames']} frames")
        if budget != data["frames"] and budget % every:
            raise fail("report_frames", f"holds {budget}, which is not a multiple of eval_every_frames ({every}): "
                                        "no evaluation would fall on it (the last one before it would be reported)")
    for key in ("presets", "run", "overrides", "task_overrides"):
        if not isinstance(data.get(key, {}), dict):
            raise fail(key, f"must be a mapping, got {data[key]!r}")
    for key in ("presets", "overrides", "task_overrides"):
        for agent in data.get(key, {}):
            if agent not in registry.AGENTS:
                raise fail(key, f"names unknown agent {agent!r}; agents: {', '.join(sorted(registry.AGENTS))}")
    for agent, values in data.get("overrides", {}).items():
        if not isinstance(values, dict):
            raise fail("overrides", f"for {agent!r} must be a mapping of field: value, got {values!r}")
        fields = sorted(set(field_names(RunConfig)) | set(field_names(registry.agent_module(agent).Config)))
        for name in values:
            if name not in fields:
                raise fail("overrides", f"for {agent!r}: {unknown_field_error(name, fields, agent + ' config')}")
            if name in SPEC_RUN_KEYS:
                raise fail("overrides", f"for {agent!r} holds {name!r}, which the spec sets itself "
                                        f"(tasks, seeds and its own {name!r} key)")
    for key in ("preset", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise fail(key, f"must be a string, got {data[key]!r}")
    for agent, name in data.get("presets", {}).items():
        if name is not None and not isinstance(name, str):
            raise fail("presets", f"for {agent!r} must be a preset name or null, got {name!r}")
    run_fields = field_names(RunConfig)
    for name in data.get("run", {}):
        if name not in run_fields:
            raise fail("run", f"holds unknown run field {name!r}; fields: {', '.join(run_fields)}")
        if name in SPEC_RUN_KEYS:
            raise fail("run", f"holds {name!r}, which the spec sets itself (tasks, seeds and its own {name!r} key)")
    for agent, by_task in data.get("task_overrides", {}).items():
        if not isinstance(by_task, dict):
            raise fail("task_overrides", f"for {agent!r} must be a mapping of task: {{field: value}}, got {by_task!r}")
        fields = sorted(set(run_fields) | set(field_names(registry.agent_module(agent).Config)))
        for task, values in by_task.items():
            where = f"for {agent!r} on {task!r}"
            if task not in tasks:
                raise fail("task_overrides", f"{where}: {task!r} is not a task of the spec; tasks: {', '.join(tasks)}")
            if not isinstance(values, dict):
                raise fail("task_overrides", f"{where} must be a mapping of field: value, got {values!r}")
            for name in values:
                if name not in fields:
                    raise fail("task_overrides", f"{where}: {unknown_field_error(name, fields, agent + ' config')}")
                if name in SPEC_RUN_KEYS:
                    raise fail("task_overrides", f"{where} holds {name!r}, which the spec sets itself")
    return Spec(name=path.stem, path=path, suite=data["suite"], tasks=list(tasks), frames=data["frames"],
                seeds=data.get("seeds", 10), eval_every_frames=data.get("eval_every_frames", 10_000),
                eval_episodes=data.get("eval_episodes", 10), report_frames=sorted(report_frames),
                preset=data.get("preset", path.stem), preset_from_name="preset" not in data,
                presets=dict(data.get("presets", {})),
                run=dict(data.get("run", {})), overrides={a: dict(v) for a, v in data.get("overrides", {}).items()},
                task_overrides={a: {t: dict(v) for t, v in by_task.items()}
                                for a, by_task in data.get("task_overrides", {}).items()},
                description=str(data.get("description", "")))


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1  # YAML's true is an int to Python


def duplicates(items: list[str]) -> list[str]:
    return sorted({item for item in items if items.count(item) > 1})


def unscorable_task(task: str) -> str | None:
    """Why the report could not normalise `task`'s scores (an Atari game missing from the human and
    random table), or None."""
    suite, _, game = task.partition(":")
    if suite != "atari" or game in (table := atari_random_human()):
        return None
    return (f"holds {task!r}, whose game {game!r} is not in {REFERENCE_DIR / ATARI_TABLE}, the random and human scores "
            f"that the report normalises by; games: {', '.join(sorted(table))}")


# -- runs --------------------------------------------------------------------------------------

@dataclass
class BenchRun:
    agent: str
    task: str
    seed: int
    run_dir: Path
    run: Any  # RunConfig
    agent_config: Any


def task_dir(task: str) -> str:
    return task.replace(":", "_")


def run_dir_of(out: Path, agent: str, task: str, seed: int) -> Path:
    return Path(out) / agent / task_dir(task) / f"seed_{seed}"


def plan(spec: Spec, agents: list[str], seeds: list[int], out: Path, tasks: list[str] | None = None,
         frames: int | None = None, preset: str | None = None) -> list[BenchRun]:
    """Every (agent, task, seed) with its configs, built before anything runs so that a bad
    preset or field fails at once."""
    from crl.train import build_configs

    runs = []
    for agent in agents:
        agent_preset = preset or spec.presets.get(agent, spec.preset)
        check_preset(spec, agent, agent_preset, preset)
        for task in tasks or spec.tasks:
            for seed in seeds:
                settings = {"frames": spec.frames, "eval_every_frames": spec.eval_every_frames,
                            "eval_episodes": spec.eval_episodes, **spec.run, **spec.overrides.get(agent, {}),
                            **spec.task_overrides.get(agent, {}).get(task, {}), "env": task, "seed": seed}
                if frames is not None:
                    settings["frames"] = frames
                try:
                    run, agent_config = build_configs(agent, agent_preset, settings)
                except ValueError as error:
                    raise SpecError(f"spec {spec.path}, agent {agent!r}: {error}") from None
                runs.append(BenchRun(agent, task, seed, run_dir_of(out, agent, task, seed), run, agent_config))
    return runs


def check_preset(spec: Spec, agent: str, name: str | None, flag: str | None) -> None:
    """An agent's preset that it lacks is an error naming where it came from: --preset, the spec's
    `presets` or `preset` key, or (no `preset` key) the spec's file name."""
    from crl import registry

    known = getattr(registry.agent_module(agent), "PRESETS", {})
    if name is None or name in known:
        return
    if flag:
        source = "--preset"
    elif agent in spec.presets:
        source = f"spec {spec.path}: key 'presets' for {agent!r}"
    elif spec.preset_from_name:
        source = (f"spec {spec.path} has no 'preset' key, so every agent takes the preset named after the file; "
                  f"set `preset:` (null for none) or `presets: {{{agent}: ...}}`")
    else:
        source = f"spec {spec.path}: key 'preset'"
    raise SpecError(f"{source}: unknown preset {name!r} for agent {agent!r}; presets: {', '.join(sorted(known)) or 'none'}")


class UnreadableEval(ValueError):
    """A run's eval.csv that cannot be read as text CSV (not UTF-8, NUL bytes, not a file)."""


def eval_rows(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, episode_return) of a run's eval.csv, sorted by frames; empty when there is none. A
    return that is not a finite number (a diverged run logs nan) stays in as nan: the run still got
    to its frames, and the report shows it as diverged rather than leaving it out."""
    frames, returns, _ = eval_table(run_dir)
    return frames, returns


def eval_table(run_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """eval_rows and the frames per agent step that eval.csv records (the largest frames /
    agent_steps rounded up: the action repeat or frame skip), SLACK_FRAMES where it records none."""
    path = Path(run_dir) / "eval.csv"
    frames, returns, per_step = [], [], []
    if path.exists() and not path.is_file():
        raise UnreadableEval(f"{path} is not a file (a directory?): move it away to run or report this run")
    if path.is_file():
        for row in read_eval_csv(path):
            x, steps = parse_float(row.get("frames")), parse_float(row.get("agent_steps"))
            if math.isfinite(x):
                frames.append(x)
                returns.append(logged_return(row.get("episode_return"), path, x))
                if steps > 0:
                    per_step.append(x / steps)
    order = np.argsort(frames, kind="stable")
    frames_per_step = math.ceil(max(per_step)) if per_step else SLACK_FRAMES
    return np.asarray(frames, dtype=float)[order], np.asarray(returns, dtype=float)[order], frames_per_step


def logged_return(cell: str | None, path: Path, frames: float) -> float:
    """An eval row's episode_return: a number, nan/inf included (a diverged run); a missing, blank
    or garbled cell makes the file unreadable rather than the run diverged."""
    value = parse_float(cell)
    if math.isnan(value) and (cell or "").strip().lower() not in ("nan", "+nan", "-nan"):
        raise UnreadableEval(f"{path}: the row at {frames:.0f} frames has episode_return {cell!r}, not a number")
    return value


def read_eval_csv(path: Path) -> list[dict[str, str]]:
    """The rows of an eval.csv that the logger would keep on resuming (`crl.logger.read_csv`: less
    a last line cut short by a crash, whose numbers may be truncated, and rows that do not have the
    header's width); a file that is not UTF-8 CSV text, or holds NUL bytes, is UnreadableEval."""
    from crl.logger import read_csv

    try:
        return read_csv(path)[1]
    except ValueError as error:
        raise UnreadableEval(str(error)) from None


def parse_float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def run_state(run_dir: Path, frames: int) -> str:
    """done (eval.csv reaches the budget), resume (has checkpoints), restart (has files) or new."""
    from crl.checkpoint import CheckpointManager

    run_dir = Path(run_dir)
    logged, _ = eval_rows(run_dir)
    if len(logged) and logged[-1] >= frames:
        return "done"
    if CheckpointManager(run_dir / "checkpoints").latest() is not None:
        return "resume"
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "restart"
    return "new"


class UncheckableRun(ValueError):
    """A run directory with evaluations whose config.yaml is missing, unreadable or of another
    agent: there is nothing to check its settings against, so it is neither kept nor reported."""


def recorded_run_config(run: BenchRun) -> dict:
    """The config.yaml of an existing run, checked to be a run config of `run.agent`."""
    from crl.config import ConfigError
    from crl.train import recorded_config

    where = run.run_dir / "config.yaml"
    try:
        config = recorded_config(run.run_dir)
    except (ConfigError, OSError, ValueError) as error:
        raise UncheckableRun(f"{where} cannot be read: {error}") from None
    if config is None:
        raise UncheckableRun(f"{where} is missing, so the run's settings cannot be checked")
    if config["agent"] != run.agent:
        raise UncheckableRun(f"{where} records agent {config['agent']!r}, not {run.agent!r}")
    return config


def recorded_differences(run: BenchRun, recorded: dict) -> list[str]:
    """`field: recorded -> planned` for each agent config field where an existing run's config.yaml
    (`recorded`, from recorded_run_config) differs from the planned config."""
    from crl import registry
    from crl.config import ConfigError, from_dict

    try:
        recorded = from_dict(registry.agent_module(run.agent).Config, recorded["agent_config"],
                             f"{run.run_dir}/config.yaml")
    except (ConfigError, TypeError, ValueError) as error:  # written by other code (a renamed field)
        return [f"the recorded agent config no longer reads as one ({error})"]
    return [f"{f.name}: {getattr(recorded, f.name)!r} -> {getattr(run.agent_config, f.name)!r}"
            for f in dataclasses.fields(recorded) if getattr(recorded, f.name) != getattr(run.agent_config, f.name)]


# The budget may grow (a 100k run goes on to 500k), and these do not change what a run learns or how
# it is evaluated. Everything else, eval cadence and episodes included (the report compares eval
# returns across runs), must match the spec for a finished run to be kept or a crashed one resumed.
# All are among crl.train.RESUMABLE_FIELDS, so a resume may take the spec's values.
RUN_FIELDS_FREE_TO_DIFFER = ("frames", "device", "checkpoint_every_frames", "keep_checkpoints", "video",
                             "replay_on_device")


def recorded_run_differences(run: BenchRun, recorded: dict) -> list[str]:
    """`field: recorded -> planned` for each run setting (but those free to differ) where an existing
    run's config.yaml (`recorded`, from recorded_run_config) differs from the planned run."""
    from crl.config import to_dict

    recorded = recorded["run"]
    planned = to_dict(run.run)
    return [f"{name}: {recorded[name]!r} -> {value!r}" for name, value in planned.items()
            if name not in RUN_FIELDS_FREE_TO_DIFFER and name in recorded and recorded[name] != value]


def execute(run: BenchRun) -> str:
    """Brings one run to its budget; returns what it did (skipped, trained, resumed, restarted)."""
    from tqdm import tqdm

    from crl import train
    from crl.checkpoint import NoLoadableCheckpoint

    state = run_state(run.run_dir, run.run.frames)
    if state in ("done", "resume"):
        try:
            recorded = recorded_run_config(run)
        except UncheckableRun as error:
            raise SpecError(f"{error}; the run is neither kept nor resumed: delete {run.run_dir} to run it again, "
                            "or use another --out") from None
        if changed := recorded_run_differences(run, recorded):
            raise SpecError(f"{run.run_dir} was made with other run settings than the spec gives "
                            f"({'; '.join(changed)}); it is neither kept nor resumed: delete the directory to run it "
                            "again, or use another --out")
        if changed := recorded_differences(run, recorded):
            tqdm.write(f"crl bench: warning: {run.run_dir} keeps the agent config it was made with, which differs "
                       f"from the spec's ({'; '.join(changed)}); delete the directory to run it with the spec's",
                       file=sys.stderr)
    if state == "done":
        return "skipped"
    if state == "resume":
        # the settings free to differ (a larger budget, another device) are the spec's; the rest were checked equal
        free = {name: getattr(run.run, name) for name in RUN_FIELDS_FREE_TO_DIFFER}
        try:
            train.resume(run.run_dir, agent=run.agent, overrides=free)
        except NoLoadableCheckpoint as error:  # damaged outside crl (saves are atomic): nothing to resume from
            raise SpecError(f"{run.run_dir} cannot be resumed: {error}; delete the directory to run it again "
                            "from the start") from None
    else:
        if state == "restart":
            shutil.rmtree(run.run_dir / "tb", ignore_errors=True)  # the crashed attempt's curves
        train.train(run.agent, run.run, run.agent_config, run.run_dir)
    if run_state(run.run_dir, run.run.frames) != "done":
        raise RuntimeError(f"{run.run_dir} stopped before its eval.csv reached {run.run.frames} frames")
    return {"resume": "resumed", "restart": "restarted"}.get(state, "trained")


def run_all(runs: list[BenchRun]) -> list[dict[str, Any]]:
    """Runs one after another under a progress bar; a failing run is reported and the rest go on,
    but after an accelerator error (a device-side assert, an illegal memory access), which leaves
    the process's CUDA context unusable, the sweep stops: running the command again goes on."""
    import torch
    from tqdm import tqdm

    outcomes = []
    with tqdm(runs, desc="bench", unit="run", file=sys.stderr) as bar:
        for run in bar:
            bar.set_postfix_str(f"{run.agent} {run.task} seed {run.seed}")
            context_lost = False
            try:
                status, error = execute(run), ""
            except Exception as exc:  # noqa: BLE001 - one failing run must not stop a multi-day sweep
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                context_lost = isinstance(exc, torch.AcceleratorError)
                detail = str(exc) if isinstance(exc, SpecError) else traceback.format_exc()  # a refusal is no crash
                tqdm.write(f"crl bench: {run.run_dir} failed:\n{detail}", file=sys.stderr)
            outcomes.append({"agent": run.agent, "task": run.task, "seed": run.seed, "run_dir": str(run.run_dir),
                             "status": status, "error": error})
            if context_lost:
                tqdm.write("crl bench: stopping: after this accelerator error every later run in this process "
                           "would fail too; run the same command again to go on", file=sys.stderr)
                break
    return outcomes


# -- reference numbers -------------------------------------------------------------------------

def read_reference(name: str) -> list[dict[str, str]]:
    """Rows of experiments/reference/<name> (lines starting with '#' are its source notes)."""
    with open(REFERENCE_DIR / name, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def published_task(env_id: str) -> str | None:
    """dmc:cartpole-swingup -> cartpole_swingup (the tables' name); None for ids they do not cover
    (the published numbers are from pixels, so dmc-state ids have none)."""
    suite, _, name = env_id.partition(":")
    if suite != "dmc":
        return None
    domain, _, task = name.partition("-")
    return f"{domain}_{task}"


def env_id_of_published(task: str) -> str:
    """cartpole_swingup -> dmc:cartpole-swingup (domains may hold '_': ball_in_cup_catch)."""
    from crl import envs

    for env_id in envs.env_ids("dmc"):
        if published_task(env_id) == task:
            return env_id
    raise KeyError(f"no dmc task is published as {task!r}")


def reference_table(name: str, key_columns: tuple[str, ...], value_columns: tuple[str, ...],
                    key_of=lambda key: key) -> dict:
    """{key_of(key columns): value columns as floats} of a reference CSV; a missing column, a value
    that is not a number, an unknown name (key_of raises KeyError) or a repeated key is an error
    naming the file and the line."""
    path = REFERENCE_DIR / name
    table = {}
    for number, row in enumerate(read_reference(name), start=1):
        where = f"reference table {path}, data row {number} (after the header)"
        if missing := [c for c in key_columns + value_columns if c not in row]:
            raise ValueError(f"reference table {path} lacks the column(s) {', '.join(missing)}")
        try:
            key = key_of(tuple(row[c] for c in key_columns))
            values = tuple(float(row[c]) for c in value_columns)
        except KeyError as error:
            raise ValueError(f"{where}: {error.args[0] if error.args else error}") from None
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {', '.join(value_columns)} must be numbers, got "
                             f"{', '.join(repr(row.get(c)) for c in value_columns)}") from None
        if key in table:
            raise ValueError(f"{where}: {key} is listed more than once")
        table[key] = values
    return table


def dmc_published() -> dict[tuple[str, str, int], tuple[float, float]]:
    """(method, env id, frames) -> (mean, std) from dmc_published.csv."""
    def key_of(cells):
        method, task, steps = cells
        if not steps.isdigit():
            raise KeyError(f"steps must be a whole number of frames, got {steps!r}")
        return method, env_id_of_published(task), int(steps)

    return reference_table("dmc_published.csv", ("method", "task", "steps"), ("mean", "std"), key_of)


def atari_random_human() -> dict[str, tuple[float, float]]:
    return reference_table(ATARI_TABLE, ("game",), ("random", "human"), key_of=lambda cells: cells[0])


def human_normalized(score, game: str, table: dict[str, tuple[float, float]] | None = None):
    random, human = (table or atari_random_human())[game]
    return (np.asarray(score, dtype=float) - random) / (human - random)


def normalize(suite: str, env_id: str, score, atari_table=None):
    """DMC: return / 1000 (the maximum return); Atari: human-normalised score."""
    if suite == "dmc":
        return np.asarray(score, dtype=float) / DMC_SCORE_SCALE
    return human_normalized(score, env_id.partition(":")[2], atari_table)


# -- scores and aggregates ---------------------------------------------------------------------

def row_at(frames: np.ndarray, budget: int, slack: int = SLACK_FRAMES) -> int | None:
    """The eval row that scores a budget: the last one at or below it (plus `slack`, the frames of
    the loop step that crosses it); None if the run has not reached the budget."""
    if not len(frames) or frames[-1] < budget:
        return None
    below = np.flatnonzero(frames <= budget + slack)
    return int(below[-1]) if len(below) else None


def score_at(frames: np.ndarray, returns: np.ndarray, budget: int, slack: int = SLACK_FRAMES) -> float | None:
    """The eval return at a budget (`row_at`'s row); None if the run has not reached the budget."""
    row = row_at(frames, budget, slack)
    return None if row is None else float(returns[row])


def earlier_evaluation_notes(curves: dict, budgets: list[int]) -> list[str]:
    """Runs with no evaluation at a budget (a `--frames` off the eval cadence, on runs that went on
    past it) are scored by their last evaluation before it: say so, naming where that one was."""
    notes = []
    for (agent, task), by_seed in sorted(curves.items()):
        for budget in budgets:
            earlier = {}
            for seed, curve in sorted(by_seed.items()):
                row = row_at(curve.frames, budget, curve.slack)
                if row is not None and curve.frames[row] < budget:
                    earlier[seed] = int(curve.frames[row])
            if earlier:
                where = ", ".join(f"seed {seed} at {at}" for seed, at in earlier.items())
                notes.append(f"{agent} on {task} at {budget} frames: no evaluation at the budget; reported the last "
                             f"one before it ({where} frames)")
    return notes


def rliable_modules():
    """rliable.library and rliable.metrics, imported on first use (rliable pulls in arch and pandas)."""
    from rliable import library, metrics

    return library, metrics


def aggregate(scores: dict[str, np.ndarray], reps: int = 50_000, seed: int = 0) -> dict[str, dict[str, tuple]]:
    """Mean, median and IQM (rliable's definitions) of (runs x tasks) normalised score matrices, each
    with its 95% percentile stratified-bootstrap interval: {agent: {metric: (point, low, high)}}."""
    if not scores:
        return {}
    library, metrics = rliable_modules()

    def all_metrics(matrix):
        return np.array([metrics.aggregate_mean(matrix), metrics.aggregate_median(matrix),
                         metrics.aggregate_iqm(matrix)])

    # rliable 1.2 draws its resamples from numpy's global RNG (np.random.choice), not from the
    # random_state it is given: seed that one for each agent (so an agent's intervals do not depend
    # on which agents come before it in the report), and put it back afterwards.
    global_state = np.random.get_state()
    points, intervals = {}, {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch: random_state -> generator
            for agent, matrix in scores.items():
                np.random.seed(seed)
                point, interval = library.get_interval_estimates({agent: matrix}, all_metrics, reps=reps)
                points[agent], intervals[agent] = point[agent], interval[agent]
    finally:
        np.random.set_state(global_state)
    return {agent: {metric: (float(points[agent][i]), float(intervals[agent][0, i]), float(intervals[agent][1, i]))
                    for i, metric in enumerate(METRICS)} for agent in scores}


class Curve(NamedTuple):
    frames: np.ndarray
    returns: np.ndarray
    slack: int = SLACK_FRAMES  # frames of one loop step: an evaluation lands up to this far past its cadence


def collect(out: Path, agents: list[str], tasks: list[str], seeds: list[int],
            planned: list[BenchRun] | None = None) -> tuple[dict, list[str]]:
    """{(agent, task): {seed: Curve}} for every run directory with evaluations, and a note for each
    run left out or reported with a caveat. Left out: an eval.csv that cannot be read and, given the
    `planned` runs, a run made with other run settings (one report, one evaluation protocol) or
    whose config.yaml cannot be checked. Reported with a note: a run whose agent config differs
    from the planned one (a field changed in the spec after it ran)."""
    planned_runs = {(run.agent, run.task, run.seed): run for run in planned or []}
    curves, notes = {}, []
    for agent in agents:
        for task in tasks:
            for seed in seeds:
                name = f"{agent} on {task} seed {seed}"
                run_dir = run_dir_of(out, agent, task, seed)
                try:
                    frames, returns, frames_per_step = eval_table(run_dir)
                except UnreadableEval as error:
                    notes.append(f"{name}: left out, unreadable: {error}")
                    continue
                if not len(frames):
                    continue
                num_envs = 1
                if (run := planned_runs.get((agent, task, seed))) is not None:
                    try:
                        recorded = recorded_run_config(run)
                    except UncheckableRun as error:
                        notes.append(f"{name}: left out, {error}")
                        continue
                    changed = recorded_run_differences(run, recorded)
                    other_agent_config = recorded_differences(run, recorded)
                    if changed:
                        notes.append(f"{name}: left out, made with other run settings than the spec's "
                                     f"({'; '.join(changed)})")
                        continue
                    if other_agent_config:
                        notes.append(f"{name}: reported, but made with another agent config than the spec gives "
                                     f"({'; '.join(other_agent_config)})")
                    num_envs = run.run.num_envs
                curves.setdefault((agent, task), {})[seed] = Curve(frames, returns, num_envs * frames_per_step)
    return curves, notes


def scores_at(curves: dict, agent: str, task: str, budget: int) -> dict[int, float]:
    """{seed: eval return at the budget} over the seeds that reached it (nan for a diverged one)."""
    by_seed = {seed: score_at(curve.frames, curve.returns, budget, curve.slack)
               for seed, curve in curves.get((agent, task), {}).items()}
    return {seed: value for seed, value in by_seed.items() if value is not None}


def per_task_rows(suite: str, curves: dict, agents: list[str], tasks: list[str], budgets: list[int]) -> list[dict]:
    """One row per (task, budget, agent): mean and std (over seeds, ddof 0) of the eval return over
    the seeds with a finite one, the seeds whose return is not finite (diverged), the normalised
    mean, and the published numbers for the same task and budget."""
    published = dmc_published() if suite == "dmc" else {}
    methods = sorted({method for method, _, _ in published})
    atari_table = atari_random_human() if suite == "atari" else None
    rows = []
    for task in tasks:
        for budget in budgets:
            for agent in agents:
                by_seed = scores_at(curves, agent, task, budget)
                values = np.array([v for v in by_seed.values() if math.isfinite(v)])
                diverged = [seed for seed, v in by_seed.items() if not math.isfinite(v)]
                row = {"task": task, "frames": budget, "agent": agent, "seeds": len(values),
                       "mean": float(values.mean()) if len(values) else None,
                       "std": float(values.std()) if len(values) else None,
                       "normalized_mean": float(normalize(suite, task, values, atari_table).mean()) if len(values) else None,
                       "diverged_seeds": " ".join(map(str, sorted(diverged)))}
                for method in methods:
                    mean, std = published.get((method, task, budget), (None, None))
                    row[f"{method}_published_mean"], row[f"{method}_published_std"] = mean, std
                if atari_table is not None:
                    row["random"], row["human"] = atari_table[task.partition(":")[2]]
                rows.append(row)
    return rows


def diverged_notes(rows: list[dict]) -> list[str]:
    return [f"{row['agent']} on {row['task']} seed {seed} at {row['frames']} frames: diverged (eval return not finite); "
            "left out of the mean, std and aggregates" for row in rows for seed in row["diverged_seeds"].split()]


def score_matrices(suite: str, curves: dict, agents: list[str], tasks: list[str], budget: int,
                   seeds: list[int] | None = None):
    """{agent: (seeds x tasks) normalised scores} over the seeds that have a finite score on every
    task at `budget`; agents missing a task at this budget are left out (with the reason) rather
    than aggregated over fewer tasks, and so are the seeds that lack a task (with the tasks; every
    one of `seeds`, the report's, that is not aggregated, a seed with no run at all included):
    (matrices, {agent: reasons}, {agent: {seed: tasks}})."""
    atari_table = atari_random_human() if suite == "atari" else None
    matrices, missing, dropped = {}, {}, {}
    for agent in agents:
        scores = {task: {s: v for s, v in scores_at(curves, agent, task, budget).items() if math.isfinite(v)}
                  for task in tasks}
        common = sorted(set.intersection(*(set(by_seed) for by_seed in scores.values())))
        if not common:
            missing[agent] = [task for task, by_seed in scores.items() if not by_seed] or ["no seed covers every task"]
            continue
        some = sorted(set().union(*(set(by_seed) for by_seed in scores.values()), seeds or ()) - set(common))
        if some:
            dropped[agent] = {s: [task for task in tasks if s not in scores[task]] for s in some}
        matrices[agent] = np.array([[float(normalize(suite, task, scores[task][s], atari_table)) for task in tasks]
                                    for s in common])
    return matrices, missing, dropped


# -- plots -------------------------------------------------------------------------------------

def mean_and_std(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over the runs that cover each logged frame count (interpolated between a
    run's own rows), so that a run that stopped early still shows up to where it got."""
    grid = np.unique(np.concatenate([f for f, _ in runs]))
    values = np.full((len(runs), len(grid)), np.nan)
    for i, (frames, returns) in enumerate(runs):
        covered = (grid >= frames[0]) & (grid <= frames[-1])
        values[i, covered] = np.interp(grid[covered], frames, returns)
    return grid, np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def plot_task(path: Path, suite: str, task: str, curves: dict, agents: list[str], budgets: list[int]) -> Path:
    """Each agent's mean eval return with a +-1 std band over seeds, and the published
    mean +- std at each budget (DMC) or the random and human scores (Atari)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, agent in enumerate(agents):
        runs = [(f[np.isfinite(r)], r[np.isfinite(r)]) for f, r, _ in curves.get((agent, task), {}).values()]
        runs = [(f, r) for f, r in runs if len(f)]
        if not runs:
            continue
        grid, mean, std = mean_and_std(runs)
        ax.plot(grid, mean, color=f"C{i}", marker="o" if len(grid) == 1 else None,  # one point: no line
                label=f"{agent} (n={len(runs)})")
        ax.fill_between(grid, mean - std, mean + std, color=f"C{i}", alpha=0.2, linewidth=0)
    if suite == "dmc":
        published = dmc_published()
        methods = sorted({m for m, _, _ in published})
        for j, method in enumerate(methods):
            points = [(b, *published[(method, task, b)]) for b in budgets if (method, task, b) in published]
            if points:
                x, y, err = zip(*points)
                nudge = 1 + 0.015 * (j - (len(methods) - 1) / 2)  # side by side, not on top of each other
                ax.errorbar(np.array(x) * nudge, y, yerr=err, fmt="D", capsize=4, color=f"C{len(agents) + j}",
                            label=f"{method} (published)")
    else:
        random, human = atari_random_human()[task.partition(":")[2]]
        ax.axhline(random, linestyle=":", color="gray", label="random")
        ax.axhline(human, linestyle="--", color="gray", label="human")
    ax.set_xlabel("frames")
    ax.set_ylabel("eval episode_return")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


# -- the report --------------------------------------------------------------------------------

def fmt(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def per_task_markdown(suite: str, rows: list[dict]) -> str:
    methods = [k[: -len("_published_mean")] for k in (rows[0] if rows else {}) if k.endswith("_published_mean")]
    extra = [f"{m} (published)" for m in methods] if suite == "dmc" else ["HNS", "random", "human"]
    lines = ["| task | frames | agent | return mean ± std | seeds | " + " | ".join(extra) + " |",
             "|" + "---|" * (5 + len(extra))]
    for row in rows:
        if suite == "dmc":
            cells = [f"{fmt(row[f'{m}_published_mean'], 0)} ± {fmt(row[f'{m}_published_std'], 0)}"
                     if row[f"{m}_published_mean"] is not None else "" for m in methods]
        else:
            cells = [fmt(row["normalized_mean"], 3), fmt(row["random"]), fmt(row["human"])]
        score = f"{fmt(row['mean'])} ± {fmt(row['std'])}" if row["seeds"] else "(no run at this budget)"
        if diverged := row["diverged_seeds"].split():
            score = (score + "; " if row["seeds"] else "") + f"diverged: seed {', '.join(diverged)}"
        lines.append(f"| {row['task']} | {row['frames']} | {row['agent']} | {score} | {row['seeds']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(spec: Spec, out: Path, agents: list[str], tasks: list[str], seeds: list[int], frames: int,
           reps: int = 50_000, outcomes: list[dict] | None = None, planned: list[BenchRun] | None = None) -> Path:
    """Writes OUT/report/{report.md, per_task.csv, aggregates.csv, plots/<task>.png}; runs made with
    other run settings than the `planned` ones are left out and listed."""
    out = Path(out)
    report_dir = out / "report"
    budgets = sorted({b for b in spec.report_frames if b <= frames} | {frames})  # and the budget run
    curves, left_out = collect(out, agents, tasks, seeds, planned)
    rows = per_task_rows(spec.suite, curves, agents, tasks, budgets)
    write_csv(report_dir / "per_task.csv", rows)

    aggregate_rows, notes = [], left_out + diverged_notes(rows) + earlier_evaluation_notes(curves, budgets)
    for budget in budgets:
        matrices, missing, dropped = score_matrices(spec.suite, curves, agents, tasks, budget, seeds)
        for agent, reason in missing.items():
            notes.append(f"{agent} at {budget} frames: not aggregated, no complete runs for {', '.join(reason)}")
        for agent, by_seed in dropped.items():
            by_lacking: dict[tuple[str, ...], list[int]] = {}  # one note for the seeds that lack the same tasks
            for seed, lacking in by_seed.items():
                by_lacking.setdefault(tuple(lacking), []).append(seed)
            notes += [f"{agent} at {budget} frames: seed{'s' if len(group) > 1 else ''} {', '.join(map(str, group))} "
                      "left out of the aggregates, no finite score at this budget on "
                      f"{'any task' if len(lacking) == len(tasks) else ', '.join(lacking)}"
                      for lacking, group in by_lacking.items()]
        for agent, values in aggregate(matrices, reps=reps).items():
            for metric, (point, low, high) in values.items():
                aggregate_rows.append({"agent": agent, "frames": budget, "metric": metric, "value": point,
                                       "ci_low": low, "ci_high": high, "runs": matrices[agent].shape[0],
                                       "tasks": matrices[agent].shape[1]})
    write_csv(report_dir / "aggregates.csv", aggregate_rows)

    plots = [plot_task(report_dir / "plots" / f"{task_dir(task)}.png", spec.suite, task, curves, agents, budgets)
             for task in tasks if any((agent, task) in curves for agent in agents)]

    score_name = "return / 1000" if spec.suite == "dmc" else "human-normalised score (score - random) / (human - random)"
    lines = [f"# Benchmark {spec.name}", "",
             f"Spec `{spec.path}`; agents {', '.join(agents)}; {len(tasks)} tasks; seeds {', '.join(map(str, seeds))}; "
             f"budget {frames} frames; run directories under `{out}`.", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    task_settings = [f"{agent} on {task}: " + ", ".join(f"{name}={value}" for name, value in values.items())
                     for agent in agents for task, values in spec.task_overrides.get(agent, {}).items()
                     if task in tasks]
    if task_settings:
        lines += ["Per-task settings (the spec's `task_overrides`): " + "; ".join(task_settings) + ".", ""]
    lines += ["## Per task", "",
              "Evaluation return (each agent's evaluation policy: greedy, or epsilon-greedy with epsilon 0.001 for the "
              "Atari agents) at each budget: the last eval row at or below it; "
              "mean ± std over seeds (std with ddof 0)."
              + (" Published: experiments/reference/dmc_published.csv (CURL and DrQ, Table 1)." if spec.suite == "dmc" else
                 " HNS: human-normalised score of the mean."), "",
              per_task_markdown(spec.suite, rows), "",
              "## Aggregates across tasks", "",
              f"Scores normalised as {score_name}; mean, median and IQM (25% trimmed mean over all runs and tasks) as "
              f"rliable defines them, with 95% percentile stratified-bootstrap intervals ({reps} replications, "
              "runs resampled within each task).", "",
              "| agent | frames | metric | value | 95% CI | runs x tasks |", "|---|---|---|---|---|---|"]
    for row in aggregate_rows:
        interval = (f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row["runs"] > 1 else
                    "none (one run per task: the bootstrap has nothing to resample)")
        lines.append(f"| {row['agent']} | {row['frames']} | {row['metric']} | {row['value']:.3f} | "
                     f"{interval} | {row['runs']} x {row['tasks']} |")
    if not aggregate_rows:
        lines.append("| (no agent has complete runs) | | | | | |")
    lines += ["", "## Learning curves", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots] or ["(no runs yet)"]
    failed = [o for o in outcomes or [] if o["status"] == "failed"]
    if notes or failed:
        lines += ["", "## Missing", ""]
        lines += [f"- {note}" for note in notes]
        lines += [f"- {o['run_dir']} failed: {o['error']}" for o in failed]
    path = report_dir / "report.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


# -- the command -------------------------------------------------------------------------------

def split_list(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def discover_agents(out: Path) -> list[str]:
    from crl import registry

    return sorted(p.name for p in Path(out).iterdir() if p.is_dir() and p.name in registry.AGENTS) if Path(out).is_dir() else []


def command(spec_name: str, agents: str | None = None, seeds: int | None = None, tasks: str | None = None,
            frames: int | None = None, out: str | None = None, preset: str | None = None,
            report_only: bool = False, reps: int = 50_000) -> int:
    """`crl bench`: runs what is missing, then writes the report. 0 when every run finished."""
    from crl import envs, registry

    for flag, value in (("--frames", frames), ("--seeds", seeds), ("--reps", reps)):
        if value is not None and not is_positive_int(value):
            raise SpecError(f"{flag} must be a positive integer, got {value!r}")
    spec = load_spec(spec_name)
    out_dir = Path(out) if out else Path("runs") / "bench" / spec.name
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"--out {out_dir} is a file, not a directory for the runs and the report")
    if tasks is not None and not split_list(tasks):
        raise SpecError(f"--tasks {tasks!r} names no task; tasks of spec {spec.path}: {', '.join(spec.tasks)}")
    task_list = split_list(tasks) or spec.tasks
    for task in task_list:
        envs.check_env_id(task)
        if task not in spec.tasks:  # the aggregates are over the spec's task set, or a subset of it
            raise SpecError(f"--tasks: {task!r} is not a task of spec {spec.path}; its tasks: {', '.join(spec.tasks)} "
                            "(write a spec of your own to run others)")
    agent_list = split_list(agents) or (discover_agents(out_dir) if report_only else None)
    if not agent_list:
        raise SpecError("crl bench needs --agents a,b (`crl list agents`)" if not report_only else
                        f"--report-only found no agent directories in {out_dir}; pass --agents")
    for flag, items in (("--tasks", task_list), ("--agents", agent_list)):
        if repeated := duplicates(items):
            raise SpecError(f"{flag} lists {', '.join(repeated)} more than once")
    for agent in agent_list:
        registry.agent_module(agent)  # an unknown name fails here, naming the valid ones
    seed_list = list(range(seeds if seeds is not None else spec.seeds))
    budget = frames if frames is not None else spec.frames
    outcomes = []
    runs = plan(spec, agent_list, seed_list, out_dir, task_list, frames=frames, preset=preset)
    if not report_only:
        outcomes = run_all(runs)
        counts = {s: sum(o["status"] == s for o in outcomes) for s in ("trained", "resumed", "restarted", "skipped", "failed")}
        print("runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    path = report(spec, out_dir, agent_list, task_list, seed_list, budget, reps=reps, outcomes=outcomes, planned=runs)
    print(f"report: {path}")
    return 1 if any(o["status"] == "failed" for o in outcomes) else 0
