"""Actor-critic parts against closed forms and torch.distributions."""

import copy

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn

from crl.rl import (DeterministicActor, TanhGaussianActor, Temperature, TwinQ, linear_schedule,
                    n_step_target, noisy_action, soft_update, tanh_gaussian_log_prob)


def test_tanh_gaussian_log_prob_matches_transformed_distribution():
    torch.manual_seed(0)
    mu, std = torch.randn(64, 3), torch.rand(64, 3) + 0.1
    u = mu + std * torch.randn(64, 3)
    reference = D.TransformedDistribution(D.Normal(mu, std), [D.TanhTransform()])
    expected = reference.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mu, std), expected, atol=1e-4, rtol=1e-4)


def test_tanh_gaussian_log_prob_finite_where_tanh_saturates():
    u = torch.tensor([[30.0, -30.0]])
    value = tanh_gaussian_log_prob(u, torch.zeros(1, 2), torch.ones(1, 2))
    assert torch.isfinite(value).all()


def test_actor_actions_in_bounds_and_log_std_bounded():
    torch.manual_seed(0)
    actor = TanhGaussianActor(5, 2, (32,), log_std_bounds=(-5.0, 2.0))
    features = torch.randn(100, 5) * 100
    action, log_prob = actor(features)
    assert action.abs().max() <= 1 and log_prob.shape == (100,)
    _, std = actor.distribution(features)
    assert std.min() >= np.exp(-5.0) - 1e-6 and std.max() <= np.exp(2.0) + 1e-5
    deterministic, _ = actor(features, deterministic=True)
    mu, _ = actor.distribution(features)
    torch.testing.assert_close(deterministic, torch.tanh(mu))


def test_soft_update_is_polyak():
    torch.manual_seed(0)
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = copy.deepcopy(target)
    soft_update(target, source, tau=0.1)
    for t, b, s in zip(target.parameters(), before.parameters(), source.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)


def test_n_step_target():
    # r + d * V' with the replay's discounts (gamma^n for a full window, 0 after a termination,
    # gamma^k for a window shortened by a truncation; their semantics are tested in test_replay.py)
    reward = torch.tensor([1.0, 2.0, 0.5])
    discount = torch.tensor([0.99**3, 0.0, 0.99])
    next_value = torch.tensor([10.0, 10.0, 10.0])
    torch.testing.assert_close(n_step_target(reward, discount, next_value),
                               torch.tensor([1.0 + 0.99**3 * 10, 2.0, 0.5 + 0.99 * 10]))


def test_twin_q_heads_are_independent():
    torch.manual_seed(0)
    q = TwinQ(4, 2, (16,))
    q1, q2 = q(torch.randn(8, 4), torch.randn(8, 2))
    assert q1.shape == q2.shape == (8,)
    assert not torch.allclose(q1, q2)
    q1.sum().backward()
    assert all(p.grad is None for p in q.q2.parameters())


def test_temperature_loss_against_its_closed_form():
    # alpha * mean(-log pi - target): log pi = 0 and target -1 give +alpha; a flipped sign, -alpha
    temperature = Temperature(0.25, target_entropy=-1.0)
    log_prob = torch.zeros(6, requires_grad=True)
    loss = temperature.loss(log_prob)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert log_prob.grad is None or not log_prob.grad.any()  # log pi is detached in this loss
    assert temperature.log_alpha.grad.item() == pytest.approx(0.25)  # d(alpha * 1)/d log alpha


