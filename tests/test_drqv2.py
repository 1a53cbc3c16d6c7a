"""DrQ-v2: which parameters an update moves, augmentation of s and s', the target and actor loss
against hand computations, the exploration schedule, checkpoints, and a short run of the loop."""

import copy

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

import crl.augment
from crl import train
from crl.train import RunConfig
from crl.agents import drqv2
from crl.agents.drqv2 import DIFFICULTY, Agent, Config, parse_stddev_schedule
from crl.encoders import DrQV2Encoder, Trunk
from crl.replay import EpisodeReplay

OBS_SHAPE = (9, 16, 16)  # the conv stack maps 16x16 to 1x1: repr_dim 32
ACTION_DIM = 2
TINY = dict(hidden_dims=(8, 8), feature_dim=4)


def make_agent(**overrides):
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8)
    return Agent(obs_space, gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32), Config(**(TINY | overrides)))


def make_batch(batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g),
        "next_obs": torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g),
        "action": torch.rand(batch_size, ACTION_DIM, generator=g) * 2 - 1,
        "reward": torch.rand(batch_size, generator=g),
        "discount": torch.full((batch_size,), 0.99**3),
    }


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


# -- numpy forward passes, written out from the state dicts --------------------------------------


def np_linear(sd, prefix, x):
    return x @ sd[f"{prefix}.weight"].numpy().T + sd[f"{prefix}.bias"].numpy()


def np_trunk(sd, prefix, h):
    x = np_linear(sd, f"{prefix}.0", h)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return np.tanh(x * sd[f"{prefix}.1.weight"].numpy() + sd[f"{prefix}.1.bias"].numpy())


def np_mlp(sd, prefix, x):  # Linear -> ReLU -> Linear -> ReLU -> Linear
    x = np.maximum(np_linear(sd, f"{prefix}.0", x), 0)
    x = np.maximum(np_linear(sd, f"{prefix}.2", x), 0)
    return np_linear(sd, f"{prefix}.4", x)


def np_actor_mean(actor, h):
    sd = actor.state_dict()
    return np.tanh(np_mlp(sd, "policy.net", np_trunk(sd, "trunk", h)))


def np_twin_q(critic, h, action):
    sd = critic.state_dict()
    x = np.concatenate([np_trunk(sd, "trunk", h), action], axis=-1)
    return np_mlp(sd, "q.q1", x)[:, 0], np_mlp(sd, "q.q2", x)[:, 0]


def np_smoothed(mean, eps, std, clip=0.3):
    return np.clip(mean + np.clip(std * eps, -clip, clip), -1, 1)


def saturate_actor(agent):
    # Large last-layer weights push the mean towards +-1, so that clamping the noisy action matters.
    with torch.no_grad():
        agent.actor.policy.net.last_linear.weight.mul_(30.0)


# -- structure and defaults ---------------------------------------------------------------------


def test_built_from_crl_parts_and_paper_defaults():
    agent = make_agent()
    assert isinstance(agent.encoder, DrQV2Encoder)
    assert isinstance(agent.actor.trunk, Trunk) and isinstance(agent.critic.trunk, Trunk)
    assert agent.actor.trunk is not agent.critic.trunk
    # The critic's target copies its trunk and heads; there is no target encoder.
    assert set(agent.critic_target.state_dict()) == set(agent.critic.state_dict())
    assert set(agent.modules()) == {"encoder", "actor", "critic", "critic_target"}
    config = Config()
    assert (config.n_step, config.batch_size, config.lr, config.critic_tau) == (3, 256, 1e-4, 0.01)
    assert (config.hidden_dims, config.feature_dim, config.stddev_clip) == ((1024, 1024), 50, 0.3)
    assert agent.sampler_options() == {"n_step": 3, "gamma": 0.99}
    run, _ = train.build_configs("drqv2", None, {})
    assert (run.action_repeat, run.update_every, run.seed_frames) == (2, 2, 4000)


@pytest.mark.parametrize("preset", sorted(drqv2.PRESETS))
def test_presets_build(preset):
    run, config = train.build_configs("drqv2", preset, {})
    parse_stddev_schedule(config.stddev_schedule)
    agent_steps = run.frames // (run.action_repeat or 2)
    assert run.replay_capacity < 2 * agent_steps + 10_000  # sized to the budget
    if preset.startswith("dmc"):
        assert agent_steps < run.replay_capacity  # holds the whole run
        assert run.action_repeat == 0 and config.schedule_counter == "frames"
    else:  # cpu-smoke keeps the last 12k transitions of its 16k agent steps, as measured (BENCHMARKS.md)
        assert run.replay_capacity == 12_000


