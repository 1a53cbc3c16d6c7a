"""CURL (DMC): which parameters each loss moves, the key encoder, the InfoNCE logits, the crops."""

import copy
import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from crl import augment, train
from crl.agents import curl
from crl.agents.curl import Agent, Config

OBS_SPACE = gym.spaces.Box(0, 255, (9, 100, 100), np.uint8)
ACTION_SPACE = gym.spaces.Box(-1, 1, (2,), np.float32)


def params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


def snapshot(agent):
    return {name: params(module) for name, module in agent.modules().items()}


def moved_modules(before, agent):
    return {name for name, module in agent.modules().items() if changed(before[name], module)}


def pixel_batch(batch_size=8, seed=0, size=100):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch_size, 9, size, size), dtype=torch.uint8, generator=g),
        "next_obs": torch.randint(0, 256, (batch_size, 9, size, size), dtype=torch.uint8, generator=g),
        "action": torch.rand(batch_size, 2, generator=g) * 2 - 1,
        "reward": torch.rand(batch_size, generator=g),
        "discount": torch.full((batch_size,), 0.99),
    }


def make_agent(**overrides):
    torch.manual_seed(0)
    return Agent(OBS_SPACE, ACTION_SPACE, Config(**{"hidden_dims": (32, 32), "feature_dim": 16, **overrides}))


@pytest.fixture
def agent():
    return make_agent()


def crops(batch):
    return augment.center_crop(batch["obs"]), augment.center_crop(batch["next_obs"])


# -- which parameters each update moves --------------------------------------------------------


def test_critic_update_trains_encoder_only_with_critic(agent):
    before = snapshot(agent)
    batch = pixel_batch()
    obs, next_obs = crops(batch)
    agent.update_critic(obs, batch["action"], batch["reward"], batch["discount"], next_obs)
    assert changed(before["critic"], agent.critic) == set(before["critic"])
    assert changed(before["encoder"], agent.encoder) == set(before["encoder"])
    # actor_encoder's convs are the encoder's (tied), its own head stays
    assert moved_modules(before, agent) == {"critic", "encoder", "actor_encoder"}
    assert all(name.startswith("convs.") for name in changed(before["actor_encoder"], agent.actor_encoder))


def test_actor_update_is_detached_from_encoder_and_critic(agent):
    before = snapshot(agent)
    agent.update_actor(crops(pixel_batch())[0])
    assert moved_modules(before, agent) == {"actor", "actor_encoder", "temperature"}
    moved = changed(before["actor_encoder"], agent.actor_encoder)
    assert moved and all(name.startswith("head.") for name in moved)
    assert changed(before["temperature"], agent.temperature) == {"log_alpha"}
    assert all(p.grad is None for p in agent.encoder.parameters())  # no gradient reached the convs


def test_curl_update_moves_encoder_and_W_but_not_key_encoder(agent):
    before = snapshot(agent)
    anchor, positive = crops(pixel_batch())
    metrics = agent.update_curl(anchor, positive)
    assert changed(before["encoder"], agent.encoder) == set(before["encoder"])  # convs and head
    assert changed(before["bilinear"], agent.bilinear) == {"W"}
    assert moved_modules(before, agent) == {"encoder", "bilinear", "actor_encoder"}  # tied convs
    assert not changed(before["encoder_target"], agent.key_encoder)
    assert all(p.grad is None for p in agent.key_encoder.parameters())  # stop-gradient on the keys
    assert set(metrics) == {"curl_loss", "curl_accuracy"}


def test_key_encoder_is_the_critic_targets_encoder(agent):
    assert agent.key_encoder is agent.encoder_target
    assert "encoder_target" in agent.modules() and "key_encoder" not in agent.modules()
    for key, online in zip(agent.key_encoder.parameters(), agent.encoder.parameters()):
        assert key is not online and torch.equal(key, online)  # a copy, equal at the start


def test_targets_move_only_by_polyak_on_their_schedule(agent, monkeypatch):
    online_at_curl_step = []
    original_update_curl = agent.update_curl

    def spy_update_curl(anchor, positive):
        # The target update runs just before the CURL step: these are the weights it averaged.
        online_at_curl_step.append((params(agent.encoder), params(agent.critic)))
        return original_update_curl(anchor, positive)

    monkeypatch.setattr(agent, "update_curl", spy_update_curl)
    key_before, critic_target_before = params(agent.key_encoder), params(agent.critic_target)
    agent.update(pixel_batch(), step=1)  # odd step: the CURL loss runs, the targets stay
    assert len(online_at_curl_step) == 1
    assert not changed(key_before, agent.key_encoder)
    assert not changed(critic_target_before, agent.critic_target)
    assert changed(online_at_curl_step[0][0], agent.encoder)  # ... while the encoder learned

    key_before, critic_target_before = params(agent.key_encoder), params(agent.critic_target)
    agent.update(pixel_batch(seed=1), step=2)
    encoder, critic = online_at_curl_step[1]
    for name, p in agent.key_encoder.named_parameters():
        torch.testing.assert_close(p, 0.95 * key_before[name] + 0.05 * encoder[name])
    for name, p in agent.critic_target.named_parameters():
        torch.testing.assert_close(p, 0.99 * critic_target_before[name] + 0.01 * critic[name])


