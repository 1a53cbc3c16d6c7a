"""`crl dataset collect|info` and `crl offline train|eval` end to end, and the scores they print."""

import json
import re
import shlex
import shutil
import sys

import h5py
import numpy as np
import pytest

from crl import datasets, offline
from crl.checkpoint import CheckpointManager
from crl.cli import main
from crl.logger import read_config, write_config


@pytest.fixture(scope="module")
def maze_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "umaze.hdf5"
    code = main(["dataset", "collect", "--env", "maze:PointMaze_UMaze-v3", "--policy", "planner",
                 "--episodes", "4", "--max-episode-steps", "60", "--out", str(path)])
    assert code == 0
    return path


def test_collect_then_info(maze_file, capsys):
    assert main(["dataset", "info", str(maze_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 4 and info["steps"] == 4 * 60
    assert info["env_id"] == "maze:PointMaze_UMaze-v3"
    assert info["metadata"]["policy"] == "planner"
    assert 0.0 <= info["success_rate"] <= 1.0


def test_offline_train_then_eval_reports_policy_and_dataset_scores(maze_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["offline", "train", "gcbc", "--dataset", str(maze_file), "--updates", "20", "--logdir", str(run_dir),
                 "--set", "hidden_dims=16,16", "batch_size=16", "eval_every_updates=10", "eval_episodes=1"])
    assert code == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["dataset"]["success"] == datasets.success_rate(datasets.load(maze_file))
    assert "success" in trained["policy"]
    eval_rows = (run_dir / "eval.csv").read_text().splitlines()
    assert eval_rows[0].split(",")[:3] == ["frames", "agent_steps", "updates"] and len(eval_rows) == 3

    assert main(["offline", "eval", str(run_dir), "--episodes", "2"]) == 0  # the dataset comes from the run
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == str(maze_file.resolve()) and report["updates"] == 20 and report["episodes"] == 2
    assert set(report["policy"]) >= {"success", "final_success"}
    assert json.loads((run_dir / "offline_eval.json").read_text()) == report


def test_offline_train_resumes_where_it_stopped(maze_file, tmp_path, monkeypatch, capsys):
    args = ["offline", "train", "gcbc", "--dataset", str(maze_file), "--logdir", str(tmp_path),
            "--set", "hidden_dims=16", "batch_size=8", "eval_every_updates=5", "eval_episodes=1"]
    for updates in ("10", "15", "20"):
        monkeypatch.setattr(sys, "argv", ["/venv/bin/crl", *args, "--updates", updates])
        assert main(args + ["--updates", updates]) == 0
    updates = [int(line.split(",")[2]) for line in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert updates == [5, 10, 15, 20]
    config = read_config(tmp_path)  # the command that made the run, then each resume's
    assert config["command"] == shlex.join(["crl", *args, "--updates", "10"])
    assert config["resumed_with"] == [shlex.join(["crl", *args, "--updates", n]) for n in ("15", "20")]
    assert [record["device"] for record in config["ran_on"]] == ["cpu"] * 3  # the machine of each command
    capsys.readouterr()
    # the finished run again: its policy's score, nothing trained, logged or recorded
    config_text, eval_text = (tmp_path / "config.yaml").read_text(), (tmp_path / "eval.csv").read_text()
    assert main(args + ["--updates", "20"]) == 0
    last_eval = dict(zip(eval_text.splitlines()[0].split(","), eval_text.splitlines()[-1].split(",")))
    assert json.loads(capsys.readouterr().out)["policy"]["success"] == float(last_eval["success"])
    # fewer updates than the checkpoint holds: refused, the run untouched
    assert main(args + ["--updates", "10"]) == 2
    assert "at 20 updates, past --updates 10" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == config_text
    assert (tmp_path / "eval.csv").read_text() == eval_text
    # evaluation videos of an offline run; a resume needs only the dataset and the run directory
    short = ["offline", "train", "gcbc", "--dataset", str(maze_file), "--logdir", str(tmp_path)]
    assert main(short + ["--updates", "25", "--set", "video=true"]) == 0
    assert [p.name for p in (tmp_path / "videos").glob("*.mp4")] == ["eval_update_000000000025.mp4"]
    assert read_config(tmp_path)["agent_config"]["hidden_dims"] == [16]
    # a budget recorded by a resume that stopped before its first checkpoint carries on
    write_config(tmp_path, read_config(tmp_path) | {"run": read_config(tmp_path)["run"] | {"updates": 30}})
    assert main(short) == 0
    assert [int(line.split(",")[2]) for line in (tmp_path / "eval.csv").read_text().splitlines()[1:]][-1] == 30
    capsys.readouterr()
    assert main(short + ["--updates", "30", "--set", "batch_size=64"]) == 2  # not a resumable field
    assert "cannot change batch_size (8 -> 64)" in capsys.readouterr().err
    assert main(["offline", "train", "gcrl", "--dataset", str(maze_file), "--logdir", str(tmp_path)]) == 2
    assert "holds agent 'gcbc', not 'gcrl'" in capsys.readouterr().err
    assert main(["train", "gcbc", "--resume", str(tmp_path)]) == 2  # the online resume points the way
    assert f"is an offline run (trained on {maze_file.resolve()}): go on with `crl offline train gcbc" \
        in capsys.readouterr().err


@pytest.mark.parametrize("agent", ["gcrl", "td-infonce"])
def test_offline_train_runs_every_goal_agent(agent, maze_file, tmp_path, capsys):
    run_dir = tmp_path / agent
    code = main(["offline", "train", agent, "--dataset", str(maze_file), "--updates", "20", "--logdir", str(run_dir),
                 "--set", "hidden_dims=16", "batch_size=16", "eval_every_updates=20", "eval_episodes=1"])
    assert code == 0
    trained = json.loads(capsys.readouterr().out)
    assert "success" in trained["policy"] and "success" in trained["dataset"]
    assert len((run_dir / "eval.csv").read_text().splitlines()) == 2


def test_offline_run_records_the_resolved_dataset_and_refuses_another(maze_file, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    args = ["offline", "train", "gcbc", "--logdir", str(run_dir),
            "--set", "hidden_dims=16", "batch_size=8", "eval_every_updates=5", "eval_episodes=1"]
    monkeypatch.chdir(maze_file.parent)
    assert main(args + ["--dataset", maze_file.name, "--updates", "5"]) == 0  # a relative path
    assert read_config(run_dir)["dataset"] == str(maze_file.resolve())
    assert main(args + ["--dataset", f"d4rl:{maze_file}", "--updates", "10"]) == 0  # the same file: resumes
    copy = tmp_path / "copy.hdf5"
    shutil.copy(maze_file, copy)
    capsys.readouterr()
    assert main(args + ["--dataset", str(copy), "--updates", "15"]) == 2
    error = capsys.readouterr().err
    assert str(maze_file.resolve()) in error and str(copy.resolve()) in error
    assert offline.resolve_spec("D4RL/pointmaze/umaze-v2") == "D4RL/pointmaze/umaze-v2"  # ids as given
    assert offline.resolve_spec(f"d4rl:{maze_file.name}") == str(maze_file.resolve())
    assert offline.resolve_spec(f"d4rl:{maze_file.stem}.data") == f"d4rl:{maze_file.parent.resolve()}/umaze.data"
    assert offline.resolve_spec("minari:D4RL/pointmaze/umaze-v2") == "minari:D4RL/pointmaze/umaze-v2"
    assert offline.resolve_spec(f"minari:{tmp_path.name}") == "minari:" + tmp_path.name  # not a folder here
    assert offline.resolve_spec(f"minari:{maze_file.parent}") == str(maze_file.parent.resolve())


@pytest.mark.parametrize("agent, message", [("sac", r"sac learns from one observation array .* use a goal agent"),
                                            ("sb3-sac", r"sb3-sac trains in its own online loop")])
def test_offline_train_refuses_an_agent_that_cannot_learn_the_data(agent, message, maze_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["offline", "train", agent, "--dataset", str(maze_file), "--updates", "5",
                 "--logdir", str(run_dir)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not run_dir.exists()  # the failed start leaves no empty run directory


def test_offline_train_refuses_data_that_does_not_fit_the_env(tmp_path, capsys):
    rows = 40
    rng = np.random.default_rng(0)
    path = tmp_path / "six.hdf5"
    with h5py.File(path, "w") as f:  # goal data whose observations are 6-d; PointMaze's are 4-d
        f["observations"] = rng.normal(size=(rows, 6)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (rows, 2)).astype(np.float32)
        f["rewards"] = np.zeros(rows, np.float32)
        f["terminals"] = np.zeros(rows, bool)
        f["timeouts"] = np.arange(rows) % 20 == 19
        f["infos/goal"] = np.ones((rows, 2), np.float32)
    code = main(["offline", "train", "gcbc", "--dataset", str(path), "--env", "maze:PointMaze_UMaze-v3",
                 "--updates", "2", "--logdir", str(tmp_path / "run")])
    assert code == 2
    error = capsys.readouterr().err
    assert str(path) in error and "maze:PointMaze_UMaze-v3" in error
    assert "'observation': (6,)" in error and "'observation': (4,)" in error and "--env" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_offline_train_refuses_maze2d_positions_in_another_frame(tmp_path, capsys):
    # D4RL maze2d-umaze: 4-d observations as PointMaze's, positions counted from the map's corner
    # (x, y in about 0.5..3.5); gymnasium-robotics' UMaze spans [-2.5, 2.5] around the origin
    rows = 40
    rng = np.random.default_rng(0)
    xy = rng.uniform(0.5, 3.5, (rows, 2)).astype(np.float32)
    path = tmp_path / "maze2d-umaze-v1.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate([xy, rng.normal(size=(rows, 2)).astype(np.float32)], axis=1)
        f["actions"] = rng.uniform(-1, 1, (rows, 2)).astype(np.float32)
        f["rewards"] = np.zeros(rows, np.float32)
        f["terminals"] = np.zeros(rows, bool)
        f["timeouts"] = np.arange(rows) % 20 == 19
        f["infos/goal"] = np.tile(np.float32([3.0, 1.0]), (rows, 1))
    assert main(["offline", "train", "gcbc", "--dataset", str(path), "--env", "maze:PointMaze_UMaze-v3",
                 "--updates", "2", "--logdir", str(tmp_path / "run")]) == 2
    assert "outside the maze's x, y in [-2.5, 2.5] x [-2.5, 2.5]" in capsys.readouterr().err


def test_offline_eval_of_a_checkpoint_file_closes_its_env(maze_file, tmp_path, monkeypatch, capsys):
    from crl import train

    run_dir = tmp_path / "run"
    assert main(["offline", "train", "gcbc", "--dataset", str(maze_file), "--updates", "4", "--logdir", str(run_dir),
                 "--set", "hidden_dims=16", "batch_size=8", "eval_every_updates=4", "eval_episodes=1"]) == 0
    checkpoint = CheckpointManager(run_dir / "checkpoints").latest()
    closed = []
    load_agent = train.load_agent

    def recording_load_agent(path, device="auto"):
        loaded = load_agent(path, device)
        close = loaded.env.close
        loaded.env.close = lambda: (closed.append(True), close())
        return loaded

    monkeypatch.setattr(train, "load_agent", recording_load_agent)
    assert main(["offline", "eval", str(checkpoint), "--episodes", "1", "--device", "cpu"]) == 0
    assert json.loads((run_dir / "offline_eval.json").read_text())["updates"] == 4 and closed == [True]
    assert main(["offline", "eval", str(checkpoint), "--dataset", str(tmp_path / "missing.hdf5")]) == 2
    assert "missing.hdf5" in capsys.readouterr().err and closed == [True, True]


def test_policy_score_is_normalised_by_the_datasets_references():
    episode = datasets.Episode(observations=np.zeros((3, 2), np.float32), actions=np.zeros((2, 1), np.float32),
                               rewards=np.array([1.0, 2.0]), terminations=np.array([False, False]),
                               truncations=np.array([False, True]))
    data = datasets.Dataset([episode], env_id=None, metadata={"ref_min_score": -10.0, "ref_max_score": 30.0})
    assert offline.policy_score({"episode_return": 20.0}, data)["normalized_score"] == pytest.approx(75.0)
    assert datasets.dataset_score(data) == {"episode_return": 3.0, "normalized_score": pytest.approx(32.5)}


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["offline", "train", "gcbc", "--dataset", str(tmp_path / "missing.hdf5")]) == 2
    assert "missing.hdf5" in capsys.readouterr().err
    assert main(["dataset", "collect", "--env", "maze:PointMaze_UMaze-v3", "--policy", "random",
                 "--episodes", "1"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--out", "data.txt"], "--out data.txt: a D4RL-layout file is named .hdf5 or .h5"),
    (["--minari-id", "no version"], "--minari-id 'no version' is not a Minari id"),
    (["--out", "d.hdf5", "--seed", "-1"], "--seed must be in 0..2147483647, got -1"),
    (["--out", "d.hdf5", "--seed", "4294967296"], "--seed must be in 0..2147483647, got 4294967296"),
    (["--out", "d.hdf5", "--noise", "-1"], "--noise must be >= 0"),
    (["--out", "d.hdf5", "--max-episode-steps", "0"], "--max-episode-steps must be positive, got 0"),
])
def test_collect_refuses_bad_options_before_collecting(options, message, tmp_path, monkeypatch, capsys):
    import crl.collect

    def collect(*args, **kwargs):
        raise AssertionError("collected before checking its options")

    monkeypatch.setattr(crl.collect, "collect", collect)
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "collect", "--env", "maze:PointMaze_UMaze-v3", "--policy", "random",
                 "--episodes", "1", *options]) == 2
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_dataset_naming_an_unknown_env_gets_the_closest_ids(tmp_path, capsys):
    path = tmp_path / "typo.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in {"observations": np.zeros((4, 5), np.float32), "actions": np.zeros((4, 1), np.float32),
                           "rewards": np.zeros(4, np.float32), "terminals": np.zeros(4, bool),
                           "timeouts": np.array([0, 0, 0, 1], bool)}.items():
            f.create_dataset(key, data=value)
        f.attrs["env_id"] = "dmc-state:cartpole-balanc"
    assert main(["offline", "train", "sac", "--dataset", str(path), "--updates", "2", "--logdir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "env_id is not a crl environment" in error and "Closest ids: dmc-state:cartpole-balance" in error
    assert "--env" in error and not (tmp_path / "r").exists()


def test_a_batch_larger_than_the_dataset_is_warned_of(maze_file, tmp_path, capsys):
    assert main(["offline", "train", "gcbc", "--dataset", str(maze_file), "--logdir", str(tmp_path / "run"),
                 "--updates", "1", "--set", "hidden_dims=16", "batch_size=300", "eval_episodes=1"]) == 0
    assert "batch_size 300 is more than the dataset's 240 transitions" in capsys.readouterr().err


def test_collect_keeps_an_existing_file_unless_told_to_overwrite(tmp_path, capsys):
    out = tmp_path / "data.hdf5"
    out.write_bytes(b"an earlier dataset")
    argv = ["dataset", "collect", "--env", "dmc-state:cartpole-balance", "--policy", "random", "--episodes", "1",
            "--max-episode-steps", "5", "--out", str(out)]
    assert main(argv) == 2
    assert f"{out} exists: choose another --out" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier dataset"
    assert main([*argv, "--overwrite"]) == 0
    assert datasets.load(str(out)).num_steps == 5
    (tmp_path / "dir.hdf5").mkdir()
    assert main([*argv[:-1], str(tmp_path / "dir.hdf5"), "--overwrite"]) == 2
    assert "dir.hdf5 is a directory" in capsys.readouterr().err


def test_a_minari_id_with_or_without_its_prefix_is_the_same_dataset_on_resume(tmp_path, monkeypatch):
    from crl.logger import write_config

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt_000000001000.pt").write_bytes(b"")
    write_config(run_dir, {"dataset": "test/base-v0"})
    # the run keeps recording the spec it was first given
    assert offline.check_same_dataset(run_dir, offline.resolve_spec("minari:test/base-v0")) == "test/base-v0"
    assert offline.check_same_dataset(run_dir, offline.resolve_spec("test/base-v0")) == "test/base-v0"
    with pytest.raises(ValueError, match="was trained on dataset test/base-v0, not other/base-v0"):
        offline.check_same_dataset(run_dir, offline.resolve_spec("other/base-v0"))
    # a local Minari dataset named by its id or by its folder's path
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    (tmp_path / "minari" / "test" / "base-v0").mkdir(parents=True)
    offline.check_same_dataset(run_dir, offline.resolve_spec(str(tmp_path / "minari" / "test" / "base-v0")))


def test_offline_train_renders_the_env_at_the_datas_image_size(tmp_path, monkeypatch, capsys):
    # `crl dataset collect` records maze-pixels at its 64x64 default; training defaults to 84
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert main(["dataset", "collect", "--env", "maze-pixels:PointMaze_UMaze-v3", "--policy", "random",
                 "--episodes", "2", "--max-episode-steps", "8", "--minari-id", "test/pixels-v0"]) == 0
    assert datasets.load("test/pixels-v0").episodes[0].observations["observation"].shape[1:] == (3, 64, 64)
    assert main(["dataset", "collect", "--env", "maze-pixels:PointMaze_UMaze-v3", "--policy", "random",
                 "--episodes", "2", "--minari-id", "test/pixels-v0"]) == 2  # refused before collecting
    assert "test/pixels-v0 exists" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert main(["offline", "train", "gcbc", "--dataset", "test/pixels-v0", "--updates", "2", "--logdir", str(run_dir),
                 "--set", "batch_size=4", "hidden_dims=16", "eval_every_updates=2", "eval_episodes=1"]) == 0
    assert read_config(run_dir)["run"]["image_size"] == 64
