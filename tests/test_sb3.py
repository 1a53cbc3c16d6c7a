"""The stable-baselines3 baselines: configs, presets, the SB3 mapping and short runs through the CLI."""

import csv
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from crl import cli, envs, train
from crl.agents import sb3
from crl.logger import read_config, write_config
from crl.registry import agent_module


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name, presets", [("sb3-sac", {"dmc100k", "dmc500k", "cpu-smoke"}),
                                           ("sb3-dqn", {"atari100k", "cpu-smoke"})])
def test_registered_with_presets_that_build(name, presets):
    namespace = agent_module(name)
    assert namespace.name == name and callable(namespace.train_run)
    assert presets <= set(namespace.PRESETS)
    for preset in namespace.PRESETS:
        train.build_configs(name, preset, {})


def test_atari100k_preset_is_100k_agent_steps_with_life_loss():
    run, config = train.build_configs("sb3-dqn", "atari100k", {})
    assert run.frames == 100_000 * 4 and run.terminal_on_life_loss
    assert run.seed_frames // 4 == 1600 and config.n_steps == 10 and config.batch_size == 32


def test_clip_reward_keeps_raw_reward_in_info():
    class Scores(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(1)

        def reset(self, seed=None, options=None):
            return 0, {}

        def step(self, action):
            return 0, 7.0, False, False, {}

    _, reward, _, _, info = sb3.ClipReward(Scores()).step(0)
    assert reward == 1.0 and info["raw_reward"] == 7.0


def test_dqn_maps_loop_settings_and_exploration_steps():
    run, config = train.build_configs("sb3-dqn", "atari100k", {"env": "atari:Pong", "buffer_size": 100,
                                                               "features_dim": 16})
    env = sb3.training_env(run, config)
    assert isinstance(env, sb3.ClipReward)  # learns from clipped rewards
    assert sb3.frames_per_step(env) == 4
    model = sb3.DQN.build(env, run, config, 4, "cpu")
    assert model.learning_starts == 1600 and model.batch_size == 32 and model.n_steps == 10
    assert model.train_freq.frequency == 1 and model.gradient_steps == 1
    # epsilon reaches its floor after exploration_steps agent steps of learn(total_timesteps=run.frames)
    progress_at = lambda steps: 1 - steps / run.frames  # noqa: E731
    assert model.exploration_schedule(progress_at(0)) == pytest.approx(1.0)
    assert model.exploration_schedule(progress_at(2500)) == pytest.approx(0.505, abs=1e-3)
    assert model.exploration_schedule(progress_at(5000)) == pytest.approx(0.01, abs=1e-6)
    assert model.policy.optimizer.defaults["eps"] == pytest.approx(1.5e-4)
    env.close()


def test_sac_and_dqn_hand_their_settings_to_sb3():
    state_env = envs.make("dmc-state:cartpole-balance")
    run, config = train.build_configs("sb3-sac", None, {"env": "dmc-state:cartpole-balance", "frames": 1000,
                                                        "gamma": 0.98, "tau": 0.02, "learning_rate": 1e-3})
    model = sb3.SAC.build(state_env, run, config, 1, "cpu")
    assert (model.gamma, model.tau, model.learning_rate) == (0.98, 0.02, 1e-3)
    assert model.ent_coef == "auto" and model.target_entropy == -1.0  # learned alpha, target -|A|
    assert model.target_update_interval == 1 and model.batch_size == 256
    assert model.policy.share_features_extractor is False and model.policy.net_arch == [256, 256]
    fixed = sb3.SAC.build(state_env, run, sb3.SACConfig(ent_coef="0.2"), 1, "cpu")
    assert float(fixed.ent_coef_tensor) == pytest.approx(0.2)
    state_env.close()

    run, config = train.build_configs("sb3-dqn", "atari100k", {"env": "atari:Pong", "buffer_size": 100,
                                                               "features_dim": 16, "max_grad_norm": 5.0})
    env = sb3.training_env(run, config)
    model = sb3.DQN.build(env, run, config, 4, "cpu")
    assert (model.gamma, model.tau, model.learning_rate, model.max_grad_norm) == (0.99, 1.0, 1e-4, 5.0)
    assert model.target_update_interval == config.target_update_interval
    env.close()


def test_sac_policy_follows_observations():
    pixels = envs.make("dmc:cartpole-balance", visuals="fast")
    states = envs.make("dmc-state:cartpole-balance")
    assert sb3.policy_for(sb3.SACConfig(), pixels)[0] == "CnnPolicy"
    assert sb3.policy_for(sb3.SACConfig(), states)[0] == "MlpPolicy"
    assert sb3.frames_per_step(pixels) == 8
    run, config = train.build_configs("sb3-sac", "dmc100k", {"env": "dmc:cartpole-balance"})
    assert sb3.budget_buffer(config, run, 8) == 100_000 // 8 + 1
    pixels.close()
    states.close()


TINY_SAC = ["visuals=fast", "seed_frames=240", "eval_every_frames=200", "eval_episodes=1", "batch_size=8",
            "features_dim=16", "net_arch=16,16"]


def test_sb3_sac_run_through_cli(tmp_path, capsys):
    logdir = tmp_path / "sac"
    code = cli.main(["train", "sb3-sac", "--env", "dmc:cartpole-balance", "--frames", "400",
                     "--logdir", str(logdir), "--set", *TINY_SAC])
    assert code == 0
    rows = read_rows(logdir / "eval.csv")
    assert list(rows[0])[:6] == ["frames", "agent_steps", "updates", "wall_time", "episode_return",
                                 "episode_return_std"]
    assert [int(r["frames"]) for r in rows] == [200, 400]
    assert [int(r["agent_steps"]) for r in rows] == [25, 50]  # cartpole repeats each action 8 times
    assert int(rows[-1]["updates"]) > 0
    config = read_config(logdir)
    assert config["agent"] == "sb3-sac" and config["run"]["frames"] == 400
    assert config["agent_config"]["net_arch"] == [16, 16]
    assert list((logdir / "checkpoints").glob("sb3_*.zip"))

    before = (logdir / "eval.csv").read_bytes(), (logdir / "config.yaml").read_bytes()
    small_sac = ["visuals=fast", "seed_frames=100", "eval_every_frames=200", "eval_episodes=1", "batch_size=8"]
    for agent, settings in (("sb3-sac", TINY_SAC), ("sac", small_sac)):  # either would overwrite its logs
        assert cli.main(["train", agent, "--env", "dmc:cartpole-balance", "--frames", "200",
                         "--logdir", str(logdir), "--set", *settings]) == 2
        assert "already holds a finished SB3 run (sb3_000000000400.zip)" in capsys.readouterr().err
    assert ((logdir / "eval.csv").read_bytes(), (logdir / "config.yaml").read_bytes()) == before
    for target in (logdir, logdir / "checkpoints" / "sb3_000000000400.zip"):
        assert cli.main(["eval", str(target)]) == 2
        assert "is a stable-baselines3 model (agents/sb3.py), not a crl checkpoint" in capsys.readouterr().err


def test_sb3_dqn_run_through_cli(tmp_path, monkeypatch):
    policies = []
    real_policy = sb3.Policy
    monkeypatch.setattr(sb3, "Policy", lambda model, **kwargs: policies.append(kwargs) or real_policy(model, **kwargs))
    logdir = tmp_path / "dqn"
    code = cli.main(["train", "sb3-dqn", "--env", "atari:Pong", "--frames", "400", "--logdir", str(logdir),
                     "--set", "seed_frames=200", "eval_every_frames=400", "eval_episodes=1", "batch_size=8",
                     "buffer_size=200", "features_dim=16"])
    assert code == 0
    rows = read_rows(logdir / "eval.csv")
    assert [int(r["frames"]) for r in rows] == [400]
    assert int(rows[0]["agent_steps"]) == 100 and int(rows[0]["updates"]) > 0
    assert -21 <= float(rows[0]["episode_return"]) <= 21  # raw Pong score, not clipped rewards
    assert read_config(logdir)["run"]["terminal_on_life_loss"] is True
    assert policies == [{"epsilon": 0.001, "seed": 0}]  # evaluation is epsilon-greedy, seeded by the run


def test_resume_is_refused_plainly(tmp_path, capsys):
    logdir = tmp_path / "sac"
    (logdir / "checkpoints").mkdir(parents=True)
    (logdir / "config.yaml").write_text("agent: sb3-sac\nrun: {}\nagent_config: {}\n")
    assert cli.main(["train", "sb3-sac", "--resume", str(logdir)]) == 2
    assert "sb3-sac runs do not resume" in capsys.readouterr().err


def test_train_and_resume_dispatch_to_an_agents_own_loop(tmp_path, monkeypatch):
    calls = []
    own_loop = SimpleNamespace(
        train_run=lambda run, config, run_dir: calls.append(("train", run.env, config, run_dir)) or {"frames": 1},
        resume_run=lambda run_dir, frames: calls.append(("resume", run_dir, frames)) or {"frames": 2})
    monkeypatch.setattr(train, "agent_module", lambda name: own_loop)
    run_dir = tmp_path / "run"
    assert train.train("own", train.RunConfig(env="dmc-state:cartpole-balance"), "cfg", run_dir) == {"frames": 1}
    write_config(run_dir, {"agent": "own", "run": {}, "agent_config": {}})
    assert train.resume(run_dir, frames=10) == {"frames": 2}
    assert calls == [("train", "dmc-state:cartpole-balance", "cfg", run_dir), ("resume", run_dir, 10)]


def test_more_than_one_env_is_an_error(tmp_path):
    run, config = train.build_configs("sb3-sac", None, {"env": "dmc-state:cartpole-balance", "num_envs": 2})
    with pytest.raises(ValueError, match="num_envs"):
        train.train("sb3-sac", run, config, tmp_path / "run")


def test_eval_adapter_batches_like_our_agents():
    class Model:
        def predict(self, obs, deterministic):
            return np.zeros((len(obs), 1)) + deterministic, None

    policy = sb3.Policy(Model())
    assert policy.act(np.zeros((1, 5)), explore=False).tolist() == [[1.0]]
    assert policy.act(np.zeros((1, 5)), explore=True).tolist() == [[0.0]]


def test_dqn_evaluation_epsilon_is_drq_eps_and_curl_rainbows():
    assert sb3.DQNConfig().epsilon_eval == 0.001
    assert agent_module("drq-eps").Config().epsilon_eval == sb3.DQNConfig().epsilon_eval
    assert agent_module("curl-rainbow").Config().epsilon_eval == sb3.DQNConfig().epsilon_eval


def test_dqn_eval_actions_are_greedy_but_for_epsilon_random_ones():
    run, config = train.build_configs("sb3-dqn", "atari100k", {"env": "atari:Pong", "buffer_size": 100,
                                                               "features_dim": 16})
    env = sb3.training_env(run, config)
    model = sb3.DQN.build(env, run, config, 4, "cpu")
    env.close()
    obs = np.random.default_rng(0).integers(0, 256, (200, 4, 84, 84), dtype=np.uint8)
    greedy, _ = model.predict(obs, deterministic=True)

    np.testing.assert_array_equal(sb3.Policy(model, epsilon=0.0, seed=1).act(obs, explore=False), greedy)

    policy = sb3.Policy(model, epsilon=0.5, seed=1)
    actions = np.concatenate([policy.act(obs, explore=False) for _ in range(5)])  # 1000 rows
    changed = np.mean(actions != np.tile(greedy, 5))
    num_actions = model.action_space.n
    expected = 0.5 * (1 - 1 / num_actions)  # a random action is the greedy one 1 time in num_actions
    assert abs(changed - expected) < 4 * np.sqrt(expected * (1 - expected) / len(actions))
    assert set(actions.tolist()) == set(range(num_actions))
    again = sb3.Policy(model, epsilon=0.5, seed=1)  # reproducible from its seed
    np.testing.assert_array_equal(np.concatenate([again.act(obs, explore=False) for _ in range(5)]), actions)


def test_builders_refuse_action_spaces_sb3_cannot_take():
    with pytest.raises(ValueError, match=r"sb3-sac needs continuous \(Box\) actions; .* Discrete\(6\)"):
        sb3.build_sac(SimpleNamespace(action_space=gym.spaces.Discrete(6)), None, None, 1, "cpu")
    with pytest.raises(ValueError, match=r"sb3-dqn needs discrete \(Discrete\) actions; .* Box\("):
        sb3.build_dqn(SimpleNamespace(action_space=gym.spaces.Box(-1, 1, (2,))), None, None, 1, "cpu")
