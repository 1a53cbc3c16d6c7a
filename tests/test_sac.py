"""SAC: which parameters each update moves, and learning a tiny task."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from crl.agents.sac import Agent, Config
from crl.replay import EpisodeReplay


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


def pixel_batch(batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch_size, 9, 84, 84), dtype=torch.uint8, generator=g),
        "next_obs": torch.randint(0, 256, (batch_size, 9, 84, 84), dtype=torch.uint8, generator=g),
        "action": torch.rand(batch_size, 2, generator=g) * 2 - 1,
        "reward": torch.rand(batch_size, generator=g),
        "discount": torch.full((batch_size,), 0.99),
    }


@pytest.fixture
def pixel_agent():
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    return Agent(obs_space, action_space, Config(hidden_dims=(32, 32), feature_dim=16))


def test_critic_update_trains_encoder_not_actor(pixel_agent):
    agent = pixel_agent
    before = {k: params(m) for k, m in agent.modules().items()}
    batch = pixel_batch()
    obs, next_obs = batch["obs"], batch["next_obs"]
    agent.update_critic(obs, batch["action"], batch["reward"], batch["discount"], next_obs)
    assert changed(before["critic"], agent.critic) == set(before["critic"])
    assert changed(before["encoder"], agent.encoder) == set(before["encoder"])
    assert not changed(before["actor"], agent.actor)
    assert not changed(before["critic_target"], agent.critic_target)
    assert not changed(before["encoder_target"], agent.encoder_target)


def test_actor_update_is_detached_from_encoder_and_critic(pixel_agent):
    agent = pixel_agent
    before = {k: params(m) for k, m in agent.modules().items()}
    agent.update_actor(pixel_batch()["obs"])
    assert changed(before["actor"], agent.actor) == set(before["actor"])
    assert not changed(before["critic"], agent.critic)
    # The convs are shared with the critic's encoder and must not move; the actor's own head does.
    moved = changed(before["actor_encoder"], agent.actor_encoder)
    assert moved and all(name.startswith("head.") for name in moved)
    assert not changed(before["encoder"], agent.encoder)
    assert changed(before["temperature"], agent.temperature) == {"log_alpha"}


def test_targets_follow_by_polyak_on_schedule(pixel_agent):
    agent = pixel_agent
    critic_target = params(agent.critic_target)
    agent.update(pixel_batch(), step=1)  # odd step: no target update (every 2)
    assert not changed(critic_target, agent.critic_target)
    encoder_target = params(agent.encoder_target)
    agent.update(pixel_batch(), step=2)
    for target, before, online, tau in [(agent.critic_target, critic_target, agent.critic, agent.config.critic_tau),
                                        (agent.encoder_target, encoder_target, agent.encoder,
                                         agent.config.encoder_tau)]:
        for name, p in target.named_parameters():
            expected = (1 - tau) * before[name] + tau * dict(online.named_parameters())[name]
            torch.testing.assert_close(p, expected)


def test_critic_loss_against_the_soft_bellman_target(pixel_agent):
    """target = r + d (min(Q1', Q2')(s', a') - alpha log pi(a'|s')), a' ~ pi(s'), with the target
    critic and target encoder (moved away from the online ones here, so using either is seen),
    d = 0 after a termination."""
    agent = pixel_agent
    with torch.no_grad():
        for p in [*agent.critic_target.parameters(), *agent.encoder_target.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
        agent.temperature.log_alpha.fill_(np.log(0.3))
    batch = pixel_batch()
    batch["discount"][:3] = 0.0
    obs, next_obs, action = batch["obs"], batch["next_obs"], batch["action"]
    with torch.no_grad():
        torch.manual_seed(7)
        next_action, next_log_prob = agent.actor(agent.actor_encoder(next_obs))
        target_q1, target_q2 = agent.critic_target(agent.encoder_target(next_obs), next_action)
        target = batch["reward"] + batch["discount"] * (torch.min(target_q1, target_q2) - 0.3 * next_log_prob)
        q1, q2 = agent.critic(agent.encoder(obs), action)
        expected = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
    torch.manual_seed(7)
    metrics = agent.update_critic(obs, action, batch["reward"], batch["discount"], next_obs)
    assert metrics["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_target_entropy_is_minus_the_action_dimension(pixel_agent):
    assert pixel_agent.temperature.target_entropy == -2.0


def test_actor_shares_conv_weights_with_critic(pixel_agent):
    assert agent_convs_shared(pixel_agent)


def agent_convs_shared(agent):
    return all(a is b for a, b in zip(agent.actor_encoder.convs.parameters(), agent.encoder.convs.parameters()))


def test_state_dict_round_trip(pixel_agent):
    agent = pixel_agent
    agent.update(pixel_batch(), step=2)
    clone = Agent(gym.spaces.Box(0, 255, (9, 84, 84), np.uint8), gym.spaces.Box(-1, 1, (2,), np.float32),
                  agent.config)
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = pixel_batch(2, seed=5)["obs"].numpy()
    np.testing.assert_array_equal(agent.act(obs, explore=False), clone.act(obs, explore=False))
    assert agent_convs_shared(clone)


def test_sac_learns_to_reach_a_target():
    """One-step episodes: observe a target in [-1,1]^2, reward -||a - target||^2. Random scores
    about -1.33; a learned policy should be near 0."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = Agent(obs_space, gym.spaces.Box(-1, 1, (2,), np.float32),
                  Config(hidden_dims=(64, 64), batch_size=128, actor_lr=3e-3, critic_lr=3e-3,
                         alpha_lr=3e-3, init_temperature=0.05, actor_update_every=1))
    replay = EpisodeReplay(20_000, seed=0)
    for step in range(1, 1501):
        target = rng.uniform(-1, 1, 2).astype(np.float32)
        replay.add_first(target)
        action = agent.act(target[None], explore=True)[0] if step > 200 else rng.uniform(-1, 1, 2)
        replay.add(action, -float(np.sum((action - target) ** 2)), target, terminated=True, truncated=False)
        if step > 200:
            agent.update(replay.sample(128, kind="transitions"), step)
    targets = rng.uniform(-1, 1, (500, 2)).astype(np.float32)
    actions = agent.act(targets, explore=False)
    assert np.mean(np.sum((actions - targets) ** 2, axis=1)) < 0.05


def test_pixel_bfloat16_update(check_bfloat16_update):
    spaces = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8), gym.spaces.Box(-1, 1, (2,), np.float32)
    fp32, bf16 = (Agent(*spaces, Config(hidden_dims=(32, 32), feature_dim=16, precision=precision))
                  for precision in ("float32", "bfloat16"))
    check_bfloat16_update(fp32, bf16, pixel_batch(), 2, moved=("encoder", "actor", "critic", "critic_target"))
