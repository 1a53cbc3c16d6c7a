"""crl bench: specs, skip/resume/restart of runs, per-task tables, rliable aggregates, the report."""

import csv
from pathlib import Path

import numpy as np
import pytest

from crl import bench, cli, envs, train
from crl.envs.atari import ATARI_100K_GAMES
from crl.logger import read_config

TINY_SPEC = """\
suite: dmc
tasks: [dmc-state:cartpole-balance]
frames: 2000
seeds: 1
eval_every_frames: 1000
eval_episodes: 1
report_frames: [1000, 2000]
preset: null
run: {seed_frames: 500, checkpoint_every_frames: 1000}
overrides:
  sac: {hidden_dims: [32, 32], batch_size: 32}
"""


def write_spec(tmp_path, text, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def write_eval(run_dir: Path, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frames", "agent_steps", "updates", "wall_time", "episode_return", "episode_return_std"])
        for frames, value in rows:
            writer.writerow([frames, frames // 8, frames // 8, 0.0, value, 0.0])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- aggregates --------------------------------------------------------------------------------

def test_aggregates_are_rliables():
    rng = np.random.default_rng(0)
    scores = {"a": rng.uniform(0, 1, (5, 4)), "b": rng.uniform(0, 2, (5, 4))}
    ours = bench.aggregate(scores, reps=300, seed=3)
    library, metrics = bench.rliable_modules()
    for i, (metric, func) in enumerate([("mean", metrics.aggregate_mean), ("median", metrics.aggregate_median),
                                        ("iqm", metrics.aggregate_iqm)]):
        for agent in scores:
            np.random.seed(3)  # rliable resamples with numpy's global RNG; each agent's from the seed
            points, intervals = library.get_interval_estimates({agent: scores[agent]},
                                                               lambda x, func=func: np.array([func(x)]), reps=300)
            point, low, high = ours[agent][metric]
            assert point == pytest.approx(points[agent][0])
            assert low <= point <= high
            assert (low, high) == pytest.approx((intervals[agent][0, 0], intervals[agent][1, 0]))  # same resamples
    a = scores["a"]
    assert ours["a"]["mean"][0] == pytest.approx(a.mean(axis=0).mean())
    assert ours["a"]["median"][0] == pytest.approx(np.median(a.mean(axis=0)))
    assert bench.aggregate(scores, reps=300, seed=3) == ours  # reproducible


def test_an_agents_intervals_do_not_depend_on_the_other_agents_in_the_report():
    rng = np.random.default_rng(1)
    drq = rng.uniform(0, 1, (5, 3))
    alone = bench.aggregate({"drq": drq}, reps=200)
    assert bench.aggregate({"curl": rng.uniform(0, 1, (4, 3)), "drq": drq}, reps=200)["drq"] == alone["drq"]


def test_iqm_by_hand():
    scores = np.array([[0.0, 10.0], [1.0, 9.0], [2.0, 8.0], [3.0, 100.0]])
    # 8 scores sorted: 0 1 2 3 8 9 10 100; the middle half is 2 3 8 9
    assert bench.aggregate({"x": scores}, reps=50)["x"]["iqm"][0] == pytest.approx(5.5)


def test_human_normalised_score_by_hand():
    assert bench.human_normalized(-20.7, "Pong") == pytest.approx(0.0)
    assert bench.human_normalized(14.6, "Pong") == pytest.approx(1.0)
    assert bench.human_normalized(0.0, "Pong") == pytest.approx(20.7 / 35.3)
    assert bench.normalize("atari", "atari:Breakout", 30.5) == pytest.approx(1.0)
    assert bench.normalize("dmc", "dmc:walker-walk", 750.0) == pytest.approx(0.75)


def test_atari_reference_covers_the_26_games():
    table = bench.atari_random_human()
    assert list(table) == list(ATARI_100K_GAMES) and len(table) == 26
    for game in table:
        envs.check_env_id(f"atari:{game}")
    assert bench.load_spec("atari100k").tasks == [f"atari:{game}" for game in ATARI_100K_GAMES]


def test_reference_copies_keep_their_sources():
    for name in ("dmc_published.csv", "atari100k_random_human.csv"):
        assert (bench.REFERENCE_DIR / name).read_text().startswith("# ")


# -- published numbers -------------------------------------------------------------------------

def test_published_names_map_to_env_ids():
    assert bench.published_task("dmc:cartpole-swingup") == "cartpole_swingup"
    assert bench.published_task("dmc:ball_in_cup-catch") == "ball_in_cup_catch"
    assert bench.published_task("dmc-state:cartpole-swingup") is None  # the tables are from pixels
    assert bench.env_id_of_published("ball_in_cup_catch") == "dmc:ball_in_cup-catch"
    published = bench.dmc_published()
    assert published[("CURL", "dmc:cartpole-swingup", 100_000)] == (582.0, 146.0)
    assert published[("DrQ", "dmc:walker-walk", 500_000)] == (921.0, 45.0)
    assert {task for _, task, _ in published} == set(bench.load_spec("dmc100k").tasks)


# -- scores at a budget and the per-task table ---------------------------------------------------

def test_score_at_takes_the_last_row_at_or_below_the_budget():
    frames, returns = np.array([10_000.0, 50_000, 90_000, 100_003]), np.array([1.0, 2, 3, 4])
    assert bench.score_at(frames, returns, 100_000) == 4  # the agent step that crossed the budget
    assert bench.score_at(frames, returns, 95_000) == 3
    assert bench.score_at(frames, returns, 200_000) is None  # not reached
    assert bench.score_at(np.array([90_000.0, 110_000]), np.array([1.0, 2]), 100_000) == 1


def synthetic_runs(out):
    """drq: 3 seeds on two tasks; sac: seed 2 of walker stopped at 60k frames."""
    for seed in range(3):
        for task, base in (("dmc:cartpole-swingup", 700), ("dmc:walker-walk", 500)):
            write_eval(bench.run_dir_of(out, "drq", task, seed),
                       [(50_000, 100), (100_000, base + 10 * seed), (150_000, 999)])
            rows = [(50_000, 50), (100_000, base / 2 + seed)]
            if task == "dmc:walker-walk" and seed == 2:
                rows = rows[:1] + [(60_000, 60)]
            write_eval(bench.run_dir_of(out, "sac", task, seed), rows)


def test_per_task_table_and_report_from_run_directories(tmp_path):
    out = tmp_path / "out"
    synthetic_runs(out)
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("dmc-state:cartpole-balance",
                                                                  "dmc:cartpole-swingup, dmc:walker-walk")
                                      .replace("frames: 2000", "frames: 500000")
                                      .replace("eval_every_frames: 1000", "eval_every_frames: 50000")
                                      .replace("report_frames: [1000, 2000]", "report_frames: [100000, 500000]")))
    tasks, agents = ["dmc:cartpole-swingup", "dmc:walker-walk"], ["drq", "sac"]
    curves, _ = bench.collect(out, agents, tasks, [0, 1, 2])
    rows = bench.per_task_rows("dmc", curves, agents, tasks, [100_000])
    by_key = {(r["agent"], r["task"]): r for r in rows}
    drq = by_key[("drq", "dmc:cartpole-swingup")]
    assert drq["seeds"] == 3 and drq["mean"] == pytest.approx(710) and drq["std"] == pytest.approx(np.std([700, 710, 720]))
    assert (drq["DrQ_published_mean"], drq["DrQ_published_std"]) == (759.0, 92.0)
    assert (drq["CURL_published_mean"], drq["CURL_published_std"]) == (582.0, 146.0)
    sac_walker = by_key[("sac", "dmc:walker-walk")]
    assert sac_walker["seeds"] == 2 and sac_walker["mean"] == pytest.approx(250.5)  # seed 2 never reached 100k

    matrices, missing, _ = bench.score_matrices("dmc", curves, agents, tasks, 100_000)
    np.testing.assert_allclose(matrices["drq"], np.array([[700, 500], [710, 510], [720, 520]]) / 1000)
    assert matrices["sac"].shape == (2, 2) and not missing  # seeds common to both tasks

    path = bench.report(spec, out, agents, tasks, [0, 1, 2], frames=150_000, reps=200)
    text = path.read_text()
    assert "| dmc:cartpole-swingup | 100000 | drq | 710.0 ± 8.2 | 3 | 582 ± 146 | 759 ± 92 |" in text
    aggregates = read_csv(out / "report" / "aggregates.csv")
    assert {(r["agent"], r["metric"]) for r in aggregates} == {(a, m) for a in agents for m in bench.METRICS}
    drq_mean = next(r for r in aggregates if r["agent"] == "drq" and r["metric"] == "mean")
    assert float(drq_mean["value"]) == pytest.approx(0.61)
    # 2 tasks x 2 agents at 100k and at the budget run, 150k (500k > budget)
    assert {int(r["frames"]) for r in read_csv(out / "report" / "per_task.csv")} == {100_000, 150_000}
    assert len(read_csv(out / "report" / "per_task.csv")) == 8
    for task in tasks:
        png = out / "report" / "plots" / f"{bench.task_dir(task)}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_seed_short_on_every_task_or_never_run_is_named_under_missing(tmp_path):
    out = tmp_path / "out"
    tasks = ["dmc:cartpole-swingup", "dmc:walker-walk"]
    for task in tasks:
        write_eval(bench.run_dir_of(out, "drq", task, 0), [(100_000, 700)])
        write_eval(bench.run_dir_of(out, "drq", task, 1), [(50_000, 100)])  # crashed before the budget on both
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("dmc-state:cartpole-balance", ", ".join(tasks))
                                      .replace("frames: 2000", "frames: 100000")
                                      .replace("eval_every_frames: 1000", "eval_every_frames: 50000")
                                      .replace("report_frames: [1000, 2000]", "report_frames: [100000]")))
    curves, _ = bench.collect(out, ["drq"], tasks, [0, 1, 2])
    matrices, _, dropped = bench.score_matrices("dmc", curves, ["drq"], tasks, 100_000, seeds=[0, 1, 2])
    assert matrices["drq"].shape == (1, 2) and dropped == {"drq": {1: tasks, 2: tasks}}
    text = bench.report(spec, out, ["drq"], tasks, [0, 1, 2], frames=100_000, reps=50).read_text()
    assert "drq at 100000 frames: seeds 1, 2 left out of the aggregates, no finite score at this budget on " \
           "any task" in text


