"""`make demo` end to end, shortened: a random-policy score, a training run, the curve PNG and the
evaluation video the README promises."""

from crl.demo import ENV_ID, run_demo


def test_demo_writes_curve_video_and_scores(tmp_path, capsys):
    logdir = tmp_path / "demo"
    result = run_demo(logdir, seed=3, frames=2_000, seed_frames=1_000, batch_size=32, eval_episodes=1,
                      eval_every_frames=1_000)
    assert (logdir / "learning_curve.png").stat().st_size > 1_000
    assert len(list((logdir / "videos").glob("*.mp4"))) == 1
    assert (logdir / "eval.csv").read_text().count("\n") == 3  # header + evals at 1000 and 2000 frames
    for key in ("random", "sac"):
        assert 0 <= result[key]["episode_return"] <= 1000  # DMC returns: 1000 steps of reward in [0, 1]
    assert result["sac"]["frames"] == 2_000
    out = capsys.readouterr().out
    assert f"{ENV_ID}: random policy scores" in out and "learning curve:" in out
    # running the demo again replaces its previous run instead of failing on its checkpoints
    again = run_demo(logdir, seed=3, frames=1_000, seed_frames=1_000, batch_size=32, eval_episodes=1)
    assert again["sac"]["frames"] == 1_000
