"""DrQ (DMC) and DrQ-epsilon (Atari): where the augmentation goes, the targets against hand
computations, which parameters each update moves, checkpoints, and short runs through the loop."""

import copy

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crl import train
from crl.agents import drq
from crl.agents.drq import AtariAgent, AtariConfig, Agent, Config
from crl.registry import agent_module
from crl.replay import EpisodeReplay
from crl.rl import n_step_from_sequence


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class ShiftRecorder:
    """Stands in for crl.augment.random_shift: records its inputs, returns them plus 10 * call."""

    def __init__(self, offset=0):
        self.inputs, self.pads, self.offset = [], [], offset

    def __call__(self, x, pad=4, memory_format=torch.contiguous_format):
        self.inputs.append(x.clone())
        self.pads.append(pad)
        return (x + self.offset * (len(self.inputs) - 1)).contiguous(memory_format=memory_format)

    def count(self, x):
        return sum(torch.equal(seen, x) for seen in self.inputs)


# ============================================================================================
# DrQ on DMC
# ============================================================================================

OBS_SHAPE = (9, 24, 24)  # small images keep the tests fast; the agent is size-agnostic


def pixel_batch(batch_size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g),
        "next_obs": torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g),
        "action": torch.rand(batch_size, 2, generator=g) * 2 - 1,
        "reward": torch.rand(batch_size, generator=g),
        "discount": torch.full((batch_size,), 0.99),
    }


def make_agent(**overrides):
    torch.manual_seed(0)
    config = Config(**{"hidden_dims": (32, 32), "feature_dim": 16, **overrides})
    return Agent(gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8), gym.spaces.Box(-1, 1, (2,), np.float32), config)


@pytest.fixture
def agent():
    return make_agent()


def test_paper_defaults_and_released_preset():
    config = Config()
    assert (config.batch_size, config.lr, config.critic_tau, config.init_temperature) == (512, 1e-3, 0.01, 0.1)
    assert (config.target_augmentations, config.critic_augmentations, config.image_pad) == (2, 2, 4)
    assert config.hidden_dims == (1024, 1024) and config.feature_dim == 50
    run, released = train.build_configs("drq", "released", {})
    assert released.batch_size == 128 and run.update_every == 1 and run.action_repeat == 0


@pytest.mark.parametrize("preset", ["dmc100k", "dmc500k", "cpu-smoke", None])
def test_cheetah_run_takes_the_papers_lr_unless_set(preset):
    # DrQ Table 1: lr 2e-4 on cheetah-run, 1e-3 on the other tasks; a user's (or preset's) lr wins
    lr_on = {env: train.build_configs("drq", preset, {"env": env})[1].lr for env in ("dmc:cheetah-run", "dmc:walker-walk")}
    assert lr_on == {"dmc:cheetah-run": 2e-4, "dmc:walker-walk": 1e-3}
    assert train.build_configs("drq", preset, {"env": "dmc:cheetah-run", "lr": 5e-4})[1].lr == 5e-4


@pytest.mark.parametrize("name, preset", [("drq", p) for p in drq.PRESETS] + [("drq-eps", p) for p in drq.ATARI_PRESETS])
def test_every_preset_builds(name, preset):
    run, _ = train.build_configs(name, preset, {})
    smallest_repeat = 4 if name == "drq-eps" else 2
    if not preset.startswith("dmc500k"):  # (500k frames: the paper's 100k-transition replay)
        assert run.replay_capacity >= run.frames // smallest_repeat  # the replay holds the whole run


@pytest.mark.parametrize("k, m", [(2, 2), (3, 1)])
def test_next_obs_augmented_k_times_and_obs_m_times(monkeypatch, k, m):
    agent = make_agent(target_augmentations=k, critic_augmentations=m)
    recorder = ShiftRecorder()
    monkeypatch.setattr(drq, "random_shift", recorder)
    batch = pixel_batch()
    agent.update(batch, step=2)
    assert recorder.count(batch["next_obs"]) == k
    assert recorder.count(batch["obs"]) == m
    assert len(recorder.inputs) == k + m and set(recorder.pads) == {4}
    agent.act(batch["obs"].numpy(), explore=True)  # acting sees the observation as it is
    agent.act(batch["obs"].numpy(), explore=False)
    assert len(recorder.inputs) == k + m