# -- one update -----------------------------------------------------------------------------------


def test_update_moves_encoder_actor_critic_and_target_only_by_polyak():
    agent = make_agent()
    before = {name: params(module) for name, module in agent.modules().items()}
    metrics = agent.update(make_batch(), step=1)
    assert {"critic_loss", "actor_loss", "q", "target_q", "stddev"} <= set(metrics)
    for name in ("encoder", "actor", "critic"):
        assert changed(before[name], agent.modules()[name]) == set(before[name]), name
    assert changed(before["critic_target"], agent.critic_target) == set(before["critic_target"])  # trunk too
    tau = agent.config.critic_tau
    critic = dict(agent.critic.named_parameters())
    for name, p in agent.critic_target.named_parameters():
        torch.testing.assert_close(p, (1 - tau) * before["critic_target"][name] + tau * critic[name])


def test_encoder_is_trained_by_the_critic_loss_only(monkeypatch):
    agent = make_agent()
    encoder, actor = params(agent.encoder), params(agent.actor)
    monkeypatch.setattr(agent, "update_critic", lambda *args: {})  # the actor's update alone
    agent.update(make_batch(), step=1)
    assert not changed(encoder, agent.encoder)
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert changed(actor, agent.actor) == set(actor)


def test_actor_update_leaves_critic_unchanged():
    agent = make_agent()
    critic = params(agent.critic)
    h = agent.encoder(make_batch()["obs"]).detach()
    agent.update_actor(h)
    assert not changed(critic, agent.critic)


def test_obs_and_next_obs_are_shifted_independently_before_encoding(monkeypatch):
    agent = make_agent()
    calls, encoded = [], []
    real_encoder_forward = agent.encoder.forward

    def recording_shift(x, pad=4, **kwargs):
        out = crl.augment.random_shift_bilinear(x, pad, **kwargs)
        calls.append((x.clone(), pad, out))
        return out

    def recording_encoder(obs, *args, **kwargs):
        encoded.append(obs)
        return real_encoder_forward(obs, *args, **kwargs)

    assert drqv2.random_shift_bilinear is crl.augment.random_shift_bilinear
    monkeypatch.setattr(drqv2, "random_shift_bilinear", recording_shift)
    monkeypatch.setattr(agent.encoder, "forward", recording_encoder)
    batch = make_batch()
    agent.update(batch, step=1)
    assert len(calls) == 2  # one call each: independent shifts for s and s'
    assert torch.equal(calls[0][0], batch["obs"]) and torch.equal(calls[1][0], batch["next_obs"])
    assert [pad for _, pad, _ in calls] == [4, 4]
    assert [obs is out for obs, (_, _, out) in zip(encoded, calls)] == [True, True]

    calls.clear()
    agent.act(batch["obs"][:2].numpy(), explore=True)
    agent.act(batch["obs"][:2].numpy(), explore=False)
    assert not calls  # acting sees the observation as it is


# -- target and actor loss against hand computations ----------------------------------------------


