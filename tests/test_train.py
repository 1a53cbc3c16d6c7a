"""The online loop: counters, logs, checkpoints, resume after a crash, `crl eval`."""

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crl import cli, train
from crl.checkpoint import HEADER_KEYS, CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint
from crl.config import ConfigError
from crl.cli import main
from crl.logger import read_config, write_config

ENV = "dmc-state:cartpole-swingup"  # 125 agent steps x repeat 8 = 1000 frames per episode
SMALL = dict(env=ENV, frames=6000, seed_frames=1000, eval_every_frames=2000, eval_episodes=1,
             checkpoint_every_frames=2000, keep_checkpoints=3, hidden_dims=(32, 32), batch_size=32,
             update_every=2)


def expected_updates(agent_steps):
    # learning starts once 1000 seed frames (125 agent steps) are in; then every 2nd agent step
    return len(range(126, agent_steps + 1, 2))


def configs(**extra):
    return train.build_configs("sac", None, {**SMALL, **extra})


class Crash(Exception):
    pass


def test_run_writes_logs_counters_and_checkpoints(tmp_path):
    run, agent = configs()
    result = train.train("sac", run, agent, tmp_path / "run")
    eval_rows = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(eval_rows.frames) == [2000, 4000, 6000]
    assert list(eval_rows.agent_steps) == [250, 500, 750]
    assert eval_rows.updates.iloc[-1] == expected_updates(750)
    train_rows = pd.read_csv(tmp_path / "run" / "train.csv")
    assert list(train_rows.frames) == [1000 * k for k in range(1, 7)]
    assert {"episode_return", "critic_loss", "actor_loss", "alpha", "fps"} <= set(train_rows.columns)
    # every row after learning starts carries the actor's latest metrics (the actor updates every
    # 2nd update; a row holding only the last update's would lack them half the time)
    assert train_rows[train_rows.updates > 0][["critic_loss", "actor_loss", "alpha"]].notna().all().all()
    assert result["frames"] == 6000
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == [f"ckpt_{f:012d}.pt" for f in (2000, 4000, 6000)]
    assert any((tmp_path / "run" / "tb").iterdir())
    with pytest.raises(FileExistsError, match="--resume"):
        train.train("sac", run, agent, tmp_path / "run")