def test_a_run_whose_checkpoints_do_not_load_is_refused_with_what_to_do(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY_SPEC)
    out = tmp_path / "out"
    argv = ["bench", str(spec), "--agents", "sac", "--seeds", "1", "--out", str(out), "--reps", "50"]
    assert cli.main(argv) == 0
    run_dir = out / "sac" / "dmc-state_cartpole-balance" / "seed_0"
    (run_dir / "checkpoints" / "ckpt_000000001000.pt").unlink()
    newest = run_dir / "checkpoints" / "ckpt_000000002000.pt"
    newest.write_bytes(newest.read_bytes()[:5000])  # damaged outside crl (a partial copy)
    write_eval(run_dir, [(1000, 1.0)])
    outcome, = bench.run_all(bench.plan(bench.load_spec(spec), ["sac"], [0], out))
    assert outcome["status"] == "failed" and "cannot be resumed" in outcome["error"]
    assert "delete the directory" in outcome["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_an_agent_missing_a_task_is_not_aggregated(tmp_path):
    out = tmp_path / "out"
    write_eval(bench.run_dir_of(out, "drq", "dmc:walker-walk", 0), [(100_000, 300)])
    curves, _ = bench.collect(out, ["drq"], ["dmc:walker-walk", "dmc:cheetah-run"], [0])
    matrices, missing, _ = bench.score_matrices("dmc", curves, ["drq"], ["dmc:walker-walk", "dmc:cheetah-run"], 100_000)
    assert not matrices and missing == {"drq": ["dmc:cheetah-run"]}


# -- specs -------------------------------------------------------------------------------------

def test_shipped_specs_load():
    for name in ("dmc100k", "dmc500k", "atari100k"):
        spec = bench.load_spec(name)
        assert spec.name == name and spec.preset == name
    assert bench.load_spec("dmc500k").report_frames == [100_000, 500_000]
    assert bench.load_spec("atari100k").frames == 400_000


@pytest.mark.parametrize("name", ["dmc100k", "dmc500k"])
def test_dmc_specs_run_cheetah_at_the_papers_learning_rate(tmp_path, name):
    runs = bench.plan(bench.load_spec(name), ["drq", "curl"], [0], tmp_path)
    rates = {(run.agent, run.task): run.agent_config.lr if run.agent == "drq" else run.agent_config.critic_lr
             for run in runs}
    assert {key: lr for key, lr in rates.items() if lr != 1e-3} == {("drq", "dmc:cheetah-run"): 2e-4,
                                                                   ("curl", "dmc:cheetah-run"): 2e-4}


def test_atari100k_spec_lowers_curls_loss_weight_on_four_games(tmp_path):
    spec = bench.load_spec("atari100k")
    low = {"atari:Pong", "atari:Freeway", "atari:Boxing", "atari:PrivateEye"}
    assert spec.task_overrides == {"curl-rainbow": {task: {"curl_coef": 0.05} for task in low}}
    runs = bench.plan(spec, ["curl-rainbow", "drq-eps"], [0], tmp_path)
    coefs = {r.task: r.agent_config.curl_coef for r in runs if r.agent == "curl-rainbow"}
    assert {task for task, coef in coefs.items() if coef == 0.05} == low
    assert {coef for task, coef in coefs.items() if task not in low} == {1.0}
    low_curl_preset = train.build_configs("curl-rainbow", "atari100k-low-curl", {})[1]
    assert low_curl_preset.curl_coef == 0.05  # the same value as the preset


@pytest.mark.parametrize("edit, message", [
    (lambda s: s + "budget: 5\n", "key 'budget' is not a spec key"),
    (lambda s: s.replace("suite: dmc", "suite: mujoco"), "key 'suite' must be one of"),
    (lambda s: s.replace("dmc-state:cartpole-balance", "atari:Pong"), "key 'tasks' holds 'atari:Pong'"),
    (lambda s: s.replace("dmc-state:cartpole-balance", "dmc:cartpole-balanse"), "key 'tasks' unknown dmc"),
    (lambda s: s.replace("frames: 2000", "frames: -5"), "key 'frames' must be a positive integer"),
    (lambda s: s.replace("seed_frames", "seed_frame"), "key 'run' holds unknown run field 'seed_frame'"),
    (lambda s: s.replace("  sac:", "  sacc:"), "key 'overrides' names unknown agent 'sacc'"),
    (lambda s: s.replace("seed_frames: 500", "frames: 500"), "key 'run' holds 'frames', which the spec sets"),
    (lambda s: s.replace("preset: null", "presets: {sac: [cpu-smoke]}"), "key 'presets' for 'sac' must be"),
    (lambda s: s.replace("suite: dmc\n", ""), "key 'suite' is missing"),
    (lambda s: s + "task_overrides: {sacc: {dmc-state:cartpole-balance: {actor_lr: 0.1}}}\n",
     "key 'task_overrides' names unknown agent 'sacc'"),
    (lambda s: s + "task_overrides: {sac: {dmc-state:cartpole-swingup: {actor_lr: 0.1}}}\n",
     "'dmc-state:cartpole-swingup' is not a task of the spec; tasks: dmc-state:cartpole-balance"),
    (lambda s: s + "task_overrides: {sac: {dmc-state:cartpole-balance: {actor_lrr: 0.1}}}\n",
     "key 'task_overrides' for 'sac' on 'dmc-state:cartpole-balance': unknown config field 'actor_lrr'.*"
     "Did you mean actor_lr"),
    (lambda s: s + "task_overrides: {sac: {dmc-state:cartpole-balance: {seed: 3}}}\n",
     "holds 'seed', which the spec sets itself"),
    (lambda s: s + "task_overrides: {sac: {dmc-state:cartpole-balance: 0.1}}\n",
     "for 'sac' on 'dmc-state:cartpole-balance' must be a mapping"),
    (lambda s: s.replace("report_frames: [1000, 2000]", "report_frames: [5000]"),
     "key 'report_frames' holds 5000, beyond the spec's budget of 2000 frames"),
    (lambda s: s.replace("report_frames: [1000, 2000]", "report_frames: [1500, 2000]"),
     r"key 'report_frames' holds 1500, which is not a multiple of eval_every_frames \(1000\)"),
    (lambda s: s + "seeds: 3\n", r"(?s)not valid YAML.*found the key 'seeds' twice"),
    (lambda s: s.replace("  sac: {", "  sac: {batch_size: 8, "), r"(?s)not valid YAML.*found the key 'batch_size' twice"),
])
def test_spec_errors_name_the_file_and_key(tmp_path, edit, message):
    path = write_spec(tmp_path, edit(TINY_SPEC))
    with pytest.raises(bench.SpecError, match=message) as error:
        bench.load_spec(path)
    assert str(path) in str(error.value)


def test_unknown_spec_name_lists_the_specs():
    with pytest.raises(bench.SpecError, match="dmc100k, dmc500k"):
        bench.load_spec("dmc1OOk")


def test_plan_layers_preset_spec_overrides_and_frames(tmp_path):
    runs = bench.plan(bench.load_spec("dmc100k"), ["sac"], [0, 1], tmp_path, tasks=["dmc:walker-walk"])
    assert [(r.run.env, r.run.seed, r.run.frames, r.run.eval_every_frames) for r in runs] == [
        ("dmc:walker-walk", 0, 100_000, 10_000), ("dmc:walker-walk", 1, 100_000, 10_000)]
    assert runs[1].run_dir == tmp_path / "sac" / "dmc_walker-walk" / "seed_1"
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    (run,) = bench.plan(spec, ["sac"], [0], tmp_path, frames=3000)
    assert run.run.frames == 3000 and run.run.seed_frames == 500 and run.agent_config.hidden_dims == (32, 32)
    with pytest.raises(bench.SpecError, match="unknown preset 'atari100k' for agent 'sac'"):
        bench.plan(bench.load_spec("atari100k"), ["sac"], [0], tmp_path)


TWO_TASK_SPEC = TINY_SPEC.replace("[dmc-state:cartpole-balance]", "[dmc-state:cartpole-balance, dmc-state:cartpole-swingup]") + """\
task_overrides:
  sac:
    dmc-state:cartpole-swingup: {actor_lr: 0.0005, batch_size: 16}
"""


def test_task_overrides_reach_only_their_tasks_runs(tmp_path, capsys):
    spec = write_spec(tmp_path, TWO_TASK_SPEC)
    assert bench.load_spec(spec).task_overrides == {"sac": {"dmc-state:cartpole-swingup": {"actor_lr": 0.0005,
                                                                                           "batch_size": 16}}}
    out = tmp_path / "out"
    assert cli.main(["bench", str(spec), "--agents", "sac", "--seeds", "1", "--frames", "1000", "--out", str(out),
                     "--reps", "100"]) == 0
    overridden = read_config(out / "sac" / "dmc-state_cartpole-swingup" / "seed_0")["agent_config"]
    other = read_config(out / "sac" / "dmc-state_cartpole-balance" / "seed_0")["agent_config"]
    assert (overridden["actor_lr"], overridden["batch_size"]) == (0.0005, 16)
    assert (other["actor_lr"], other["batch_size"]) == (1e-3, 32)  # sac's default; the spec's `overrides`
    assert other["hidden_dims"] == overridden["hidden_dims"] == [32, 32]  # per-agent overrides still apply
    assert "sac on dmc-state:cartpole-swingup: actor_lr=0.0005, batch_size=16" in (out / "report" / "report.md").read_text()

    # a finished run is skipped with the config it was made with, and says that it differs from the spec's
    capsys.readouterr()
    changed = write_spec(tmp_path, TWO_TASK_SPEC.replace("actor_lr: 0.0005", "actor_lr: 0.002"), name="changed")
    runs = bench.plan(bench.load_spec(changed), ["sac"], [0], out, frames=1000)
    assert [o["status"] for o in bench.run_all(runs)] == ["skipped", "skipped"]
    err = capsys.readouterr().err
    assert "cartpole-swingup/seed_0 keeps the agent config it was made with" in err and "actor_lr: 0.0005 -> 0.002" in err
    assert "cartpole-balance/seed_0 keeps" not in err


def test_bench_module_knows_no_agent_by_name():
    source = Path(bench.__file__).read_text()
    assert "crl.agents" not in source and "import agents" not in source


# -- running: skip, resume, restart; the command end to end --------------------------------------

def test_cli_runs_skips_resumes_restarts_and_reports(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, TINY_SPEC)
    out = tmp_path / "out"
    argv = ["bench", str(spec), "--agents", "sac", "--seeds", "1", "--out", str(out), "--reps", "100"]
    assert cli.main(argv) == 0
    run_dir = out / "sac" / "dmc-state_cartpole-balance" / "seed_0"
    assert [int(r["frames"]) for r in read_csv(run_dir / "eval.csv")] == [1000, 2000]
    for name in ("report.md", "per_task.csv", "aggregates.csv", "plots/dmc-state_cartpole-balance.png"):
        assert (out / "report" / name).is_file()
    assert "runs: 1 trained" in capsys.readouterr().out

    runs = bench.plan(bench.load_spec(spec), ["sac"], [0], out)
    assert [o["status"] for o in bench.run_all(runs)] == ["skipped"]

    # a crash after the checkpoint at 1000 frames: the 2000-frame checkpoint and eval row are gone
    (run_dir / "checkpoints" / "ckpt_000000002000.pt").unlink()
    write_eval(run_dir, [(1000, 1.0)])
    resumed = []
    real_resume = train.resume
    monkeypatch.setattr(train, "resume", lambda *a, **k: resumed.append(k) or real_resume(*a, **k))
    assert bench.run_state(run_dir, 2000) == "resume"
    assert [o["status"] for o in bench.run_all(runs)] == ["resumed"] and len(resumed) == 1
    assert resumed[0]["agent"] == "sac" and resumed[0]["overrides"]["frames"] == 2000
    assert set(bench.RUN_FIELDS_FREE_TO_DIFFER) <= train.RESUMABLE_FIELDS  # a resume may take them all
    rows = read_csv(run_dir / "eval.csv")
    assert [int(r["frames"]) for r in rows] == [1000, 2000] and rows[0]["episode_return"] == "1.0"

    # a crash with no checkpoint: the run starts again
    for checkpoint in (run_dir / "checkpoints").iterdir():
        checkpoint.unlink()
    write_eval(run_dir, [(1000, 1.0)])
    assert bench.run_state(run_dir, 2000) == "restart"
    assert [o["status"] for o in bench.run_all(runs)] == ["restarted"] and len(resumed) == 1
    assert [int(r["frames"]) for r in read_csv(run_dir / "eval.csv")] == [1000, 2000]

    capsys.readouterr()
    assert cli.main(["bench", str(spec), "--out", str(out), "--report-only", "--reps", "100"]) == 0
    assert "report:" in capsys.readouterr().out


def test_cli_spec_error_is_plain(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY_SPEC + "budget: 5\n")
    assert cli.main(["bench", str(spec), "--agents", "sac"]) == 2
    err = capsys.readouterr().err
    assert "budget" in err and str(spec) in err and "Traceback" not in err


def test_a_failing_run_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    runs = bench.plan(spec, ["sac"], [0, 1], tmp_path / "out")
    calls = []

    def fake_execute(run):
        calls.append(run.seed)
        if run.seed == 0:
            raise RuntimeError("boom")
        return "trained"

    monkeypatch.setattr(bench, "execute", fake_execute)
    outcomes = bench.run_all(runs)
    assert calls == [0, 1] and [o["status"] for o in outcomes] == ["failed", "trained"]
    assert "boom" in outcomes[0]["error"]


def test_the_sweep_stops_after_an_accelerator_error(tmp_path, monkeypatch, capsys):
    import torch

    runs = bench.plan(bench.load_spec(write_spec(tmp_path, TINY_SPEC)), ["sac"], [0, 1, 2], tmp_path / "out")
    calls = []

    def fake_execute(run):
        calls.append(run.seed)
        if run.seed == 1:  # CUDA's context is unusable after e.g. a device-side assert
            raise torch.AcceleratorError("CUDA error: device-side assert triggered")
        return "trained"

    monkeypatch.setattr(bench, "execute", fake_execute)
    assert [o["status"] for o in bench.run_all(runs)] == ["trained", "failed"] and calls == [0, 1]
    assert "run the same command again to go on" in capsys.readouterr().err


def test_atari_table_and_aggregate_use_human_normalised_scores(tmp_path):
    out = tmp_path / "out"
    for seed, score in enumerate((-20.7, 14.6)):
        write_eval(bench.run_dir_of(out, "sb3-dqn", "atari:Pong", seed), [(400_002, score)])
    curves, _ = bench.collect(out, ["sb3-dqn"], ["atari:Pong"], [0, 1])
    (row,) = bench.per_task_rows("atari", curves, ["sb3-dqn"], ["atari:Pong"], [400_000])
    assert row["seeds"] == 2 and row["normalized_mean"] == pytest.approx(0.5)
    assert (row["random"], row["human"]) == (-20.7, 14.6)
    matrices, _, _ = bench.score_matrices("atari", curves, ["sb3-dqn"], ["atari:Pong"], 400_000)
    np.testing.assert_allclose(matrices["sb3-dqn"], [[0.0], [1.0]], atol=1e-12)
    assert "| atari:Pong | 400000 | sb3-dqn | -3.0 ± 17.6 | 2 | 0.500 | -20.7 | 14.6 |" in bench.per_task_markdown("atari", [row])
    path = bench.report(bench.load_spec("atari100k"), out, ["sb3-dqn"], ["atari:Pong"], [0, 1], frames=400_000, reps=100)
    assert "| sb3-dqn | 400000 | iqm | 0.500 |" in path.read_text()
    assert (out / "report" / "plots" / "atari_Pong.png").is_file()


# -- review fixes ------------------------------------------------------------------------------

def made_with(run, **changes):
    """A finished run directory of `run` whose config.yaml records `changes` to its run settings."""
    from crl.config import to_dict
    from crl.logger import write_config

    write_eval(run.run_dir, [(run.run.frames, 1.0)])
    write_config(run.run_dir, {"agent": run.agent, "run": {**to_dict(run.run), **changes},
                               "agent_config": to_dict(run.agent_config)})


def test_a_run_made_with_other_run_settings_is_refused_not_skipped_or_resumed(tmp_path, monkeypatch):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    same, changed, resumable = bench.plan(spec, ["sac"], [0, 1, 2], tmp_path / "out")
    made_with(same, frames=1000, device="cpu", checkpoint_every_frames=500)  # free to differ
    made_with(changed, eval_episodes=3, image_size=64, visuals="fast")
    made_with(resumable, action_repeat=4)
    write_eval(resumable.run_dir, [(1000, 1.0)])
    (resumable.run_dir / "checkpoints").mkdir()
    (resumable.run_dir / "checkpoints" / "ckpt_000000001000.pt").write_bytes(b"")
    assert bench.run_state(resumable.run_dir, 2000) == "resume"
    monkeypatch.setattr(train, "resume", lambda *a, **k: pytest.fail("resumed a run made with other settings"))
    outcomes = bench.run_all([same, changed, resumable])
    assert [o["status"] for o in outcomes] == ["skipped", "failed", "failed"]
    assert str(changed.run_dir) in outcomes[1]["error"]
    for difference in ("eval_episodes: 3 -> 1", "image_size: 64 -> 84", "visuals: 'fast' -> 'standard'"):
        assert difference in outcomes[1]["error"]
    assert "action_repeat: 4 -> 0" in outcomes[2]["error"] and "frames" not in outcomes[2]["error"]


def test_a_run_made_with_other_run_settings_is_left_out_of_the_report(tmp_path, capsys):
    spec_path = write_spec(tmp_path, TINY_SPEC)
    same, changed = bench.plan(bench.load_spec(spec_path), ["sac"], [0, 1], tmp_path / "out")
    made_with(same)
    write_eval(same.run_dir, [(1000, 100.0), (2000, 200.0)])
    made_with(changed, eval_episodes=100)
    write_eval(changed.run_dir, [(1000, 900.0), (2000, 900.0)])
    argv = ["bench", str(spec_path), "--out", str(tmp_path / "out"), "--report-only", "--seeds", "2", "--reps", "100"]
    assert cli.main(argv) == 0
    (row,) = [r for r in read_csv(tmp_path / "out" / "report" / "per_task.csv") if r["frames"] == "2000"]
    assert (row["seeds"], float(row["mean"])) == ("1", 200.0)
    missing = (tmp_path / "out" / "report" / "report.md").read_text().split("## Missing", 1)[1]
    assert ("sac on dmc-state:cartpole-balance seed 1: left out, made with other run settings than the spec's "
            "(eval_episodes: 100 -> 1)") in missing


@pytest.mark.parametrize("cell", ["", "abc"])
def test_an_eval_row_whose_return_is_not_a_number_is_unreadable_not_diverged(tmp_path, cell):
    run_dir = tmp_path / "run"
    write_eval(run_dir, [(1000, cell)])
    with pytest.raises(bench.UnreadableEval, match=rf"eval.csv: the row at 1000 frames has episode_return '{cell}'"):
        bench.eval_rows(run_dir)
    (run_dir / "eval.csv").write_text("frames,episode_return\n1000,1\x00\n")
    with pytest.raises(bench.UnreadableEval, match="NUL bytes"):
        bench.eval_rows(run_dir)


def test_a_nan_final_eval_is_done_and_reported_as_diverged(tmp_path):
    out = tmp_path / "out"
    tasks = ["dmc:cartpole-balance", "dmc:walker-walk"]
    for seed in (0, 1):
        write_eval(bench.run_dir_of(out, "drq", tasks[1], seed), [(800, 100.0 + seed)])
    write_eval(bench.run_dir_of(out, "drq", tasks[0], 0), [(400, 300.0), (800, float("nan"))])
    write_eval(bench.run_dir_of(out, "drq", tasks[0], 1), [(400, 300.0), (800, 900.0)])
    assert bench.run_state(bench.run_dir_of(out, "drq", tasks[0], 0), 800) == "done"

    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("[dmc-state:cartpole-balance]", f"[{', '.join(tasks)}]")))
    text = bench.report(spec, out, ["drq"], tasks, [0, 1], frames=800, reps=100).read_text()
    assert "| dmc:cartpole-balance | 800 | drq | 900.0 ± 0.0; diverged: seed 0 | 1 |" in text
    missing = text.split("## Missing", 1)[1]
    assert "drq on dmc:cartpole-balance seed 0 at 800 frames: diverged" in missing
    assert "drq at 800 frames: seed 0 left out of the aggregates, no finite score at this budget on dmc:cartpole-balance" in missing
    (row,) = [r for r in read_csv(out / "report" / "per_task.csv") if r["task"] == tasks[0]]
    assert (row["seeds"], row["diverged_seeds"]) == ("1", "0")


