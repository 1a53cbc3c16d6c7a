"""`make demo` end to end, shortened: a random-policy score, a training run, the curve PNG and the
evaluation video the README promises; the pixel demo and the state one."""

import pytest

from crl import train
from crl.demo import DEMOS, run_demo


@pytest.mark.parametrize("which", ["pixels", "states"])
def test_demo_writes_curve_video_and_scores(tmp_path, capsys, which):
    logdir = tmp_path / "demo"
    result = run_demo(logdir, seed=3, which=which, frames=2_000, seed_frames=1_000, batch_size=32,
                      eval_episodes=1, eval_every_frames=1_000)
    assert (logdir / "learning_curve.png").stat().st_size > 1_000
    assert len(list((logdir / "videos").glob("*.mp4"))) == 1
    assert (logdir / "eval.csv").read_text().count("\n") == 3  # header + evals at 1000 and 2000 frames
    for key in ("random", "agent"):
        assert 0 <= result[key]["episode_return"] <= 1000  # DMC returns: 1000 steps of reward in [0, 1]
    assert result["agent"]["frames"] == 2_000
    out = capsys.readouterr().out
    assert f"{DEMOS[which].env_id}: random policy scores" in out and "learning curve:" in out
    loaded = train.load_agent(logdir)
    loaded.env.close()
    assert loaded.payload["config"]["agent"] == DEMOS[which].agent
    assert len(loaded.env.observation_space.shape) == (3 if which == "pixels" else 1)  # (9, 84, 84) frames
    # running the demo again replaces its previous run instead of failing on its checkpoints
    again = run_demo(logdir, seed=3, which=which, frames=1_000, seed_frames=960, batch_size=32, eval_episodes=1)
    assert again["agent"]["frames"] == 1_000


def test_demo_never_replaces_a_run_it_did_not_make(tmp_path):
    other = tmp_path / "my_run"
    other.mkdir()
    (other / "config.yaml").write_text("agent: drq\n")
    with pytest.raises(FileExistsError, match="holds a run that `crl demo` did not make"):
        run_demo(other, which="states", frames=1_000)
    assert (other / "config.yaml").read_text() == "agent: drq\n"
    work = tmp_path / "work"  # a folder of other files: never marked, so never replaced later
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is a folder with other files in it"):
        run_demo(work, which="states", frames=1_000)
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("bf16_speedup", [2.5, 0.7])
def test_pixel_demo_warns_where_its_convs_run_in_fp32(monkeypatch, bf16_speedup):
    import torch

    import crl.encoders
    from crl.demo import convs_in_fp32_on_cpu

    monkeypatch.setattr(crl.encoders, "cpu_bf16_conv_speedup", lambda: bf16_speedup)
    bf16_units = bf16_speedup > 1
    _, config = train.build_configs(DEMOS["pixels"].agent, "cpu-smoke", {"env": DEMOS["pixels"].env_id})
    assert config.precision == "auto"  # the demo's preset follows the hardware
    assert convs_in_fp32_on_cpu(config, torch.device("cpu")) is not bf16_units
    config.precision = "float32"
    assert convs_in_fp32_on_cpu(config, torch.device("cpu"))
    assert not convs_in_fp32_on_cpu(config, torch.device("cuda"))  # a GPU is fast in either precision