def test_resume_after_crash_continues_the_same_curve(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run, agent = configs()
    original_step = train.OnlineTrainer.step

    def crashing_step(self, obs):
        if self.counters["frames"] >= 5000:
            raise Crash()
        return original_step(self, obs)

    monkeypatch.setattr(train.OnlineTrainer, "step", crashing_step)
    with pytest.raises(Crash):
        train.train("sac", run, agent, run_dir)
    monkeypatch.setattr(train.OnlineTrainer, "step", original_step)

    saved = load_checkpoint(run_dir / "checkpoints" / f"ckpt_{4000:012d}.pt")
    assert saved["counters"] == {"frames": 4000, "agent_steps": 500, "updates": expected_updates(500)}
    restored = []
    original_restore = train.OnlineTrainer.restore

    def spy_restore(self, payload):
        original_restore(self, payload)
        restored.append((dict(self.counters), self.replay.num_episodes, len(self.replay)))

    monkeypatch.setattr(train.OnlineTrainer, "restore", spy_restore)
    train.resume(run_dir)
    counters, num_episodes, num_transitions = restored[0]
    assert counters == saved["counters"]
    assert num_transitions == 500 and num_episodes >= 4  # every stored step came back

    eval_rows = pd.read_csv(run_dir / "eval.csv")
    assert list(eval_rows.frames) == [2000, 4000, 6000]  # no duplicate, no gap
    train_rows = pd.read_csv(run_dir / "train.csv")
    assert list(train_rows.frames) == [1000 * k for k in range(1, 7)]
    assert train_rows.wall_time.is_monotonic_increasing
    final = load_checkpoint(CheckpointManager(run_dir / "checkpoints").latest())
    assert final["counters"] == {"frames": 6000, "agent_steps": 750, "updates": expected_updates(750)}


def test_truncated_checkpoint_fails_clearly_and_previous_still_loads(tmp_path, capsys):
    run, agent = configs(frames=4000)
    train.train("sac", run, agent, tmp_path / "run")
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    latest = manager.latest()
    size = latest.stat().st_size
    with open(latest, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match=str(latest.name)):
        load_checkpoint(latest)
    with pytest.warns(RuntimeWarning):
        assert main(["eval", str(tmp_path / "run"), "--episodes", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["frames"] == 2000 and result["agent"] == "sac"
    assert main(["eval", str(latest)]) == 2
    assert latest.name in capsys.readouterr().err


def test_cli_train_eval_and_errors(tmp_path, capsys):
    logdir = tmp_path / "cli"
    args = ["train", "sac", "--env", ENV, "--frames", "2000", "--logdir", str(logdir), "--set",
            "seed_frames=1000", "eval_every_frames=2000", "eval_episodes=1", "hidden_dims=32,32", "batch_size=32"]
    assert main(args) == 0
    assert (logdir / "config.yaml").exists()
    capsys.readouterr()
    assert main(["eval", str(logdir), "--episodes", "1", "--video"]) == 0
    video = Path(json.loads(capsys.readouterr().out)["video"])
    assert video.parent == logdir / "videos" and video.stat().st_size > 0
    # a checkpoint file outside a run's checkpoints/ puts its video beside itself
    loose = tmp_path / "elsewhere" / "policy.pt"
    loose.parent.mkdir()
    shutil.copy(CheckpointManager(logdir / "checkpoints").latest(), loose)
    assert main(["eval", str(loose), "--episodes", "1", "--video"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["video"]).parent == loose.parent / "videos"
    assert main(["eval", str(logdir), "--episodes", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["eval", str(logdir), "--episodes", "1", "--device", "cuda"]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err
    loaded = train.load_agent(logdir, device="cpu")
    loaded.env.close()
    assert {p.device.type for m in loaded.agent.modules().values() for p in m.parameters()} == {"cpu"}
    assert main(["train", "sacc", "--env", ENV]) == 2
    assert "unknown agent" in capsys.readouterr().err
    assert main(["train", "sac", "--env", ENV, "--set", "hiden_dims=3"]) == 2
    assert "hidden_dims" in capsys.readouterr().err
    assert main(["train", "sac", "--resume", str(logdir), "--set", "batch_size=64"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", "sac", "--resume", str(tmp_path / "nothing")]) == 2
    # an ordinal is a device name train takes, as eval does (no machine has 100 GPUs)
    assert main(["train", "sac", "--env", ENV, "--device", "cuda:99", "--logdir", str(tmp_path / "gpu")]) == 2
    assert re.search(r"'cuda:99'.*torch sees", capsys.readouterr().err)
    assert main(["list", "presets"]) == 0
    assert "sac cpu-smoke" in capsys.readouterr().out


def random_dataset(episodes=4, seed=0):
    from crl import envs
    from crl.replay import EpisodeReplay

    env = envs.make(ENV)
    env.action_space.seed(seed)
    replay = EpisodeReplay(10_000, seed=seed)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        replay.add_first(obs)
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            replay.add(action, reward, obs, terminated, truncated)
            done = terminated or truncated
    return replay


def test_offline_loop_counts_updates_only_and_resumes(tmp_path):
    run, agent = configs(updates=60, eval_every_updates=20, keep_checkpoints=5)
    replay = random_dataset()
    train.train_offline("sac", run, agent, replay, tmp_path / "off")
    rows = pd.read_csv(tmp_path / "off" / "eval.csv")
    assert list(rows.updates) == [20, 40, 60]
    assert (rows.frames == 0).all() and (rows.agent_steps == 0).all()
    run_longer = train.build_configs("sac", None, {**SMALL, "updates": 80, "eval_every_updates": 20})[0]
    train.train_offline("sac", run_longer, agent, replay, tmp_path / "off")
    assert list(pd.read_csv(tmp_path / "off" / "eval.csv").updates) == [20, 40, 60, 80]
    with pytest.raises(ValueError, match="empty"):
        from crl.replay import EpisodeReplay

        train.train_offline("sac", run, agent, EpisodeReplay(100), tmp_path / "empty")


def test_offline_resume_refuses_another_config_or_agents_checkpoint(tmp_path):
    from crl.checkpoint import HEADER_KEYS, CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint

    run, agent = configs(updates=20, eval_every_updates=20)
    replay = random_dataset()
    train.train_offline("sac", run, agent, replay, tmp_path / "off")
    checkpoint = CheckpointManager(tmp_path / "off" / "checkpoints").latest()
    other_lr = train.build_configs("sac", None, {**SMALL, "updates": 40, "eval_every_updates": 20, "actor_lr": 0.5})
    with pytest.raises(CheckpointError, match=rf"{checkpoint}.*actor_lr"):
        train.train_offline("sac", *other_lr, replay, tmp_path / "off")
    payload = {key: value for key, value in load_checkpoint(checkpoint).items() if key not in HEADER_KEYS}
    save_checkpoint(checkpoint, payload | {"agent": "td-infonce"})
    with pytest.raises(CheckpointError, match=rf"{checkpoint} holds agent 'td-infonce', not 'sac'"):
        train.train_offline("sac", run, agent, replay, tmp_path / "off")
    assert list(pd.read_csv(tmp_path / "off" / "eval.csv").updates) == [20]  # nothing was trained on


def test_two_async_envs_count_frames_and_steps(tmp_path):
    run, agent = configs(frames=4000, num_envs=2, checkpoint_every_frames=0, update_every=1)
    train.train("sac", run, agent, tmp_path / "vec")
    rows = pd.read_csv(tmp_path / "vec" / "eval.csv")
    assert list(rows.frames) == [2000, 4000] and list(rows.agent_steps) == [250, 500]
    # update_every counts agent steps summed over envs: 2 updates per vector step of 2 envs, from
    # the vector step whose frames (16 per step) reach the 1000 seed frames (step 63) to step 250
    assert rows.updates.iloc[-1] == 2 * (250 - 63 + 1)
    assert len(pd.read_csv(tmp_path / "vec" / "train.csv")) == 4  # 2 episodes per env


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished sac run (2000 frames, one eval, one checkpoint); tests resume copies of it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run, agent = configs(frames=2000, checkpoint_every_frames=0)
    train.train("sac", run, agent, run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_refuses_a_checkpoint_of_another_agent_and_leaves_the_run_alone(run_copy, capsys):
    write_config(run_copy, read_config(run_copy) | {"agent": "drq"})  # a drq run whose newest checkpoint is sac's
    before = snapshot(run_copy)
    assert main(["train", "drq", "--resume", str(run_copy)]) == 2
    error = capsys.readouterr().err
    latest = CheckpointManager(run_copy / "checkpoints").latest()
    assert f"checkpoint {latest} holds agent 'sac', but agent 'drq' was asked for" in error
    assert f"{run_copy / 'config.yaml'} records 'drq'" in error
    with pytest.raises(CheckpointError, match=f"checkpoint {latest} holds agent 'sac'"):
        train.resume(run_copy)  # no agent asked for: config.yaml's is expected
    assert snapshot(run_copy) == before

    config = read_config(run_copy) | {"agent": "sac"}
    write_config(run_copy, config | {"agent_config": config["agent_config"] | {"batch_size": 64}})
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError, match=r"agent_config.batch_size: 32 in the checkpoint, 64 now.*config.yaml"):
        train.resume(run_copy, agent="sac")
    assert snapshot(run_copy) == before


def test_resume_names_a_path_that_is_not_a_run_directory(run_copy, tmp_path, capsys):
    assert main(["train", "sac", "--resume", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} is not a run directory (no such path)" in capsys.readouterr().err
    (tmp_path / "run.pt").write_bytes(b"")
    assert main(["train", "sac", "--resume", str(tmp_path / "run.pt")]) == 2
    assert "run.pt is not a run directory (a file)" in capsys.readouterr().err
    assert main(["train", "sac", "--env", "dmc-state:cartpole-balance", "--logdir", str(tmp_path / "run.pt")]) == 2
    assert f"--logdir {tmp_path / 'run.pt'} is a file, not a run directory" in capsys.readouterr().err


def test_offline_training_refuses_an_online_runs_directory(run_copy):
    from crl import offline

    before = snapshot(run_copy)
    with pytest.raises(ValueError, match=f"{run_copy} is an online run .*crl train sac --resume"):
        offline.resumed_offline_configs(run_copy, "sac", None, {}, (None, None))
    assert snapshot(run_copy) == before


def test_resume_refuses_an_agent_other_than_the_recorded_one(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["train", "drq", "--resume", str(run_copy)]) == 2
    assert f"{run_copy / 'config.yaml'} records agent 'sac', not 'drq'" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_resume_applies_and_records_the_resumable_fields(run_copy, finished_run, monkeypatch):
    write_config(run_copy, read_config(run_copy) | {"command": "crl train sac --frames 2000"})
    argv = ["train", "sac", "--resume", str(run_copy), "--frames", "4000", "--device", "cpu", "--set",
            "eval_every_frames=1000", "eval_episodes=2", "keep_checkpoints=1"]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/crl", *argv])
    assert main(argv) == 0
    config = read_config(run_copy)  # the command that made the run, then the resume's
    assert config["command"] == "crl train sac --frames 2000"
    assert config["resumed_with"] == [shlex.join(["crl", *argv])]
    # and the machine of each: the start's entry carried over, the resume's added
    assert len(config["ran_on"]) == 2 and config["ran_on"][0] == read_config(finished_run)["ran_on"][0]
    assert config["ran_on"][1] | {"cpu": "?", "date": "?"} == {
        "date": "?", "command": shlex.join(["crl", *argv]), "device": "cpu", "cpu": "?",
        "threads": torch.get_num_threads(), "torch": str(torch.__version__), "precision": "float32"}
    assert list(pd.read_csv(run_copy / "eval.csv").frames) == [2000, 3000, 4000]
    recorded = read_config(run_copy)["run"]
    assert (recorded["frames"], recorded["eval_every_frames"], recorded["eval_episodes"]) == (4000, 1000, 2)
    assert (recorded["device"], recorded["keep_checkpoints"]) == ("cpu", 1)
    assert [p.name for p in CheckpointManager(run_copy / "checkpoints").list()] == [f"ckpt_{4000:012d}.pt"]


def test_resume_refuses_a_malformed_resume_record_and_conflicting_budgets(run_copy, capsys):
    write_config(run_copy, read_config(run_copy) | {"resumed_with": 5})
    before = snapshot(run_copy)
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "3000"]) == 2
    assert "recorded 'resumed_with' must be a list of commands, got 5" in capsys.readouterr().err
    assert snapshot(run_copy) == before
    write_config(run_copy, read_config(run_copy) | {"resumed_with": [], "ran_on": "a laptop"})
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "3000"]) == 2
    assert "recorded 'ran_on' must be a list of mappings, got 'a laptop'" in capsys.readouterr().err
    config = read_config(run_copy)  # a run made before crl recorded ran_on: the resume's record starts it
    write_config(run_copy, {k: v for k, v in config.items() if k != "ran_on"} | {"resumed_with": []})
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "3000"]) == 0
    assert [record["device"] for record in read_config(run_copy)["ran_on"]] == ["cpu"]
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "3000", "--set", "frames=4000"]) == 2
    assert "--frames 3000 and --set frames=4000 disagree" in capsys.readouterr().err
    from crl.cli import same_value

    assert same_value("1e5", 100000) and not same_value("1e5", 100001) and same_value("cpu", "cpu")


def test_resume_refuses_an_unreadable_log_before_recording_anything(run_copy, capsys):
    (run_copy / "train.csv").write_bytes(bytes(range(128, 256)))
    config_before = (run_copy / "config.yaml").read_bytes()
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "4000"]) == 2
    assert f"{run_copy / 'train.csv'} is not a readable CSV file" in capsys.readouterr().err
    assert (run_copy / "config.yaml").read_bytes() == config_before  # still records 2000 frames