def test_an_unreadable_eval_csv_is_named_and_the_other_runs_reported(tmp_path, capsys):
    out = tmp_path / "out"
    spec = write_spec(tmp_path, TINY_SPEC.replace("dmc-state:cartpole-balance", "dmc:walker-walk")
                      .replace("report_frames: [1000, 2000]", "report_frames: [1000]"))
    good, _ = bench.plan(bench.load_spec(spec), ["drq"], [0, 1], out)
    made_with(good)
    write_eval(good.run_dir, [(1000, 100.0)])
    garbage = bench.run_dir_of(out, "drq", "dmc:walker-walk", 1) / "eval.csv"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(bench.UnreadableEval, match=str(garbage)):
        bench.eval_rows(garbage.parent)
    assert cli.main(["bench", str(spec), "--out", str(out), "--report-only", "--seeds", "2", "--reps", "100"]) == 0
    text = (out / "report" / "report.md").read_text()
    assert "| dmc:walker-walk | 1000 | drq | 100.0 ± 0.0 | 1 |" in text
    assert f"drq on dmc:walker-walk seed 1: left out, unreadable: {garbage}" in text.split("## Missing", 1)[1]


def test_an_eval_csv_that_is_a_directory_is_named_in_the_report_and_fails_its_run(tmp_path):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    (run,) = bench.plan(spec, ["sac"], [0], tmp_path / "out")
    (run.run_dir / "eval.csv").mkdir(parents=True)
    curves, unreadable = bench.collect(tmp_path / "out", ["sac"], [run.task], [0])
    assert curves == {} and unreadable == [f"sac on {run.task} seed 0: left out, unreadable: "
                                           f"{run.run_dir / 'eval.csv'} is not a file (a directory?): "
                                           "move it away to run or report this run"]
    (outcome,) = bench.run_all([run])
    assert outcome["status"] == "failed" and f"{run.run_dir / 'eval.csv'} is not a file" in outcome["error"]
    assert (run.run_dir / "eval.csv").is_dir()  # nothing of it was touched


