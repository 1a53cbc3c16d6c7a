"""CURL on Data-Efficient Rainbow (Atari): the C51 double-Q target by hand, noisy nets, what the
CURL loss and the momentum update move, the augmentation, checkpoints and a short run on Pong."""

import copy

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from crl import train
from crl.agents import curl
from crl.agents.curl import AtariAgent, AtariConfig, random_crop_and_shift
from crl.registry import agent_module
from crl.rl import NoisyLinear, categorical_projection, n_step_from_sequence

OBS_SHAPE = (4, 30, 30)  # DER's two 5x5 stride-5 convs need at least 25x25
NUM_ACTIONS = 3


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


def noise(module):
    return [m.weight_epsilon.clone() for m in module.modules() if isinstance(m, NoisyLinear)]


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def make_agent(seed=0, **overrides):
    torch.manual_seed(seed)
    config = AtariConfig(**{"hidden_dim": 16, "curl_dim": 8, "n_step": 5, **overrides})
    return AtariAgent(gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8), gym.spaces.Discrete(NUM_ACTIONS), config)


def window(batch_size=6, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(batch_size, length)
    terminated[0, 2] = 1.0  # an episode that ends inside the first window
    mask = torch.ones(batch_size, length)
    mask[0, 3:] = 0.0
    return {
        "obs": torch.randint(0, 256, (batch_size, length + 1, *OBS_SHAPE), dtype=torch.uint8, generator=g),
        "action": torch.randint(0, NUM_ACTIONS, (batch_size, length), generator=g),
        "reward": torch.randn(batch_size, length, generator=g) * 3,
        "terminated": terminated,
        "mask": mask,
    }


def test_registry_namespace_and_paper_settings():
    module = agent_module("curl-rainbow")
    assert module is curl.ATARI and module.Agent is AtariAgent and module.Config is AtariConfig
    run, config = train.build_configs("curl-rainbow", "atari100k", {})
    assert run.frames == 400_000 and run.terminal_on_life_loss and run.update_every == 1
    assert run.seed_frames == 6_400 and run.eval_episodes == 10  # 1600 agent steps before learning
    assert (config.n_step, config.batch_size, config.target_update_every, config.num_atoms) == (20, 32, 2000, 51)
    assert (config.v_min, config.v_max, config.noisy_sigma0, config.hidden_dim) == (-10.0, 10.0, 0.1, 256)
    assert (config.lr, config.adam_eps, config.max_grad_norm) == (1e-4, 1.5e-4, 10.0)
    assert (config.curl_tau, config.curl_coef, config.curl_logit_scale) == (0.001, 1.0, 1.0)
    assert train.build_configs("curl-rainbow", "atari100k-low-curl", {})[1].curl_coef == 0.05
    assert train.build_configs("curl-rainbow", "atari100k-released", {})[1].curl_logit_scale == 0.1
    # the CPU preset takes the released scale: at the paper's 1.0 one seed of two did not learn RoadRunner
    assert train.build_configs("curl-rainbow", "cpu-smoke", {})[1].curl_logit_scale == 0.1
    for preset in module.PRESETS:
        train.build_configs("curl-rainbow", preset, {})
    assert AtariAgent.batch_kind == "sequences"
    assert make_agent(n_step=20).sampler_options() == {"length": 20, "pad": True}

    torch.manual_seed(0)  # DER's encoder on 84x84 frames: 64 x 3 x 3 features
    full = AtariAgent(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6), AtariConfig())
    assert full.q_net.encoder.repr_dim == 576
    assert full.q_net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6, 51)


def test_c51_double_q_target_by_hand():
    """Support [-2, -1, 0, 1, 2]; the online net prefers action 2 at s', the target net action 1:
    double Q takes the target's distribution at the online argmax (action 2)."""
    agent = make_agent(num_atoms=5, v_min=-2.0, v_max=2.0)
    online = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2],
                           [0.5, 0.3, 0.1, 0.05, 0.05],
                           [0.05, 0.05, 0.1, 0.4, 0.4]])
    target = torch.tensor([[0.3, 0.3, 0.2, 0.1, 0.1],
                           [0.05, 0.05, 0.1, 0.1, 0.7],
                           [0.1, 0.2, 0.3, 0.25, 0.15]])
    agent.q_net = Lambda(lambda obs: online.log().expand(len(obs), -1, -1))
    agent.target_net = Lambda(lambda obs: target.log().expand(len(obs), -1, -1))
    reward, discount = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.0])  # the second one terminal
    result = agent.target_distribution(reward, discount, torch.zeros(2, *OBS_SHAPE, dtype=torch.uint8))

    # r + 0.9 z = [-1.3, -0.4, 0.5, 1.4, 2.3 -> 2]: each atom's mass split between its neighbours
    expected = torch.tensor([[0.1 * 0.3, 0.1 * 0.7 + 0.2 * 0.4, 0.2 * 0.6 + 0.3 * 0.5, 0.3 * 0.5 + 0.25 * 0.6,
                              0.25 * 0.4 + 0.15],
                             [0.0, 0.0, 0.5, 0.5, 0.0]])  # terminal: all mass at r = 0.5
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(result, categorical_projection(reward, discount, target[[2, 2]], agent.support))
    assert not torch.allclose(result[0], categorical_projection(reward, discount, target[[1, 1]], agent.support)[0])


