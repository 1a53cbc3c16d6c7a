"""`crl dataset collect|info` and `crl offline train|eval` end to end, and the scores they print."""

import json

import numpy as np
import pytest

from crl import datasets, offline
from crl.cli import main


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
    assert report["dataset"] == str(maze_file) and report["updates"] == 20 and report["episodes"] == 2
    assert set(report["policy"]) >= {"success", "final_success"}
    assert json.loads((run_dir / "offline_eval.json").read_text()) == report


def test_offline_train_resumes_where_it_stopped(maze_file, tmp_path, capsys):
    args = ["offline", "train", "gcbc", "--dataset", str(maze_file), "--logdir", str(tmp_path),
            "--set", "hidden_dims=16", "batch_size=8", "eval_every_updates=5", "eval_episodes=1"]
    assert main(args + ["--updates", "10"]) == 0
    assert main(args + ["--updates", "15"]) == 0
    updates = [int(line.split(",")[2]) for line in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert updates == [5, 10, 15]


def test_policy_score_is_normalised_by_the_datasets_references():
    episode = datasets.Episode(observations=np.zeros((3, 2), np.float32), actions=np.zeros((2, 1), np.float32),
                               rewards=np.array([1.0, 2.0]), terminations=np.array([False, False]),
                               truncations=np.array([False, True]))
    data = datasets.Dataset([episode], env_id=None, metadata={"ref_min_score": -10.0, "ref_max_score": 30.0})
    assert offline.policy_score({"episode_return": 20.0}, data)["normalized_score"] == pytest.approx(75.0)
    assert offline.dataset_score(data) == {"episode_return": 3.0, "normalized_score": pytest.approx(32.5)}


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["offline", "train", "gcbc", "--dataset", str(tmp_path / "missing.hdf5")]) == 2
    assert "missing.hdf5" in capsys.readouterr().err
    assert main(["dataset", "collect", "--env", "maze:PointMaze_UMaze-v3", "--policy", "random",
                 "--episodes", "1"]) == 2
    assert "--out" in capsys.readouterr().err