def test_an_atari_game_without_reference_scores_is_rejected(tmp_path):
    spec = write_spec(tmp_path, "suite: atari\ntasks: [atari:Pong, atari:Tetris]\nframes: 1000\n")
    with pytest.raises(bench.SpecError, match=r"key 'tasks' holds 'atari:Tetris', whose game 'Tetris' is not in "
                                              r".*atari100k_random_human.csv.*games: Alien, Amidar") as error:
        bench.load_spec(spec)
    assert str(spec) in str(error.value)
    with pytest.raises(bench.SpecError, match=r"--tasks: 'atari:Tetris' is not a task of spec .*atari100k.yaml"):
        bench.command("atari100k", agents="sb3-dqn", tasks="atari:Pong,atari:Tetris", out=str(tmp_path / "out"))


def test_duplicate_tasks_and_agents_are_rejected(tmp_path):
    spec = write_spec(tmp_path, TINY_SPEC.replace("[dmc-state:cartpole-balance]",
                                                  "[dmc-state:cartpole-balance, dmc-state:cartpole-balance]"))
    with pytest.raises(bench.SpecError, match=f"spec {spec}: key 'tasks' lists dmc-state:cartpole-balance more than once"):
        bench.load_spec(spec)
    ok = write_spec(tmp_path, TINY_SPEC, name="ok")
    with pytest.raises(bench.SpecError, match="--tasks lists dmc-state:cartpole-balance more than once"):
        bench.command(str(ok), agents="sac", tasks="dmc-state:cartpole-balance,dmc-state:cartpole-balance",
                      out=str(tmp_path / "out"))
    with pytest.raises(bench.SpecError, match="--agents lists sac more than once"):
        bench.command(str(ok), agents="sac,sac", out=str(tmp_path / "out"))