def test_resume_compares_overrides_by_value_not_by_text(run_copy, capsys):
    # recorded: hidden_dims [32, 32], batch_size 32, actor_lr 0.001
    assert main(["train", "sac", "--resume", str(run_copy), "--set", "hidden_dims=32,32", "actor_lr=1e-3",
                 "batch_size=3.2e1"]) == 0
    capsys.readouterr()
    before = snapshot(run_copy)
    assert main(["train", "sac", "--resume", str(run_copy), "--set", "actor_lr=2e-3"]) == 2
    assert "cannot change actor_lr (0.001 -> 0.002)" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_missing_keys_in_a_checkpoint_or_config_name_the_file_and_key(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run, agent = configs()
    write_config(run_dir, {"agent": "sac", "run": train.to_dict(run), "agent_config": train.to_dict(agent)})
    checkpoint = run_dir / "checkpoints" / f"ckpt_{1000:012d}.pt"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, {"agent": "sac"})
    assert main(["train", "sac", "--resume", str(run_dir)]) == 2
    assert f"checkpoint {checkpoint} lacks the keys 'config'" in capsys.readouterr().err
    assert main(["eval", str(run_dir)]) == 2
    assert f"checkpoint {checkpoint} lacks the keys 'config'" in capsys.readouterr().err

    write_config(run_dir, {"run": train.to_dict(run), "agent_config": train.to_dict(agent)})
    assert main(["train", "sac", "--resume", str(run_dir)]) == 2
    assert f"config file {run_dir / 'config.yaml'} lacks the key 'agent'" in capsys.readouterr().err

    write_config(run_dir, {"agent": "sac", "run": None, "agent_config": train.to_dict(agent)})
    assert main(["train", "sac", "--resume", str(run_dir)]) == 2
    assert f"config file {run_dir / 'config.yaml'}: 'run' must be a mapping, got None" in capsys.readouterr().err

    write_config(run_dir, {"agent": "sac", "run": train.to_dict(run), "agent_config": train.to_dict(agent)})
    save_checkpoint(checkpoint, {"agent": "sac", "config": {"agent": 5, "run": {}, "agent_config": {}},
                                 "counters": {"frames": 1000}, "agent_state": {}})
    assert main(["eval", str(run_dir)]) == 2
    assert f"checkpoint {checkpoint}: 'config': 'agent' must be an agent name, got 5" in capsys.readouterr().err


