"""Atari-100k preprocessing against the raw ALE environment."""

import cv2
import gymnasium as gym
import numpy as np

from crl import envs
from crl.envs.atari import ATARI_100K_GAMES, all_games


def raw_ale(game, seed):
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    env.reset(seed=seed)
    return env


def test_frame_skip_and_max_pool_match_raw_ale():
    ours = envs.make("atari:Breakout", noop_max=0, frame_stack=1)
    obs, _ = ours.reset(seed=3)
    raw = raw_ale("Breakout", seed=3)
    ale = raw.unwrapped.ale
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = int(rng.integers(ours.action_space.n))
        obs, reward, terminated, truncated, info = ours.step(action)
        total, screens = 0.0, []
        for _ in range(4):
            total += raw.step(action)[1]
            screens.append(ale.getScreenGrayscale())
        pooled = np.maximum(screens[-2], screens[-1])
        expected = cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA)
        assert obs.shape == (1, 84, 84) and obs.dtype == np.uint8
        np.testing.assert_array_equal(obs[0], expected)
        assert reward == total
        assert info["step_frames"] == 4
    assert info["frames"] == 160


def test_noop_starts_are_random_and_bounded():
    counts = set()
    for seed in range(8):
        env = envs.make("atari:Pong")
        _, info = env.reset(seed=seed)
        assert 1 <= info["episode_frame_number"] <= 30  # each no-op is one raw frame
        counts.add(info["episode_frame_number"])
    assert len(counts) > 2


def test_score_is_raw_not_clipped():
    env = envs.make("atari:SpaceInvaders")
    env.reset(seed=0)
    env.action_space.seed(0)
    rewards = [env.step(env.action_space.sample())[1] for _ in range(300)]
    assert max(rewards) > 1  # SpaceInvaders scores 5-30 points per invader


def test_stack_and_action_space():
    env = envs.make("atari:Pong")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84)
    assert env.action_space.n == 6  # minimal action set, not the full 18
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0


def test_evaluation_videos_get_the_colour_screen(tmp_path):
    from crl.train import evaluate

    class Noop:
        def act(self, obs, explore):
            return np.zeros(1, np.int64)

    env = envs.make("atari:Pong", max_episode_frames=400)
    env.reset(seed=0)
    assert env.render().shape == (210, 160, 3)
    evaluate(Noop(), env, episodes=1, seed=0, video_path=tmp_path / "pong.mp4")
    assert (tmp_path / "pong.mp4").stat().st_size > 0


def test_life_loss_ends_episode_but_not_game():
    env = envs.make("atari:Breakout", terminal_on_life_loss=True)
    env.reset(seed=0)
    ale = env.unwrapped.ale
    start_lives = ale.lives()
    for _ in range(2000):
        *_, terminated, truncated, info = env.step(1)  # FIRE, then the ball is lost
        if terminated:
            break
    assert terminated and ale.lives() == start_lives - 1
    assert "game_score" not in info  # the game goes on
    env.reset()
    assert ale.lives() == start_lives - 1  # reset did not restart the game


def test_episode_frame_cap_is_truncation():
    env = envs.make("atari:Pong", noop_max=0, max_episode_frames=400)
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, info = env.step(0)
        if truncated or terminated:
            break
    assert truncated and not terminated and step == 100
    assert "game_score" in info


def test_atari100k_games_all_available():
    available = set(all_games())
    assert len(ATARI_100K_GAMES) == 26
    assert set(ATARI_100K_GAMES) <= available


def test_the_train_log_gets_one_row_per_game_not_per_life():
    from crl.train import finished_episode

    env = envs.make_vector("atari:Breakout", 1, terminal_on_life_loss=True)
    env.reset(seed=0)
    env.action_space.seed(0)
    rows, score, lives_ended = [], 0.0, 0
    while not rows:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        score += float(reward[0])
        if terminated[0] or truncated[0]:
            episode = finished_episode(info["final_info"], 0, running_return=-1.0)
            if episode is None:
                lives_ended += 1
            else:
                rows.append(episode)
    env.close()
    assert lives_ended == 4  # Breakout's five lives: four end the agent's episode, the fifth the game
    assert rows == [{"episode_return": score}]  # the whole game's score, once


def test_sb3_dqn_logs_one_row_per_game_too(tmp_path):
    from crl.cli import main

    # random play (no learning before seed_frames) over several Breakout games of five lives each
    run_dir = tmp_path / "dqn"
    assert main(["train", "sb3-dqn", "--env", "atari:Breakout", "--frames", "8000", "--logdir", str(run_dir),
                 "--set", "seed_frames=8000", "eval_every_frames=8000", "eval_episodes=1", "buffer_size=100",
                 "features_dim=16"]) == 0
    import pandas as pd

    rows = pd.read_csv(run_dir / "train.csv")
    # this seed's random play finished 10 games of 5 lives (51 rows when each lost life was one);
    # a random game lasts 100+ agent steps, and its score is a whole number of bricks
    assert 5 <= len(rows) <= 20 and (rows.frames.diff().dropna() > 400).all()
    assert (rows.episode_return == rows.episode_return.round()).all()


def test_games_without_a_noop_action_are_left_out():
    import ale_py

    from crl.envs.atari import NO_NOOP_GAMES

    gym.register_envs(ale_py)
    without_noop = []
    for game in sorted(all_games()) + list(NO_NOOP_GAMES):
        env = gym.make(f"ALE/{game}-v5", full_action_space=False)
        if env.unwrapped.get_action_meanings()[0] != "NOOP":
            without_noop.append(game)
        env.close()
    assert without_noop == list(NO_NOOP_GAMES)  # none listed, and the list is exactly them