def test_target_averages_over_augmentations_by_hand(agent, monkeypatch):
    """Tiny stand-in networks: feature = mean pixel f, action = f / 2, log pi = f,
    Q1 = f + a, Q2 = f - a. The k-th augmentation adds 10k to every pixel."""
    monkeypatch.setattr(drq, "random_shift", ShiftRecorder(offset=10))
    mean_pixel = Lambda(lambda obs: obs.float().flatten(1).mean(1, keepdim=True))
    agent.actor_encoder = agent.encoder_target = mean_pixel
    agent.actor = Lambda(lambda f, deterministic=False: (f / 2, f.squeeze(-1)))
    agent.critic_target = Lambda(lambda f, a: ((f + a).squeeze(-1), (f - a).squeeze(-1)))
    with torch.no_grad():
        agent.temperature.log_alpha.fill_(np.log(0.3))

    next_obs = torch.tensor([[[[1.0, 3.0]]], [[[-4.0, 0.0]]]])  # mean pixels 2 and -2
    reward, discount = torch.tensor([1.0, 0.5]), torch.tensor([0.99, 0.0])
    target = agent.target_q(reward, discount, next_obs)

    def value(f):  # min(f + f/2, f - f/2) - alpha * f
        return min(f + f / 2, f - f / 2) - 0.3 * f

    expected = [r + d * (value(f) + value(f + 10)) / 2 for r, d, f in [(1.0, 0.99, 2.0), (0.5, 0.0, -2.0)]]
    torch.testing.assert_close(target, torch.tensor(expected))


def test_critic_loss_is_the_mean_over_augmentations(agent):
    batch = pixel_batch()
    obs_aug = torch.cat([drq.random_shift(batch["obs"]), drq.random_shift(batch["obs"])])
    target = torch.randn(6)
    with torch.no_grad():
        q1, q2 = agent.critic(agent.encoder(obs_aug), batch["action"].repeat(2, 1))
    expected = sum(F.mse_loss(q1[i * 6:(i + 1) * 6], target) + F.mse_loss(q2[i * 6:(i + 1) * 6], target)
                   for i in range(2)) / 2
    metrics = agent.update_critic(obs_aug, batch["action"], target)
    torch.testing.assert_close(metrics["critic_loss"], expected)


def test_critic_update_trains_encoder_not_actor(agent):
    before = {k: params(m) for k, m in agent.modules().items()}
    batch = pixel_batch()
    agent.update_critic(agent.augment(batch["obs"], 2), batch["action"], torch.rand(6))
    assert changed(before["critic"], agent.critic) == set(before["critic"])
    assert changed(before["encoder"], agent.encoder) == set(before["encoder"])
    moved = changed(before["actor_encoder"], agent.actor_encoder)  # only the tied convs
    assert moved and all(name.startswith("convs.") for name in moved)
    for name in ("actor", "temperature", "critic_target", "encoder_target"):
        assert not changed(before[name], agent.modules()[name]), name


def test_actor_update_is_detached_from_encoder_and_critic(agent):
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.update_actor(agent.augment(pixel_batch()["obs"], 1))
    # no gradient reached the critic's encoder, shared convs included (the actor's optimiser
    # would not move them anyway, so check the gradients themselves)
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert changed(before["actor"], agent.actor) == set(before["actor"])
    moved = changed(before["actor_encoder"], agent.actor_encoder)
    assert moved and all(name.startswith("head.") for name in moved)
    assert changed(before["temperature"], agent.temperature) == {"log_alpha"}
    for name in ("encoder", "critic", "critic_target", "encoder_target"):
        assert not changed(before[name], agent.modules()[name]), name