@pytest.mark.parametrize("override, message", [
    ("{frames: 400}", "for 'sac' holds 'frames', which the spec sets itself"),
    ("{eval_every_frames: 0}", "for 'sac' holds 'eval_every_frames', which the spec sets itself"),
    ("{seed: 7}", "for 'sac' holds 'seed', which the spec sets itself"),
    ("{env: 'dmc:walker-walk'}", "for 'sac' holds 'env', which the spec sets itself"),
    ("{actor_lrr: 0.1}", "for 'sac': unknown config field 'actor_lrr'.*Did you mean actor_lr"),
])
def test_overrides_get_the_checks_of_run_and_task_overrides(tmp_path, override, message):
    path = write_spec(tmp_path, TINY_SPEC.replace("{hidden_dims: [32, 32], batch_size: 32}", override))
    with pytest.raises(bench.SpecError, match=f"key 'overrides' {message}") as error:
        bench.load_spec(path)
    assert str(path) in str(error.value)
    allowed = write_spec(tmp_path, TINY_SPEC.replace("batch_size: 32", "batch_size: 32, seed_frames: 300"), name="ok")
    (run,) = bench.plan(bench.load_spec(allowed), ["sac"], [0], tmp_path / "out")
    assert (run.run.seed_frames, run.run.frames, run.run.seed) == (300, 2000, 0)