@pytest.mark.parametrize("edit, says", [
    (lambda p: p.update(agent_state={}), "cannot restore its contents (KeyError"),
    (lambda p: p.update(agent_state=5), "cannot restore its contents"),
    (lambda p: p["rng"].update(torch="abc"), "cannot restore its contents (TypeError"),
    (lambda p: p.update(replay={}), "cannot restore its contents"),
    (lambda p: p["counters"].update(frames=-100), "counter 'frames' must be a whole number >= 0, got -100"),
    (lambda p: p["counters"].update(frames="abc"), "counter 'frames' must be a whole number >= 0, got 'abc'"),
])
def test_a_checkpoint_with_edited_contents_is_named_not_a_traceback(edit, says, run_copy, capsys):
    latest = CheckpointManager(run_copy / "checkpoints").latest()
    payload = {k: v for k, v in load_checkpoint(latest).items() if k not in HEADER_KEYS}
    edit(payload)
    save_checkpoint(latest, payload)
    before = snapshot(run_copy)
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "3000"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"crl: error: checkpoint {latest}") and says in error
    assert snapshot(run_copy) == before
    code = main(["eval", str(latest), "--episodes", "1"])  # evaluation reads only what it needs
    error = capsys.readouterr().err
    assert code == 0 or error.startswith(f"crl: error: checkpoint {latest}")