def test_actor_and_targets_every_second_step_targets_by_polyak(agent):
    critic_target, encoder_target, actor = (params(agent.critic_target), params(agent.encoder_target),
                                            params(agent.actor))
    agent.update(pixel_batch(), step=1)
    assert not changed(critic_target, agent.critic_target) and not changed(encoder_target, agent.encoder_target)
    assert not changed(actor, agent.actor)
    agent.update(pixel_batch(seed=1), step=2)
    assert changed(actor, agent.actor)
    tau = agent.config.critic_tau
    assert tau == 0.01
    for before, target, online in [(critic_target, agent.critic_target, agent.critic),
                                   (encoder_target, agent.encoder_target, agent.encoder)]:
        online_params = dict(online.named_parameters())
        for name, p in target.named_parameters():
            torch.testing.assert_close(p, (1 - tau) * before[name] + tau * online_params[name])


def test_convs_tied_and_state_dict_round_trip(agent):
    agent.update(pixel_batch(), step=2)
    clone = make_agent()
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = pixel_batch(2, seed=5)["obs"].numpy()
    np.testing.assert_array_equal(agent.act(obs, explore=False), clone.act(obs, explore=False))
    for a in (agent, clone):
        assert all(x is y for x, y in zip(a.actor_encoder.convs.parameters(), a.encoder.convs.parameters()))


def test_drq_run_on_dmc_cartpole_balance(tmp_path):
    run, config = train.build_configs("drq", None, dict(
        env="dmc:cartpole-balance", visuals="fast", frames=400, seed_frames=200, eval_every_frames=400,
        eval_episodes=1, checkpoint_every_frames=0, replay_capacity=1000,
        batch_size=8, hidden_dims=(16, 16), feature_dim=8))
    result = train.train("drq", run, config, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(rows.frames) == [400] and rows.updates.iloc[-1] == 26  # agent steps 25..50, repeat 8
    assert np.isfinite(result["episode_return"])


# ============================================================================================
# DrQ-epsilon on Atari
# ============================================================================================

ATARI_SHAPE = (4, 36, 36)  # the smallest input the Nature-DQN convs accept


def make_atari_agent(**overrides):
    torch.manual_seed(0)
    config = AtariConfig(**{"hidden_dim": 16, **overrides})
    return AtariAgent(gym.spaces.Box(0, 255, ATARI_SHAPE, np.uint8), gym.spaces.Discrete(3), config)


def atari_window(batch_size=5, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch_size, length + 1, *ATARI_SHAPE), dtype=torch.uint8, generator=g),
        "action": torch.randint(0, 3, (batch_size, length), generator=g),
        "reward": torch.randn(batch_size, length, generator=g) * 3,
        "terminated": torch.zeros(batch_size, length),
        "mask": torch.ones(batch_size, length),
    }


def test_atari_registry_namespace_and_presets():
    module = agent_module("drq-eps")
    assert module.Agent is AtariAgent and module.Config is AtariConfig
    run, config = train.build_configs("drq-eps", "atari100k", {})
    assert run.frames == 400_000 and run.terminal_on_life_loss and run.seed_frames == 6_400
    assert run.update_every == 1
    assert (config.n_step, config.batch_size, config.target_update_every) == (10, 32, 1)
    assert (config.lr, config.adam_eps) == (1e-4, 1.5e-4)
    _, original = train.build_configs("drq-eps", "atari100k-drq", {})
    assert (original.epsilon_train, original.epsilon_eval) == (0.1, 0.05)
    assert AtariAgent.batch_kind == "sequences"
    assert make_atari_agent().sampler_options() == {"length": 10, "pad": True}