@pytest.mark.parametrize("flag, value", [("frames", 0), ("frames", -1), ("seeds", 0), ("seeds", -2),
                                         ("reps", 0), ("reps", -5)])
def test_bench_flags_must_be_positive(tmp_path, capsys, flag, value):
    spec = write_spec(tmp_path, TINY_SPEC)
    out = tmp_path / "out"
    assert cli.main(["bench", str(spec), "--agents", "sac", "--out", str(out), f"--{flag}", str(value)]) == 2
    assert f"--{flag} must be a positive integer, got {value}" in capsys.readouterr().err
    assert not out.exists()  # nothing ran


def test_report_frames_reject_booleans(tmp_path):
    path = write_spec(tmp_path, TINY_SPEC.replace("report_frames: [1000, 2000]", "report_frames: [true]"))
    with pytest.raises(bench.SpecError, match=r"key 'report_frames' must be a list of positive integers, got \[True\]"):
        bench.load_spec(path)


def test_a_missing_preset_key_is_named_in_the_unknown_preset_error(tmp_path):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("preset: null\n", ""), name="ok"))
    with pytest.raises(bench.SpecError, match=f"spec {spec.path} has no 'preset' key, so every agent takes the preset "
                                              "named after the file.*unknown preset 'ok' for agent 'sac'"):
        bench.plan(spec, ["sac"], [0], tmp_path / "out")
    named = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("preset: null", "presets: {sac: nope}")))
    with pytest.raises(bench.SpecError, match=f"spec {named.path}: key 'presets' for 'sac': unknown preset 'nope'"):
        bench.plan(named, ["sac"], [0], tmp_path / "out")