def test_cli_refuses_out_of_range_run_values_before_building_anything(tmp_path, capsys):
    logdir = tmp_path / "never"
    assert main(["train", "sac", "--env", ENV, "--frames", "-5", "--logdir", str(logdir)]) == 2
    assert "run config field 'frames' must be positive (> 0), got -5" in capsys.readouterr().err
    assert main(["train", "sac", "--env", ENV, "--logdir", str(logdir), "--set", "eval_every_frames=0"]) == 2
    assert "'eval_every_frames' must be positive (> 0), got 0" in capsys.readouterr().err
    assert not logdir.exists()


@pytest.mark.parametrize("setting, says", [
    ("gamma=nan", "sac config: field 'gamma' must be a finite number, got 'nan'"),
    ("actor_lr=inf", "field 'actor_lr' must be a finite number, got 'inf'"),
    ("hidden_dims=", "'hidden_dims' needs at least one layer, got none"),
    ("hidden_dims=256,,256", "field 'hidden_dims' has an empty item in '256,,256'"),
    ("actor_lr=-1", "field 'actor_lr' must be in [0, inf), got -1.0"),
    ("gamma=1.5", "field 'gamma' must be in [0, 1], got 1.5"),
    ("critic_tau=0", "field 'critic_tau' must be in (0, 1], got 0.0"),
    ("init_temperature=0", "field 'init_temperature' must be in (0, inf), got 0.0"),
    ("seed=4294957296", "'seed' must be at most 2147483647 (2**31 - 1)"),
    ("seed=" + "9" * 5000, "expects a whole number (int), got '99999999"),
])
def test_cli_refuses_values_no_run_can_use_naming_the_field(setting, says, tmp_path, capsys):
    logdir = tmp_path / "never"
    assert main(["train", "sac", "--env", ENV, "--logdir", str(logdir), "--set", setting]) == 2
    error = capsys.readouterr().err
    assert says in error and len(error) < 400 and not logdir.exists()