def test_sac_actor_step_scores_actions_by_the_smaller_q():
    from crl.rl import sac_actor_step

    class TwoHeads(nn.Module):  # rows 0, 2: Q1 = 5, Q2 = -3; rows 1, 3: Q1 = -4, Q2 = 6
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def forward(self, features, action):
            zeros = action.sum(-1) * 0
            return zeros + torch.tensor([5.0, -4.0, 5.0, -4.0]), zeros + torch.tensor([-3.0, 6.0, -3.0, 6.0])

    torch.manual_seed(0)
    actor, temperature = TanhGaussianActor(3, 2, (8,)), Temperature(0.1, target_entropy=-2.0)
    features = torch.randn(4, 3)
    torch.manual_seed(1)
    _, log_prob = actor(features)
    torch.manual_seed(1)
    metrics = sac_actor_step(actor, TwoHeads(), temperature, torch.optim.SGD(actor.parameters(), lr=0.0),
                             torch.optim.SGD(temperature.parameters(), lr=0.0), features, features)
    expected = (0.1 * log_prob - torch.tensor([-3.0, -4.0, -3.0, -4.0])).mean()
    assert metrics["actor_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_temperature_moves_towards_target_entropy():
    temperature = Temperature(0.1, target_entropy=-1.0)
    low_entropy_log_prob = torch.full((10,), 5.0)  # entropy -5 < target -1: alpha must grow
    temperature.loss(low_entropy_log_prob).backward()
    assert temperature.log_alpha.grad < 0  # gradient descent raises log alpha
    temperature.log_alpha.grad = None
    temperature.loss(torch.full((10,), -5.0)).backward()
    assert temperature.log_alpha.grad > 0


def test_linear_schedule_and_noise():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 500) == pytest.approx(0.1)
    torch.manual_seed(0)
    mean = torch.zeros(10000, 1)
    noisy = noisy_action(mean, std=1.0, clip=0.3)
    assert noisy.abs().max() <= 0.3 + 1e-6 and noisy.std() > 0.2
    # the noise is clipped to +-0.3 before the sum is clipped to [-1, 1]: mean 0.9 -> [0.6, 1.0]
    near_edge = noisy_action(torch.full((10000, 1), 0.9), std=1.0, clip=0.3)
    assert near_edge.min() == pytest.approx(0.6) and near_edge.max() == 1.0
    assert (near_edge == 1.0).float().mean() > 0.3  # P(noise > 0.1) ~ 0.46 of draws land on the clip
    actor = DeterministicActor(3, 2, (8,))
    assert actor(torch.randn(5, 3) * 100).abs().max() <= 1


def test_checkpointable_round_trips_modules_and_optimizers_and_names_missing_parts():
    from crl.rl import Checkpointable

    class Tiny(Checkpointable):
        def __init__(self, seed):
            torch.manual_seed(seed)
            self.net, self.target = nn.Linear(3, 2), nn.Linear(3, 2)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=0.1)

        def modules(self):
            return {"net": self.net, "target": self.target}

        def optimizers(self):
            return {"opt": self.opt}

    a = Tiny(0)
    a.net(torch.ones(1, 3)).sum().backward()
    a.opt.step()  # Adam moments exist now
    state = a.state_dict()
    assert set(state) == {"net", "target", "opt"}
    b = Tiny(1)
    b.load_state_dict(state)
    for p, q in zip([*a.net.parameters(), *a.target.parameters()], [*b.net.parameters(), *b.target.parameters()]):
        assert torch.equal(p, q)
    assert b.opt.state_dict()["state"][0]["step"] == 1
    with pytest.raises(KeyError, match="Tiny state lacks opt, target"):
        Tiny(2).load_state_dict({"net": state["net"]})


@pytest.mark.parametrize("name", ["sac", "drq", "drqv2", "curl", "gcrl", "gcbc", "td-infonce"])
def test_continuous_agents_refuse_discrete_actions_by_name(name):
    from gymnasium import spaces

    from crl.registry import agent_module

    module = agent_module(name)
    pixels = spaces.Box(0, 255, (9, 84, 84), np.uint8)
    with pytest.raises(ValueError, match=rf"{name} needs continuous \(Box\) actions; .* Discrete\(6\)"):
        module.Agent(pixels, spaces.Discrete(6), module.Config())


@pytest.mark.parametrize("name", ["drq-eps", "curl-rainbow"])
def test_discrete_agents_refuse_continuous_actions_by_name(name):
    from gymnasium import spaces

    from crl.registry import agent_module

    module = agent_module(name)
    pixels = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    with pytest.raises(ValueError, match=rf"{name} needs discrete \(Discrete\) actions; .* Box\(-1\.0, 1\.0, \(1,\)"):
        module.Agent(pixels, spaces.Box(-1.0, 1.0, (1,), np.float32), module.Config())


def test_masked_mean_is_the_mean_of_the_selected_rows():
    from crl.rl import masked_mean

    x = torch.tensor([1.0, 2.0, 4.0, 8.0])
    for mask in ([True, False, True, False], [True] * 4, [False, False, False, True]):
        mask = torch.tensor(mask)
        assert masked_mean(x, mask).item() == pytest.approx(x[mask].mean().item())
    assert masked_mean(x, torch.zeros(4, dtype=torch.bool)).isnan()  # as x[mask].mean() of no rows
    assert masked_mean(torch.tensor([1.0, float("inf")]), torch.tensor([True, False])).item() == 1.0