def test_double_dqn_ten_step_target_by_hand():
    """A replay of two episodes whose frames hold their step index; stand-in Q tables:
    online Q(s_t) = [t mod 3, 1, 2 - t mod 3], target Q(s_t) = [100 + t, 200 + t, 300 + t]."""
    gamma, n = 0.9, 10
    rewards = [[2.0, -0.5, 0.0, 5.0, -3.0, 1.0, 0.25, 0.0, -1.0, 4.0, 0.5, 1.0, 0.0, 2.0, -2.0, 0.75, 0.0, 3.0],
               [0.5, -4.0, 1.0, 0.0, 2.0, 0.0, 1.0, -0.25, 0.0, 1.0, 3.0, 0.0, 0.0, -1.0]]
    terminated_at_end = [True, False]  # the second episode is truncated: bootstrap from its last obs
    replay = EpisodeReplay(1000, frame_stack=4, seed=0)
    for episode, (rs, terminated) in enumerate(zip(rewards, terminated_at_end)):
        frame = lambda t: np.full((1, 2, 2), t, np.uint8)  # noqa: E731
        replay.add_first(np.repeat(frame(0), 4, axis=0))
        for t, r in enumerate(rs):
            last = t == len(rs) - 1
            replay.add(0, r, np.repeat(frame(t + 1), 4, axis=0), terminated=last and terminated,
                       truncated=last and not terminated)
    window = replay.sample_sequences(64, n, pad=True, return_index=True)

    agent = make_atari_agent()
    step_of = lambda obs: obs[:, -1, 0, 0].float()  # noqa: E731  newest frame's value
    agent.q_net = Lambda(lambda obs: torch.stack([step_of(obs) % 3, torch.ones(len(obs)), 2 - step_of(obs) % 3], 1))
    agent.target_net = Lambda(lambda obs: torch.stack([100 + step_of(obs), 200 + step_of(obs), 300 + step_of(obs)], 1))
    t = n_step_from_sequence(window, gamma, reward_clip=1.0)
    target = agent.td_target(t["reward"], t["discount"], t["next_obs"])

    for i, (episode, start) in enumerate(zip(window["episode"].tolist(), window["step"].tolist())):
        rs = rewards[episode]
        m = min(n, len(rs) - start)
        expected = sum(gamma**k * max(-1.0, min(1.0, rs[start + k])) for k in range(m))
        s_next = start + m
        if not (terminated_at_end[episode] and s_next == len(rs)):
            online = [s_next % 3, 1, 2 - s_next % 3]
            best = int(np.argmax(online))  # double DQN: online picks, target evaluates
            expected += gamma**m * [100 + s_next, 200 + s_next, 300 + s_next][best]
        assert target[i].item() == pytest.approx(expected, rel=1e-5), (episode, start)


def test_atari_augments_obs_and_next_obs_once_each(monkeypatch):
    agent = make_atari_agent()
    recorder = ShiftRecorder()
    monkeypatch.setattr(drq, "random_shift", recorder)
    window = atari_window()
    agent.update(window, step=1)
    t = n_step_from_sequence(window, agent.config.gamma, agent.config.reward_clip)
    assert len(recorder.inputs) == 2 and set(recorder.pads) == {4}
    assert recorder.count(t["obs"]) == 1 and recorder.count(t["next_obs"]) == 1
    agent.act(window["obs"][:, 0].numpy(), explore=True)
    assert len(recorder.inputs) == 2


def test_atari_augmentation_adds_random_intensity(monkeypatch):
    monkeypatch.setattr(drq, "random_shift", lambda x, pad=4: x)
    agent = make_atari_agent()
    obs = torch.randint(1, 256, (500, *ATARI_SHAPE), dtype=torch.uint8)
    ratio = agent.augment(obs) / obs.float()  # 1 + 0.05 * clip(N(0, 1), -2, 2), one per sample
    per_sample = ratio.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample.min() >= 0.9 - 1e-6 and per_sample.max() <= 1.1 + 1e-6
    assert abs(per_sample[:, 0].std().item() - 0.05) < 0.01


def test_atari_update_moves_online_net_and_copies_target():
    agent = make_atari_agent(target_update_every=2)
    online, target = params(agent.q_net), params(agent.target_net)
    agent.update(atari_window(), step=1)
    assert changed(online, agent.q_net) == set(online)
    assert not changed(target, agent.target_net)
    agent.update(atari_window(seed=1), step=2)
    for (name, p), q in zip(agent.target_net.named_parameters(), agent.q_net.parameters()):
        assert torch.equal(p, q), name

    every_step = make_atari_agent()  # the paper: the target is refreshed after every update
    every_step.update(atari_window(), step=1)
    for p, q in zip(every_step.target_net.parameters(), every_step.q_net.parameters()):
        assert torch.equal(p, q)