def test_target_is_nstep_min_of_twin_target_qs_at_the_smoothed_action():
    agent = make_agent(stddev_schedule="1.0")  # std 1 so that the 0.3 clip is active
    saturate_actor(agent)
    with torch.no_grad():  # make the target critic differ from the critic
        for p in agent.critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    next_h = torch.randn(16, agent.encoder.repr_dim, generator=g)
    reward = torch.rand(16, generator=g)
    discount = torch.tensor([0.99**3] * 10 + [0.99**2, 0.99, 0.0, 0.0, 0.99**3, 0.99**3])

    torch.manual_seed(123)
    eps = torch.randn(16, ACTION_DIM).numpy()
    mean = np_actor_mean(agent.actor, next_h.numpy())
    assert np.abs(mean).max() > 0.9 and np.abs(eps).max() > 0.3
    next_action = np_smoothed(mean, eps, std=1.0)
    q1, q2 = np_twin_q(agent.critic_target, next_h.numpy(), next_action)
    with torch.no_grad():  # shift Q2 so that each head is the smaller one on some samples
        agent.critic_target.q.q2.last_linear.bias.add_(float(np.median(q1 - q2)))
    q1, q2 = np_twin_q(agent.critic_target, next_h.numpy(), next_action)
    assert (q1 < q2).any() and (q2 < q1).any()

    torch.manual_seed(123)
    target = agent.target_q(reward, discount, next_h)
    expected = reward.numpy() + discount.numpy() * np.minimum(q1, q2)
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_replay_serves_three_step_returns_and_discounts():
    agent = make_agent()
    replay = EpisodeReplay(100, seed=0)
    replay.add_first(np.zeros(3, np.float32))
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0]
    for t, r in enumerate(rewards):
        next_obs = np.full(3, t + 1, np.float32)
        replay.add(np.zeros(2, np.float32), r, next_obs, terminated=t == 4, truncated=False)
    batch = replay.transitions_at([0, 0], [0, 3], **agent.sampler_options())
    gamma = 0.99
    np.testing.assert_allclose(batch["reward"], [1 + 2 * gamma + 4 * gamma**2, 8 + 16 * gamma], rtol=1e-6)
    np.testing.assert_allclose(batch["discount"], [gamma**3, 0.0], rtol=1e-6)


def test_actor_loss_is_minus_min_q_at_mean_plus_clipped_noise():
    agent = make_agent(stddev_schedule="1.0")
    saturate_actor(agent)
    h = torch.randn(16, agent.encoder.repr_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # shift Q2 so that each head is the smaller one on some samples
        q1, q2 = agent.critic(h, agent.actor(h))
        agent.critic.q.q2.last_linear.bias.add_((q1 - q2).median())

    torch.manual_seed(7)
    loss = agent.actor_loss(h)
    agent.actor.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in agent.actor.parameters()]

    torch.manual_seed(7)
    eps = torch.randn(16, ACTION_DIM)
    action = np_smoothed(np_actor_mean(agent.actor, h.numpy()), eps.numpy(), std=1.0)
    q1, q2 = np_twin_q(agent.critic, h.numpy(), action)
    assert (q1 < q2).any() and (q2 < q1).any()
    np.testing.assert_allclose(loss.item(), -np.minimum(q1, q2).mean(), rtol=1e-5)

    # The clamp to [-1, 1] is straight-through, as the released code's truncated normal: the
    # gradient reaches the actor even where the noisy action was clamped.
    mean = agent.actor(h)
    reference = mean + (torch.as_tensor(action, dtype=torch.float32) - mean).detach()
    agent.actor.zero_grad()
    (-torch.min(*agent.critic(h, reference)).mean()).backward()
    for grad, p in zip(grads, agent.actor.parameters()):
        torch.testing.assert_close(grad, p.grad)
    assert any(g.abs().sum() > 0 for g in grads)