# -- the InfoNCE logits and the TD target ------------------------------------------------------


class Fixed(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


def test_infonce_logits_are_q_W_k_minus_row_max_on_a_hand_made_case(monkeypatch):
    agent = make_agent(feature_dim=2)
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    key = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        agent.bilinear.W.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    agent.encoder, agent.encoder_target = Fixed(query), Fixed(key)
    seen, real_curl_loss = [], curl.curl_loss

    def recording_curl_loss(logits, metrics=None):
        seen.append(logits.detach().clone())
        return real_curl_loss(logits, metrics)

    monkeypatch.setattr(curl, "curl_loss", recording_curl_loss)
    loss = agent.contrastive_loss(None, None)

    # q W = [[1, 2], [0, 1], [1, 3]]; (q W) k^T, row by row:
    expected = torch.tensor([[3.0, 2.0, 2.0], [1.0, 0.0, 1.0], [4.0, 2.0, 3.0]])
    torch.testing.assert_close(seen[0], expected)
    shifted = [[0.0, -1.0, -1.0], [0.0, -1.0, 0.0], [0.0, -2.0, -1.0]]  # each row minus its max
    ce = [-(row[i] - math.log(sum(math.exp(v) for v in row))) for i, row in enumerate(shifted)]
    assert loss.item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    loss.backward()
    assert query.grad is not None and agent.bilinear.W.grad is not None


def test_td_target_against_hand_values(agent):
    class FixedActor(nn.Module):
        def forward(self, features, deterministic=False):
            return torch.zeros(2, 2), torch.tensor([1.0, -2.0])

    class FixedCritic(nn.Module):
        def forward(self, features, action):
            return torch.tensor([5.0, 1.0]), torch.tensor([4.0, 3.0])

    agent.actor, agent.critic_target = FixedActor(), FixedCritic()
    reward, discount = torch.tensor([0.5, 1.0]), torch.tensor([0.99, 0.0])
    next_obs = crops(pixel_batch(2))[1]
    target = agent.td_target(reward, discount, next_obs)
    alpha = 0.1  # init_temperature
    expected = [0.5 + 0.99 * (4.0 - alpha * 1.0), 1.0 + 0.0 * (1.0 - alpha * -2.0)]
    torch.testing.assert_close(target, torch.tensor(expected))


# -- crops -------------------------------------------------------------------------------------


def crop_offset(source, cropped, size=84):
    """The single (top, left) at which `cropped` (C, h, w) is cut from `source` (C, H, W)."""
    H, W = source.shape[-2:]
    hits = [(top, left) for top in range(H - size + 1) for left in range(W - size + 1)
            if torch.equal(source[:, top:top + size, left:left + size], cropped)]
    assert len(hits) == 1, "every frame of a stack must share one crop"
    return hits[0]


def test_training_batches_are_84_crops_of_100_one_per_sample(agent, monkeypatch):
    calls = []

    def recording_crop(x, size=84, **kwargs):
        out = augment.random_crop(x, size, **kwargs)
        calls.append((x, size, out))
        return out

    monkeypatch.setattr(curl, "random_crop", recording_crop)
    seen = {}

    def record(**inputs):
        seen.update(inputs)
        return {"loss": torch.zeros(())}

    monkeypatch.setattr(agent, "update_critic", lambda obs, a, r, d, next_obs: record(obs=obs, next_obs=next_obs))
    monkeypatch.setattr(agent, "update_curl", lambda anchor, positive: record(anchor=anchor, positive=positive))
    monkeypatch.setattr(agent, "update_actor", lambda obs: record(actor_obs=obs))
    batch = pixel_batch(6)
    agent.update(batch, step=2)

    assert [size for _, size, _ in calls] == [84, 84, 84]
    (obs_in, _, obs), (next_in, _, next_obs), (pos_in, _, positive) = calls
    assert obs_in.shape == (6, 9, 100, 100) and obs.shape == (6, 9, 84, 84) and obs.dtype == torch.uint8
    assert torch.equal(obs_in, batch["obs"]) and torch.equal(pos_in, batch["obs"])
    assert torch.equal(next_in, batch["next_obs"])
    # the critic, the actor and the CURL query share one crop of s; the key is another crop of s
    assert seen["obs"] is obs and seen["actor_obs"] is obs and seen["anchor"] is obs
    assert seen["next_obs"] is next_obs and seen["positive"] is positive
    offsets = {name: [crop_offset(src[i], out[i]) for i in range(6)]
               for name, src, out in [("obs", obs_in, obs), ("next", next_in, next_obs), ("pos", pos_in, positive)]}
    assert offsets["obs"] != offsets["next"] and offsets["obs"] != offsets["pos"]  # independent draws
    assert len(set(offsets["obs"])) > 1  # one crop per sample, not one per batch


def test_act_centre_crops(agent):
    g = torch.Generator().manual_seed(3)
    obs = torch.randint(0, 256, (2, 9, 100, 100), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        mean, _ = agent.actor(agent.actor_encoder(obs[:, :, 8:92, 8:92]), deterministic=True)
    np.testing.assert_allclose(agent.act(obs.numpy(), explore=False), mean.numpy(), rtol=1e-5, atol=1e-6)
    border = obs.clone()
    border[:, :, :8] = 0
    border[:, :, :, 92:] = 255
    np.testing.assert_array_equal(agent.act(border.numpy(), explore=False), agent.act(obs.numpy(), explore=False))
    assert agent.act(obs.numpy(), explore=True).shape == (2, 2)


# -- checkpoints and the loop ------------------------------------------------------------------


def test_state_dict_round_trip(agent):
    agent.update(pixel_batch(), step=2)
    clone = make_agent()
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = pixel_batch(2, seed=5)["obs"].numpy()
    np.testing.assert_array_equal(agent.act(obs, explore=False), clone.act(obs, explore=False))
    torch.testing.assert_close(clone.bilinear.W, agent.bilinear.W)
    assert clone.curl_opt.state_dict()["state"]  # optimiser moments came back
    assert all(a is b for a, b in zip(clone.actor_encoder.convs.parameters(), clone.encoder.convs.parameters()))


def test_presets_and_run_defaults():
    run, config = train.build_configs("curl", None, {})
    assert run.image_size == 100 and config.crop_size == 84 and config.batch_size == 512
    assert run.replay_capacity <= 100_000
    for preset in ("dmc100k", "dmc500k", "released", "cpu-smoke", "dmc100k-cheetah"):
        run, config = train.build_configs("curl", preset, {})
        assert run.image_size == 100 and run.replay_capacity <= 100_000
    assert train.build_configs("curl", "released", {})[1].batch_size == 128
    assert train.build_configs("curl", "dmc100k-cheetah", {})[1].critic_lr == 2e-4


def test_cheetah_run_takes_the_papers_learning_rates_unless_set():
    # CURL's hyperparameter table: 2e-4 on cheetah-run for encoder, actor and critic, else 1e-3
    def rates(env, **given):
        config = train.build_configs("curl", "dmc100k", {"env": env, **given})[1]
        return config.actor_lr, config.critic_lr, config.encoder_lr

    assert rates("dmc:cheetah-run") == (2e-4, 2e-4, 2e-4)
    assert rates("dmc:walker-walk") == (1e-3, 1e-3, 1e-3)
    assert rates("dmc:cheetah-run", critic_lr=1e-3) == (2e-4, 1e-3, 2e-4)


def test_short_run_on_cartpole_balance(tmp_path):
    # cartpole repeats actions 8 times: 150 agent steps, the first 100 random, one 125-step episode
    run, config = train.build_configs("curl", None, dict(
        env="dmc:cartpole-balance", visuals="fast", frames=1200, seed_frames=800, eval_every_frames=1200,
        eval_episodes=1, checkpoint_every_frames=0, replay_capacity=1_000, batch_size=8,
        hidden_dims=(32, 32), feature_dim=16, device="cpu"))
    assert run.image_size == 100
    result = train.train("curl", run, config, tmp_path / "run")
    assert result["frames"] == 1200
    eval_rows = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert list(eval_rows.frames) == [1200] and eval_rows.updates.iloc[-1] == 51  # agent steps 100..150
    train_rows = pd.read_csv(tmp_path / "run" / "train.csv")
    assert list(train_rows.frames) == [1000]
    assert {"critic_loss", "actor_loss", "curl_loss", "curl_accuracy"} <= set(train_rows.columns)
    assert np.isfinite(train_rows[["critic_loss", "curl_loss"]].to_numpy()).all()


def test_bfloat16_update(check_bfloat16_update):
    check_bfloat16_update(make_agent(), make_agent(precision="bfloat16"), pixel_batch(), 2,
                          moved=("encoder", "actor", "critic", "critic_target", "encoder_target"))