def test_values_that_turn_a_feature_off_are_accepted():
    # inf switches clipping off, alpha_lr=0 fixes SAC's temperature, gamma=0 is a one-step target
    _, agent = train.build_configs("drq-eps", None, {"env": "atari:Pong", "max_grad_norm": "inf"})
    assert agent.max_grad_norm == float("inf")
    _, agent = train.build_configs("sac", None, {"env": ENV, "alpha_lr": "0", "gamma": "0"})
    assert (agent.alpha_lr, agent.gamma) == (0.0, 0.0)
    with pytest.raises(ValueError, match="field 'max_grad_norm' must be a finite number, got 'nan'"):
        train.build_configs("drq-eps", None, {"env": "atari:Pong", "max_grad_norm": "nan"})
    with pytest.raises(ValueError, match=r"field 'lr' must be in \(0, inf\), got 0.0"):
        train.build_configs("drq-eps", None, {"env": "atari:Pong", "lr": "0"})


def test_a_replay_the_machine_cannot_hold_is_a_plain_error(tmp_path, monkeypatch, capsys):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(train, "EpisodeReplay", no_memory)
    logdir = tmp_path / "run"
    assert main(["train", "sac", "--env", ENV, "--logdir", str(logdir), "--set", "replay_capacity=1000000000000"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("crl: error: out of memory") and "smaller replay_capacity" in error
    assert not logdir.exists()


def test_cli_refuses_an_agent_whose_actions_do_not_fit_the_env(tmp_path, capsys):
    assert main(["train", "drq-eps", "--env", ENV, "--frames", "8000", "--logdir", str(tmp_path / "run")]) == 2
    assert "drq-eps needs discrete (Discrete) actions; the env's action space is Box(" in capsys.readouterr().err


def interrupted_update(self, batch, step):
    raise KeyboardInterrupt


def test_ctrl_c_during_a_resume_names_the_checkpoint_to_continue_from(run_copy, monkeypatch, capsys):
    monkeypatch.setattr(train.agent_module("sac").Agent, "update", interrupted_update)
    assert main(["train", "sac", "--resume", str(run_copy), "--frames", "4000"]) == 130
    latest = CheckpointManager(run_copy / "checkpoints").latest()
    error = capsys.readouterr().err
    assert f"crl: {run_copy}: training interrupted; `crl train sac --resume {run_copy}` continues from {latest}" in error
    assert "Traceback" not in error
    # the command it names keeps the budget the interrupted resume asked for (only config.yaml has it)
    monkeypatch.undo()
    assert main(["train", "sac", "--resume", str(run_copy)]) == 0
    assert list(pd.read_csv(run_copy / "eval.csv").frames)[-1] == 4000
    assert read_config(run_copy)["run"]["frames"] == 4000


def test_ctrl_c_before_the_first_checkpoint_says_none_was_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.agent_module("sac").Agent, "update", interrupted_update)
    run_dir = tmp_path / "run"
    argv = ["train", "sac", "--env", ENV, "--logdir", str(run_dir), "--set", "seed_frames=1000",
            "checkpoint_every_frames=2000", "hidden_dims=32,32", "batch_size=32"]
    assert main(argv) == 130
    assert f"{run_dir}: training interrupted; no checkpoint was written yet" in capsys.readouterr().err



def test_eval_episodes_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path), "--episodes", "0"])
    assert exit_info.value.code == 2 and "--episodes: must be a positive integer, got 0" in capsys.readouterr().err