def test_a_cut_short_last_eval_row_does_not_make_a_run_done(tmp_path):
    run_dir = tmp_path / "run"
    write_eval(run_dir, [(400, 299.4712)])
    with open(run_dir / "eval.csv", "a", newline="") as f:
        f.write("800,100,100,2.5,31")  # the crash came mid-row: 31 may be 310.25
    frames, returns = bench.eval_rows(run_dir)
    assert frames.tolist() == [400] and returns.tolist() == [299.4712]
    assert bench.run_state(run_dir, 800) == "restart"


# -- runs the report cannot check, vector envs, hostile specs -----------------------------------

def test_the_budget_row_of_a_vector_env_run_is_its_final_evaluation(tmp_path):
    # 6 envs at action repeat 8: each loop step is 48 frames, so the evaluations for 1000 and 2000
    # frames land at 1008 and 2016 frames
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("run: {", "run: {num_envs: 6, ")))
    (run,) = bench.plan(spec, ["sac"], [0], tmp_path / "out")
    made_with(run)
    write_eval(run.run_dir, [(1008, 21.5), (2016, 16.7)])
    assert 6 * bench.eval_table(run.run_dir)[2] == 48  # frames of one loop step of 6 envs
    curves, notes = bench.collect(tmp_path / "out", ["sac"], spec.tasks, [0], [run])
    assert notes == [] and curves[("sac", spec.tasks[0])][0].slack == 48
    assert bench.scores_at(curves, "sac", spec.tasks[0], 2000) == {0: 16.7}
    assert bench.scores_at(curves, "sac", spec.tasks[0], 1000) == {0: 21.5}
    assert bench.score_at(np.array([1008.0, 2016]), np.array([21.5, 16.7]), 2000) == 21.5  # one env's slack
    assert bench.earlier_evaluation_notes(curves, [1000, 2000]) == []


def test_a_budget_between_evaluations_is_reported_with_a_note(tmp_path):
    # `--frames 1500 --report-only` on runs evaluated at 1000 and 2000: the 1000 row, said so
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    (run,) = bench.plan(spec, ["sac"], [0], tmp_path / "out")
    made_with(run)
    write_eval(run.run_dir, [(1000, 21.5), (2000, 16.7)])
    curves, _ = bench.collect(tmp_path / "out", ["sac"], spec.tasks, [0], [run])
    assert bench.scores_at(curves, "sac", spec.tasks[0], 1500) == {0: 21.5}
    assert bench.earlier_evaluation_notes(curves, [1000, 1500, 2000]) == [
        "sac on dmc-state:cartpole-balance at 1500 frames: no evaluation at the budget; reported the last one "
        "before it (seed 0 at 1000 frames)"]


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "config.yaml").unlink(), "config.yaml is missing"),
    (lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text() + "  bad: [unclosed\n"),
     "config.yaml cannot be read"),
    (lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("agent: sac", "agent: drq")),
     "config.yaml records agent 'drq', not 'sac'"),
    (lambda d: (d / "config.yaml").write_text("agent: sac\nrun: 5\nagent_config: {}\n"), "'run' must be a mapping"),
])
def test_a_run_whose_config_cannot_be_checked_is_neither_kept_nor_reported(tmp_path, monkeypatch, damage, reason):
    spec_path = write_spec(tmp_path, TINY_SPEC)
    good, damaged = bench.plan(bench.load_spec(spec_path), ["sac"], [0, 1], tmp_path / "out")
    for run in (good, damaged):
        made_with(run)
    damage(damaged.run_dir)
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("ran again"))
    outcomes = bench.run_all([good, damaged])
    assert [o["status"] for o in outcomes] == ["skipped", "failed"]
    assert reason in outcomes[1]["error"] and "neither kept nor resumed" in outcomes[1]["error"]
    argv = ["bench", str(spec_path), "--out", str(tmp_path / "out"), "--report-only", "--seeds", "2", "--reps", "100"]
    assert cli.main(argv) == 0
    (row,) = [r for r in read_csv(tmp_path / "out" / "report" / "per_task.csv") if r["frames"] == "2000"]
    assert row["seeds"] == "1"
    missing = (tmp_path / "out" / "report" / "report.md").read_text().split("## Missing", 1)[1]
    assert "sac on dmc-state:cartpole-balance seed 1: left out" in missing and reason in missing