def test_action_l2_adds_its_penalty_and_pulls_actions_in_where_the_critic_is_flat():
    agent = make_agent(stddev_schedule="1.0", action_l2=0.5, lr=1e-2)
    h = torch.randn(16, agent.encoder.repr_dim, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    penalised = agent.actor_loss(h)
    agent.config.action_l2 = 0.0
    torch.manual_seed(7)
    plain = agent.actor_loss(h)
    mean = agent.actor(h).detach()
    torch.testing.assert_close(penalised, plain + 0.5 * mean.pow(2).mean())

    # A critic blind to the action leaves the penalty as the actor's only gradient: actions shrink.
    agent.config.action_l2 = 0.5
    with torch.no_grad():
        for head in (agent.critic.q.q1, agent.critic.q.q2):
            head.last_linear.weight.zero_()
        agent.actor.policy.net.last_linear.bias.copy_(torch.tensor([1.0, -1.0]))
    before = agent.actor(h).abs().mean()
    for _ in range(20):
        agent.update_actor(h)
    assert agent.actor(h).abs().mean() < 0.5 * before


def test_actor_saturation_metric_counts_actions_held_at_the_bounds():
    agent = make_agent()
    batch = make_batch(16)
    fresh = agent.update(batch, step=2)["actor_saturation"]
    with torch.no_grad():  # a bias far beyond tanh's range: every component at +1 or -1
        bias = agent.actor.policy.net.last_linear.bias
        bias.copy_(torch.tensor([50.0, -50.0]))
        mean = agent.actor(agent.encoder(batch["obs"]))
    assert (mean.abs() > drqv2.ACTION_SATURATION).all()
    assert fresh < 0.5 and agent.update(batch, step=4)["actor_saturation"] == 1.0
    with torch.no_grad():  # only the first action dimension held at its bound: half the components
        bias.copy_(torch.tensor([50.0, 0.0]))
        agent.actor.policy.net.last_linear.weight.zero_()
    assert agent.update(batch, step=6)["actor_saturation"] == 0.5


def test_exploration_adds_scheduled_noise_and_evaluation_does_not():
    agent = make_agent(stddev_schedule="0.2")
    obs = make_batch(256)["obs"].numpy()
    mean = agent.act(obs, explore=False)
    np.testing.assert_array_equal(mean, agent.act(obs, explore=False))
    noisy = agent.act(obs, explore=True)
    assert np.all(np.abs(noisy) <= 1.0)
    central = np.abs(mean) < 0.3  # where clamping at +-1 would need a 3.5-sigma draw
    assert central.sum() > 100
    assert abs((noisy - mean)[central].std() - 0.2) < 0.02


# -- schedule -----------------------------------------------------------------------------------


def test_stddev_schedule_parsing():
    assert parse_stddev_schedule("easy") == (1.0, 0.1, 100_000)
    assert parse_stddev_schedule("medium") == (1.0, 0.1, 500_000)
    assert parse_stddev_schedule("hard") == (1.0, 0.1, 2_000_000)
    assert parse_stddev_schedule("linear(1.0,0.1,3000)") == (1.0, 0.1, 3000)
    assert parse_stddev_schedule("0.5, 0.2, 10") == (0.5, 0.2, 10)
    assert parse_stddev_schedule((1.0, 0.1, 500)) == (1.0, 0.1, 500)
    assert parse_stddev_schedule("0.2") == (0.2, 0.2, 1)
    for bad in ("easiest", "1,2", "linear(a,b,c)"):
        with pytest.raises(ValueError, match="stddev_schedule"):
            parse_stddev_schedule(bad)
    _, config = train.build_configs("drqv2", None, {"stddev_schedule": "1.0,0.1,3000"})
    assert parse_stddev_schedule(config.stddev_schedule) == (1.0, 0.1, 3000)


def test_schedule_follows_the_chosen_counter():
    by_steps = make_agent(stddev_schedule="1.0,0.1,1000")
    by_frames = make_agent(stddev_schedule="1.0,0.1,1000", schedule_counter="frames")
    assert by_steps.stddev() == pytest.approx(1.0)
    for agent in (by_steps, by_frames):
        agent.set_progress(frames=800, agent_steps=100, updates=40)
    assert by_steps.stddev() == pytest.approx(0.91)  # 100 agent steps: the released code's counter
    assert by_frames.stddev() == pytest.approx(0.28)
    by_steps.set_progress(frames=80_000, agent_steps=10_000, updates=4_000)
    assert by_steps.stddev() == pytest.approx(0.1)
    easy = make_agent(stddev_schedule="easy")
    easy.set_progress(frames=100_000, agent_steps=50_000, updates=0)
    assert easy.stddev() == pytest.approx(0.55)
    with pytest.raises(ValueError, match="schedule_counter"):
        make_agent(schedule_counter="episodes")


# -- checkpoints and the loop -------------------------------------------------------------------


def test_state_dict_round_trip():
    agent = make_agent()
    agent.update(make_batch(), step=1)
    clone = make_agent()
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = make_batch(4, seed=5)["obs"].numpy()
    np.testing.assert_array_equal(agent.act(obs, explore=False), clone.act(obs, explore=False))
    for name, module in agent.modules().items():
        for a, b in zip(module.parameters(), clone.modules()[name].parameters()):
            assert torch.equal(a, b), name
    assert clone.critic_opt.state_dict()["state"][0]["step"] == 1
    # Both continue identically from the same random state.
    torch.manual_seed(3)
    agent.update(make_batch(seed=1), step=2)
    torch.manual_seed(3)
    clone.update(make_batch(seed=1), step=2)
    for a, b in zip(agent.critic.parameters(), clone.critic.parameters()):
        torch.testing.assert_close(a, b)


def test_short_run_through_the_training_loop(tmp_path):
    run, config = train.build_configs("drqv2", "cpu-smoke", dict(
        env="dmc:cartpole-balance", visuals="fast", frames=1000, seed_frames=500, eval_every_frames=500,
        eval_episodes=1, replay_capacity=1000, batch_size=16, hidden_dims=(32, 32), feature_dim=16))
    assert run.action_repeat == 2  # the paper's
    result = train.train("drqv2", run, config, tmp_path / "run")
    evals = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(evals.frames) == [500, 1000] and list(evals.agent_steps) == [250, 500]
    assert evals.updates.iloc[-1] == len(range(250, 501, 2))  # every 2nd agent step from the end of seeding
    assert np.isfinite(result["episode_return"])
    rows = pd.read_csv(tmp_path / "run" / "train.csv")
    assert rows.stddev.iloc[-1] < 1.0 and np.isfinite(rows.critic_loss.iloc[-1])


def test_bfloat16_update(check_bfloat16_update):
    check_bfloat16_update(make_agent(), make_agent(precision="bfloat16"), make_batch(), 1,
                          moved=("encoder", "actor", "critic", "critic_target"))


@pytest.mark.parametrize("env, schedule", [("dmc:walker-walk", "easy"), ("dmc:cheetah-run", "medium"),
                                           ("dmc:reacher-hard", "medium"), ("dmc:humanoid-run", "hard"),
                                           ("dmc:fish-swim", "easy"), ("dmc:walker-run", "medium"),
                                           ("dmc:quadruped-run", "medium")])
def test_the_released_per_task_configs(env, schedule):
    """drqv2's cfgs/task/*.yaml: the std schedule by difficulty; humanoid lr 8e-5 and feature_dim
    100; walker nstep 1 and batch 512; quadruped_run a 100k replay."""
    run, config = train.build_configs("drqv2", None, {"env": env})
    assert config.stddev_schedule == schedule
    humanoid, walker = env.startswith("dmc:humanoid"), env.startswith("dmc:walker")
    assert (config.lr, config.feature_dim) == ((8e-5, 100) if humanoid else (1e-4, 50))
    assert (config.n_step, config.batch_size) == ((1, 512) if walker else (3, 256))
    assert run.replay_capacity == (100_000 if env == "dmc:quadruped-run" else RunConfig().replay_capacity)


def test_given_settings_win_over_the_tasks():
    _, config = train.build_configs("drqv2", None, {"env": "dmc:humanoid-walk", "lr": "3e-4",
                                                    "stddev_schedule": "0.2"})
    assert (config.stddev_schedule, config.lr, config.feature_dim) == ("0.2", 3e-4, 100)
    assert parse_stddev_schedule(Config().stddev_schedule) == DIFFICULTY["easy"]  # no task: easy
    # a preset's field wins too: cpu-smoke's batch on walker, dmc500k's replay on quadruped-run
    _, config = train.build_configs("drqv2", "cpu-smoke", {"env": "dmc:walker-walk"})
    assert (config.n_step, config.batch_size) == (1, 128)
    run, _ = train.build_configs("drqv2", "dmc500k", {"env": "dmc:quadruped-run"})
    assert run.replay_capacity == 260_000


def test_a_run_names_the_per_task_settings_it_holds():
    def notice(agent, env, preset=None, **overrides):
        overrides = {"env": env, **overrides}
        return train.task_settings_notice(agent, preset, overrides, train.build_configs(agent, preset, overrides)[0])

    prefix = "per-task settings of its paper or released code:"
    assert notice("drqv2", "dmc:humanoid-walk", lr="3e-4") == f"drqv2 on dmc:humanoid-walk: {prefix} feature_dim=100"
    assert notice("drqv2", "dmc:quadruped-run") == f"drqv2 on dmc:quadruped-run: {prefix} replay_capacity=100000"
    assert notice("drqv2", "dmc:walker-walk", "cpu-smoke", n_step=1) is None  # all given: batch by the preset
    assert notice("drqv2", "dmc:cartpole-balance") is None
    assert notice("drq", "dmc:cheetah-run") == f"drq on dmc:cheetah-run: {prefix} lr=0.0002, seed_frames=4000"
    assert notice("curl", "dmc:cartpole-balance", action_repeat=2) == (
        f"curl on dmc:cartpole-balance: {prefix} seed_frames=2000")