def test_atari_huber_loss_on_clipped_returns(monkeypatch):
    monkeypatch.setattr(drq, "random_shift", lambda x, pad=4: x)
    agent = make_atari_agent(intensity_scale=0.0)
    window = atari_window()
    t = n_step_from_sequence(window, agent.config.gamma, 1.0)
    with torch.no_grad():
        target = agent.td_target(t["reward"], t["discount"], t["next_obs"])
        q = agent.q_net(t["obs"]).gather(1, t["action"][:, None]).squeeze(1)
    diff = (q - target).abs()
    expected = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    metrics = agent.update(window, step=1)
    assert metrics["q_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_epsilon_schedule_and_evaluation_epsilon():
    agent = make_atari_agent(epsilon_eval=0.0)
    obs = np.random.default_rng(0).integers(0, 256, (400, *ATARI_SHAPE), dtype=np.uint8)
    agent.set_progress(frames=0, agent_steps=0, updates=0)
    assert agent.epsilon == 1.0
    agent.set_progress(frames=4 * 4100, agent_steps=4100, updates=0)
    assert agent.epsilon == pytest.approx((1 + 0.01) / 2)
    agent.set_progress(frames=4 * 10**5, agent_steps=10**5, updates=0)
    assert agent.epsilon == pytest.approx(0.01)
    with torch.no_grad():
        greedy = agent.q_net(torch.as_tensor(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(agent.act(obs, explore=False), greedy)
    agent.set_progress(frames=0, agent_steps=0, updates=0)
    assert len(set(agent.act(obs, explore=True).tolist())) == 3  # uniformly random


def test_atari_state_dict_round_trip():
    agent = make_atari_agent()
    agent.update(atari_window(), step=1)
    clone = make_atari_agent()
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = atari_window(seed=3)["obs"][:, 0]
    for a, b in [(agent.q_net, clone.q_net), (agent.target_net, clone.target_net)]:
        torch.testing.assert_close(a(obs), b(obs))
    assert clone.opt.state_dict()["state"].keys() == agent.opt.state_dict()["state"].keys()


def test_drq_eps_run_on_atari_pong(tmp_path):
    run, config = train.build_configs("drq-eps", None, dict(
        env="atari:Pong", frames=400, seed_frames=200, eval_every_frames=400, eval_episodes=1,
        checkpoint_every_frames=0, replay_capacity=1000, batch_size=4, hidden_dim=16, n_step=3,
        epsilon_warmup_steps=50, epsilon_decay_steps=20))
    assert run.terminal_on_life_loss  # the paper's setting, from RUN_DEFAULTS
    result = train.train("drq-eps", run, config, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(rows.frames) == [400] and rows.updates.iloc[-1] == 51  # agent steps 50..100
    assert -21 <= result["episode_return"] <= 21


def test_bfloat16_update(check_bfloat16_update):
    check_bfloat16_update(make_agent(), make_agent(precision="bfloat16"), pixel_batch(), 2,
                          moved=("encoder", "actor", "critic", "critic_target", "encoder_target"))


@pytest.mark.parametrize("agent", ["drq", "curl"])
def test_the_seed_phase_is_the_papers_1000_agent_steps_on_every_task(agent):
    frames = {env: train.build_configs(agent, "dmc100k", {"env": env})[0].seed_frames
              for env in ("dmc:cartpole-swingup", "dmc:walker-walk", "dmc:cheetah-run", "dmc:ball_in_cup-catch")}
    assert frames == {"dmc:cartpole-swingup": 8000, "dmc:walker-walk": 2000, "dmc:cheetah-run": 4000,
                      "dmc:ball_in_cup-catch": 4000}
    run, _ = train.build_configs(agent, None, {"env": "dmc:walker-walk", "action_repeat": 4})
    assert run.seed_frames == 4000  # the repeat asked for
    run, _ = train.build_configs(agent, "cpu-smoke", {"env": "dmc:cartpole-balance"})
    assert run.seed_frames == {"drq": 4000, "curl": 2000}[agent]  # a preset's seed_frames wins
    run, _ = train.build_configs(agent, None, {"env": "dmc:walker-walk", "seed_frames": 100})
    assert run.seed_frames == 100
    # the states of the same tasks repeat as their pixels; other suites keep RUN_DEFAULTS' frames
    assert train.build_configs(agent, None, {"env": "dmc-state:cartpole-swingup"})[0].seed_frames == 8000
    assert train.build_configs(agent, None, {"env": "maze-pixels:PointMaze_UMaze-v3"})[0].seed_frames == 4000