def test_update_c51_loss_on_the_unaugmented_clipped_n_step_window(monkeypatch):
    agent = make_agent()
    monkeypatch.setattr(curl, "reset_noise", lambda module: None)  # keep the target's noise for the check
    batch = window()
    t = n_step_from_sequence(batch, agent.config.gamma, reward_clip=1.0)
    rows = torch.arange(len(t["obs"]))
    with torch.no_grad():
        best = agent.q_values(agent.q_net(t["next_obs"])).argmax(1)
        next_probs = agent.target_net(t["next_obs"]).softmax(-1)[rows, best]
        target = categorical_projection(t["reward"], t["discount"], next_probs, agent.support)
        log_probs = agent.q_net(t["obs"]).log_softmax(-1)[rows, t["action"]]
    expected = -(target * log_probs).sum(1).mean()
    assert t["discount"][0] == 0 and t["reward"].abs().max() > 1  # a terminal inside, clipped rewards summed

    augmented = []
    original_augment = curl.random_crop_and_shift

    def record(x, pad):
        augmented.append(x.clone())
        return original_augment(x, pad)

    monkeypatch.setattr(curl, "random_crop_and_shift", record)
    metrics = agent.update(batch, step=1)
    assert metrics["q_loss"] == pytest.approx(expected.item(), rel=1e-5)
    # only the CURL query and key are augmented, both from s
    assert len(augmented) == 2 and all(torch.equal(x, t["obs"]) for x in augmented)


def test_noisy_nets_resample_when_acting_and_for_the_target():
    agent = make_agent(epsilon_eval=0.0, noisy_sigma0=5.0)  # noise large enough to change the argmax
    obs = window(batch_size=64)["obs"][:, 0]
    online, target = noise(agent.q_net), noise(agent.target_net)
    with torch.no_grad():
        logits = agent.q_net(obs)
    action = agent.act(obs.numpy(), explore=True)
    resampled = noise(agent.q_net)
    assert all(not torch.equal(a, b) for a, b in zip(online, resampled))
    with torch.no_grad():
        assert not torch.allclose(agent.q_net(obs), logits)  # the noise reaches the output
        np.testing.assert_array_equal(action, agent.q_values(agent.q_net(obs)).argmax(1).numpy())

    # evaluation: the mean network, deterministic, and the noise left as it was
    greedy = agent.act(obs.numpy(), explore=False)
    np.testing.assert_array_equal(greedy, agent.act(obs.numpy(), explore=False))
    assert agent.q_net.training and all(torch.equal(a, b) for a, b in zip(resampled, noise(agent.q_net)))
    agent.q_net.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(greedy, agent.q_values(agent.q_net(obs)).argmax(1).numpy())
    agent.q_net.train()
    exploring = [agent.act(obs.numpy(), explore=True) for _ in range(3)]
    assert any((a != greedy).any() for a in exploring)
    np.testing.assert_array_equal(greedy, agent.act(obs.numpy(), explore=False))  # whatever the noise

    # an update learns with the noise the agent acted with, and draws fresh noise for the target
    resampled = noise(agent.q_net)
    agent.update(window(), step=1)
    assert all(torch.equal(a, b) for a, b in zip(resampled, noise(agent.q_net)))
    assert all(not torch.equal(a, b) for a, b in zip(target, noise(agent.target_net)))


def test_curl_loss_trains_online_encoder_head_and_w_not_the_key_encoder():
    agent = make_agent()
    obs = window()["obs"][:, 0]
    loss = agent.contrastive_loss(random_crop_and_shift(obs, 4), random_crop_and_shift(obs, 4))
    loss.backward()
    for module in (agent.q_net.encoder, agent.projection, agent.bilinear):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in agent.q_net.head.parameters())  # the Q head is not in this loss
    assert all(p.grad is None and not p.requires_grad for p in agent.key_encoder.parameters())
    assert all(not p.requires_grad for p in agent.target_net.parameters())

    # the logits q W k^T with k from the key encoder (moved away from the online one here)
    with torch.no_grad():
        for p in agent.key_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    anchor, positive = random_crop_and_shift(obs, 4), random_crop_and_shift(obs, 4)
    agent.opt.zero_grad()
    loss = agent.contrastive_loss(anchor, positive)
    loss.backward()
    grads = [p.grad.clone() for p in agent.q_net.encoder.parameters()]
    agent.opt.zero_grad()
    with torch.no_grad():
        key = agent.key_encoder(positive)
    logits = agent.projection(agent.q_net.encoder(anchor)) @ agent.bilinear.W @ key.T
    expected = -logits.log_softmax(1).diagonal().mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, h in zip(grads, (p.grad for p in agent.q_net.encoder.parameters())):
        torch.testing.assert_close(g, h)

    # one update moves every online parameter; the key encoder and target only as they should
    agent = make_agent()
    before = {name: params(module) for name, module in agent.modules().items()}
    agent.update(window(), step=1)
    for name in ("q_net", "projection", "bilinear"):
        assert changed(before[name], agent.modules()[name]) == set(before[name]), name
    assert not changed(before["target_net"], agent.target_net)
    assert changed(before["key_encoder"], agent.key_encoder) == set(before["key_encoder"])  # by EMA


