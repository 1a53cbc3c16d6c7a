"""The online loop: counters, logs, checkpoints, resume after a crash, `crl eval`."""

import json

import pandas as pd
import pytest

from crl import train
from crl.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from crl.cli import main

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
    assert main(["eval", str(logdir), "--episodes", "1", "--video"]) == 0
    assert list((logdir / "videos").glob("*.mp4"))
    capsys.readouterr()
    assert main(["train", "sacc", "--env", ENV]) == 2
    assert "unknown agent" in capsys.readouterr().err
    assert main(["train", "sac", "--env", ENV, "--set", "hiden_dims=3"]) == 2
    assert "hidden_dims" in capsys.readouterr().err
    assert main(["train", "sac", "--resume", str(logdir), "--set", "batch_size=64"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", "sac", "--resume", str(tmp_path / "nothing")]) == 2
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


def test_two_async_envs_count_frames_and_steps(tmp_path):
    run, agent = configs(frames=4000, num_envs=2, checkpoint_every_frames=0)
    train.train("sac", run, agent, tmp_path / "vec")
    rows = pd.read_csv(tmp_path / "vec" / "eval.csv")
    assert list(rows.frames) == [2000, 4000] and list(rows.agent_steps) == [250, 500]
    assert len(pd.read_csv(tmp_path / "vec" / "train.csv")) == 4  # 2 episodes per env