def test_a_logdir_under_a_file_is_a_plain_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    code = main(["train", "sac", "--env", "dmc-state:cartpole-balance", "--frames", "100",
                 "--logdir", str(tmp_path / "afile" / "run")])
    assert code == 2 and capsys.readouterr().err.startswith("crl: error:")


def test_a_checkpoints_lost_eval_row_is_evaluated_again_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run, agent = configs(frames=4000)
    train.train("sac", run, agent, run_dir)
    rows = pd.read_csv(run_dir / "eval.csv")
    text = (run_dir / "eval.csv").read_text()
    (run_dir / "eval.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1 + 10])  # 4000's row cut short
    train.resume(run_dir, frames=6000)
    again = pd.read_csv(run_dir / "eval.csv")
    assert list(again.frames) == [2000, 4000, 6000]
    assert again.episode_return.iloc[1] == pytest.approx(rows.episode_return.iloc[1])  # the same policy, same seeds

    with pytest.raises(ValueError, match="is at 6000 frames, past --frames 5000: a resume can only go on"):
        train.resume(run_dir, frames=5000)
    assert list(pd.read_csv(run_dir / "eval.csv").frames) == [2000, 4000, 6000]
    assert main(["train", "sac", "--resume", str(run_dir), "--logdir", str(tmp_path / "fork")]) == 2
    assert "a resumed run continues in its own directory" in capsys.readouterr().err
    assert not (tmp_path / "fork").exists()


def test_a_start_that_fails_leaves_no_empty_run_directory(tmp_path, monkeypatch):
    def no_env(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(train.envs, "make_vector", no_env)
    run, agent = configs()
    with pytest.raises(RuntimeError, match="no display"):
        train.train("sac", run, agent, tmp_path / "new" / "run")
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        train.train("sac", run, agent, tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()  # a directory the user made stays


def test_checkpoints_carry_every_gpus_generator_when_cuda_is_in_use(monkeypatch):
    # no GPU here: torch.cuda's generator functions stand in, to check what is saved and restored
    saved_cuda = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    states = train.torch_rng_states()
    assert states["cuda"] is saved_cuda and torch.equal(states["torch"], torch.get_rng_state())
    torch.rand(3)  # move the CPU generator on
    train.restore_torch_rng_states(states)
    assert restored == [saved_cuda] and torch.equal(torch.get_rng_state(), states["torch"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # another machine: the CPU state only
    train.restore_torch_rng_states(states)
    assert len(restored) == 1


def test_a_resumed_run_never_resets_on_an_evaluation_seed():
    from types import SimpleNamespace

    seeds = []

    class Env:
        def reset(self, seed):
            seeds.append(seed)
            return np.zeros((1, 3)), {}

    trainer = SimpleNamespace(env=Env(), run=SimpleNamespace(seed=5, num_envs=1),
                              replay=SimpleNamespace(add_first=lambda obs, stream: None))
    for frames in (0, 10_000, 10_001):
        trainer.counters = {"frames": frames}
        train.OnlineTrainer.begin(trainer)
    assert seeds[0] == 5  # a fresh run: its own seed
    evaluation_seeds = set(range(5 + 10_000, 5 + 10_000 + 100)) | set(range(5 + 20_000, 5 + 20_000 + 100))
    assert not evaluation_seeds & set(seeds[1:]) and len(set(seeds)) == 3


def test_cli_prints_a_librarys_runtime_error_with_its_traceback_and_crls_own_plainly(monkeypatch, capsys):
    def torch_fails(args):  # e.g. a CUDA or device-mismatch error: a crash to debug, not bad input
        torch.zeros(2) @ torch.zeros(3)

    monkeypatch.setattr(cli, "cmd_list", torch_fails)
    assert cli.main(["list", "agents"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "torch_fails" in err and "crl: error:" in err

    def crl_refuses(args):
        from crl.checkpoint import CheckpointError

        raise CheckpointError("checkpoint x.pt is corrupt")

    monkeypatch.setattr(cli, "cmd_list", crl_refuses)
    assert cli.main(["list", "agents"]) == 2
    err = capsys.readouterr().err
    assert err == "crl: error: checkpoint x.pt is corrupt\n"
    monkeypatch.setenv("CRL_DEBUG", "0")  # off, as unset
    assert cli.main(["list", "agents"]) == 2
    monkeypatch.setenv("CRL_DEBUG", "1")
    assert cli.main(["list", "agents"]) == 1 and "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("CRL_DEBUG")

    def torch_fails_inside_crl(args):  # the failing operation called from crl's own code
        from crl.rl import soft_update

        soft_update(torch.nn.Linear(2, 3), torch.nn.Linear(2, 4), 0.5)

    monkeypatch.setattr(cli, "cmd_list", torch_fails_inside_crl)
    assert cli.main(["list", "agents"]) == 1 and "Traceback" in capsys.readouterr().err

    def gpu_runs_out(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli, "cmd_list", gpu_runs_out)
    assert cli.main(["list", "agents"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crl: error: out of memory (CUDA out of memory.") and "batch_size" in err


def test_resolve_device_checks_that_the_device_exists(monkeypatch):
    assert train.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device 'tpu'"):
        train.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'cuda' was asked for, but torch sees no CUDA device"):
        train.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert train.resolve_device("cuda:1") == torch.device("cuda:1")
    assert torch.backends.cudnn.benchmark  # fixed conv shapes: cuDNN's autotuner picks once
    with pytest.raises(ConfigError, match="'cuda:2': torch sees 2 CUDA device"):
        train.resolve_device("cuda:2")


def test_a_run_that_would_never_update_is_refused_before_it_starts(tmp_path, capsys):
    # DrQ seeds 1000 agent steps: 8000 frames at cartpole's action repeat 8, more than this budget
    assert main(["train", "drq", "--env", "dmc:cartpole-swingup", "--frames", "6000",
                 "--logdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err  # the start's notice says where the 8000 came from
    assert "drq on dmc:cartpole-swingup: per-task settings of its paper or released code: seed_frames=8000" in err
    assert "seed_frames 8000 >= frames 6000: the run would act at random and never update" in err
    assert not (tmp_path / "run").exists()


def test_replay_on_device_setting():
    """`replay_on_device`: never on the CPU; "yes" on any other device; "auto" on CUDA only (the
    meta device stands in for a GPU here)."""
    from crl.replay import EpisodeReplay

    def frames_on(setting, device):
        replay = EpisodeReplay(capacity=10, frame_stack=1)
        train.keep_replay_frames_on_device(replay, setting, torch.device(device))
        replay.add_first(np.zeros((3, 2, 2), np.uint8))
        return replay.frames_on_device

    assert frames_on("yes", "meta") == torch.device("meta")
    assert frames_on("auto", "meta") is None and frames_on("no", "meta") is None
    assert frames_on("yes", "cpu") is None and frames_on("auto", "cpu") is None
    with pytest.raises(train.ConfigError, match="replay_on_device"):
        train.RunConfig(replay_on_device="gpu")