def test_momentum_update_exact_and_target_copied_every_target_period():
    tau = 0.3  # large enough that a missing or wrong average shows
    agent = make_agent(curl_tau=tau, target_update_every=2)
    key = params(agent.key_encoder)
    agent.update(window(), step=1)
    online = params(agent.query_encoder)  # the online convs and contrastive head, same names as the key's
    for name, p in agent.key_encoder.named_parameters():
        torch.testing.assert_close(p.detach(), (1 - tau) * key[name] + tau * online[name], rtol=0, atol=1e-6)
        assert not torch.allclose(p, online[name])

    agent.update(window(seed=1), step=2)
    for (name, p), q in zip(agent.target_net.named_parameters(), agent.q_net.parameters()):
        assert torch.equal(p, q), name


def test_one_loss_weighted_by_curl_coef_and_clipped_together():
    agent = make_agent(curl_coef=0.0)  # no CURL term: its head and W stay, the Q net learns
    before = {name: params(module) for name, module in agent.modules().items()}
    agent.update(window(), step=1)
    assert not changed(before["projection"], agent.projection) and not changed(before["bilinear"], agent.bilinear)
    assert changed(before["q_net"], agent.q_net) == set(before["q_net"])

    agent = make_agent(max_grad_norm=1e-9)  # Adam's first step is ~lr * g / eps once g is clipped far below eps
    online = [p.detach().clone() for p in agent.parameters]
    metrics = agent.update(window(), step=1)
    assert metrics["grad_norm"] > 1.0  # the norm before clipping
    assert max((p - q).abs().max().item() for p, q in zip(agent.parameters, online)) < 1e-8


def test_augmentation_is_a_random_crop_then_a_replicate_padded_crop():
    pad, size = 3, 12
    rows = torch.arange(size)[:, None] * 100 + torch.arange(size)
    x = torch.stack([rows, rows + 10_000])[None].repeat(200, 1, 1, 1)  # (200, 2, 12, 12), channel c + 10000 c
    out = random_crop_and_shift(x, pad).long()
    assert out.shape == x.shape
    assert (out[:, 1] - out[:, 0] == 10_000).all()  # one crop for all frames of a sample

    index = torch.arange(size)
    candidates = {tuple((t1 + (index + t2 - pad).clamp(0, size - pad - 1)).tolist())
                  for t1 in range(pad + 1) for t2 in range(pad + 1)}
    seen = set()
    for sample in out[:, 0]:
        r, c = tuple((sample[:, 0] // 100).tolist()), tuple((sample[0, :] % 100).tolist())
        assert r in candidates and c in candidates
        assert torch.equal(sample, torch.tensor(r)[:, None] * 100 + torch.tensor(c))
        seen.add((r, c))
    assert len(seen) > 50  # independent per sample
    frames = torch.randint(0, 256, (8, 4, size, size), dtype=torch.uint8)
    shifted = random_crop_and_shift(frames, pad)  # float, the same pixel values
    assert shifted.dtype == torch.float32 and set(shifted.unique().tolist()) <= set(frames.unique().tolist())


def test_state_dict_round_trip():
    agent = make_agent()
    agent.act(window()["obs"][:, 0].numpy(), explore=True)
    agent.update(window(), step=1)
    clone = make_agent(seed=1)
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = window(seed=3)["obs"][:, 0]
    with torch.no_grad():
        for name in ("q_net", "target_net", "key_encoder"):  # noise buffers travel too
            torch.testing.assert_close(agent.modules()[name](obs), clone.modules()[name](obs))
        torch.testing.assert_close(agent.bilinear.W, clone.bilinear.W)
        torch.testing.assert_close(agent.projection(agent.q_net.encoder(obs)),
                                   clone.projection(clone.q_net.encoder(obs)))
    assert clone.opt.state_dict()["state"].keys() == agent.opt.state_dict()["state"].keys()
    losses = []
    for a in (agent, clone):  # the same target noise and crops for both
        torch.manual_seed(5)
        losses.append(a.update(window(seed=4), step=2))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_curl_rainbow_run_on_atari_pong(tmp_path):
    run, config = train.build_configs("curl-rainbow", None, dict(
        env="atari:Pong", frames=400, seed_frames=200, eval_every_frames=400, eval_episodes=1,
        checkpoint_every_frames=0, replay_capacity=1000, batch_size=4, hidden_dim=16, curl_dim=8,
        n_step=3, target_update_every=10))
    assert run.terminal_on_life_loss  # the paper's setting, from RUN_DEFAULTS
    result = train.train("curl-rainbow", run, config, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(rows.frames) == [400] and rows.updates.iloc[-1] == 51  # agent steps 50..100
    assert -21 <= result["episode_return"] <= 21