def test_a_run_made_with_another_agent_config_is_reported_with_a_note(tmp_path):
    from crl.config import to_dict
    from crl.logger import write_config

    spec_path = write_spec(tmp_path, TINY_SPEC)
    same, other = bench.plan(bench.load_spec(spec_path), ["sac"], [0, 1], tmp_path / "out")
    made_with(same)
    made_with(other)
    write_config(other.run_dir, {"agent": "sac", "run": to_dict(other.run),
                                 "agent_config": {**to_dict(other.agent_config), "gamma": 0.5}})
    assert cli.main(["bench", str(spec_path), "--out", str(tmp_path / "out"), "--report-only", "--seeds", "2",
                     "--reps", "100"]) == 0
    text = (tmp_path / "out" / "report" / "report.md").read_text()
    assert ("sac on dmc-state:cartpole-balance seed 1: reported, but made with another agent config than the spec "
            "gives (gamma: 0.5 -> 0.99)") in text
    (row,) = [r for r in read_csv(tmp_path / "out" / "report" / "per_task.csv") if r["frames"] == "2000"]
    assert row["seeds"] == "2"


@pytest.mark.parametrize("text, message", [
    ("overrides: {sac: {1: 2}}", r"key 'overrides' for 'sac': unknown config field 1"),
    ("report_frames: [2000, 2000]", "key 'report_frames' lists 2000 more than once"),
])
def test_more_spec_errors_name_the_file_and_key(tmp_path, text, message):
    edited = TINY_SPEC.replace("report_frames: [1000, 2000]\n", "").replace(
        "overrides:\n  sac: {hidden_dims: [32, 32], batch_size: 32}\n", "") + text + "\n"
    path = write_spec(tmp_path, edited)
    with pytest.raises(bench.SpecError, match=message) as error:
        bench.load_spec(path)
    assert str(path) in str(error.value)


def test_a_spec_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"\xff\xfe\x00suite: dmc\n")
    with pytest.raises(bench.SpecError, match=f"spec {path} is not UTF-8 text"):
        bench.load_spec(path)


@pytest.mark.parametrize("run_values, message", [
    ("device: banana", "'device' must be auto, cpu, cuda"),
    ("visuals: bogus", "'visuals' must be one of standard, fast, got 'bogus'"),
])
def test_bad_run_values_fail_the_plan_naming_the_spec(tmp_path, run_values, message):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("run: {", f"run: {{{run_values}, ")))
    with pytest.raises(bench.SpecError, match=message) as error:
        bench.plan(spec, ["sac"], [0], tmp_path / "out")
    assert str(spec.path) in str(error.value)


def test_a_bad_precision_fails_the_plan(tmp_path):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC.replace("batch_size: 32}", "batch_size: 32, precision: half}")))
    with pytest.raises(bench.SpecError, match="'precision' must be one of float32, bfloat16, auto, got 'half'"):
        bench.plan(spec, ["sac"], [0], tmp_path / "out")


def test_out_that_is_a_file_and_tasks_outside_the_spec_are_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY_SPEC)
    for flags, message in ((["--out", str(spec)], f"--out {spec} is a file"),
                           (["--tasks", "dmc-state:cartpole-swingup"],
                            "--tasks: 'dmc-state:cartpole-swingup' is not a task of spec"),
                           (["--tasks", ","], "--tasks ',' names no task")):
        assert cli.main(["bench", str(spec), "--agents", "sac", *flags]) == 2
        assert message in capsys.readouterr().err


def test_one_run_per_task_reports_no_interval(tmp_path):
    spec = bench.load_spec(write_spec(tmp_path, TINY_SPEC))
    (run,) = bench.plan(spec, ["sac"], [0], tmp_path / "out")
    made_with(run)
    text = bench.report(spec, tmp_path / "out", ["sac"], spec.tasks, [0], 2000, reps=100, planned=[run]).read_text()
    assert "none (one run per task: the bootstrap has nothing to resample)" in text and "| 1 x 1 |" in text


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("CURL,finger_spin,2,100000,767,56", "CURL,finger_spinn,2,100000,767,56"),
     "data row 1 .*no dmc task is published as 'finger_spinn'"),
    (lambda t: t.replace("CURL,finger_spin,2,100000,767,56", "CURL,finger_spin,2,100000,,56"),
     "data row 1 .*mean, std must be numbers, got '', '56'"),
    (lambda t: t + "CURL,finger_spin,2,100000,1,1,again\n", r"data row 25 .*\('CURL', 'dmc:finger-spin', 100000\) is listed more than once"),
])
def test_an_edited_reference_table_names_its_file_and_row(tmp_path, monkeypatch, edit, message):
    import shutil

    copy = tmp_path / "reference"
    shutil.copytree(bench.REFERENCE_DIR, copy)
    table = copy / "dmc_published.csv"
    table.write_text(edit(table.read_text()))
    monkeypatch.setattr(bench, "REFERENCE_DIR", copy)
    with pytest.raises(ValueError, match=f"reference table {table}, {message}"):
        bench.dmc_published()
