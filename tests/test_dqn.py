"""DQN-family parts of crl.rl against hand computations: dueling heads, double-DQN and C51
targets, noisy linear layers, epsilon-greedy exploration, n-step transitions from windows."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crl.replay import EpisodeReplay
from crl.rl import (DuelingHead, NoisyLinear, categorical_projection, double_dqn_target, dueling_aggregate,
                    epsilon_greedy, linear_epsilon, n_step_from_sequence, reset_noise)

# -- dueling ---------------------------------------------------------------------------------


def test_dueling_aggregation_by_hand():
    value = torch.tensor([[1.0], [2.0]])
    advantage = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])  # means 2 and 1
    expected = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0]])
    torch.testing.assert_close(dueling_aggregate(value, advantage), expected)


def test_dueling_head_combines_its_streams():
    torch.manual_seed(0)
    features = torch.randn(5, 8)
    head = DuelingHead(8, num_actions=4, hidden_dim=16)
    q = head(features)
    assert q.shape == (5, 4)
    value, advantage = head.value(features), head.advantage(features)
    torch.testing.assert_close(q, value + advantage - advantage.mean(1, keepdim=True))
    torch.testing.assert_close(q.mean(1), value.squeeze(1))  # mean_a Q = V

    atoms = DuelingHead(8, num_actions=4, hidden_dim=16, num_atoms=7)
    logits = atoms(features)
    assert logits.shape == (5, 4, 7)
    value, advantage = atoms.value(features)[:, None, :], atoms.advantage(features).view(5, 4, 7)
    torch.testing.assert_close(logits, value + advantage - advantage.mean(1, keepdim=True))


# -- double DQN ------------------------------------------------------------------------------


def test_double_dqn_target_on_a_tiny_table():
    next_q_online = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 0.0]])  # online argmax: 1, 0
    next_q_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])  # max would pick 30 and 9
    reward = torch.tensor([1.0, 2.0])
    discount = torch.tensor([0.9**3, 0.0])  # gamma^m; the second transition terminated
    target = double_dqn_target(reward, discount, next_q_online, next_q_target)
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.729 * 20.0, 2.0]))


# -- C51 projection --------------------------------------------------------------------------

SUPPORT = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # v_min -2, v_max 2, spacing 1


def project(reward, discount, probs):
    return categorical_projection(torch.tensor([reward]), torch.tensor([discount]),
                                  torch.tensor([probs]), SUPPORT)[0]


@pytest.mark.parametrize("reward, discount, probs, expected", [
    # atoms land exactly on support points; the two above v_max are clipped onto it
    (1.0, 1.0, [0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.1, 0.2, 0.3, 0.4]),
    # every atom halfway between two points: its mass splits evenly
    (0.5, 1.0, [0.2] * 5, [0.1, 0.2, 0.2, 0.2, 0.3]),
    # discount shrinks the support: z' = [-1, -.5, 0, .5, 1]
    (0.0, 0.5, [0.2] * 5, [0.0, 0.3, 0.4, 0.3, 0.0]),
    # uneven split: 0.25 between 0 and 1 (b = 2.25) for the middle atom only
    (0.25, 0.0, [0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.75, 0.25, 0.0]),
    # everything below v_min goes to v_min
    (-5.0, 1.0, [0.1, 0.2, 0.3, 0.2, 0.2], [1.0, 0.0, 0.0, 0.0, 0.0]),
    # terminal (discount 0): all the mass on r, whatever the next distribution
    (0.3, 0.0, [0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.7, 0.3, 0.0]),
    (1.0, 0.0, [0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 1.0, 0.0]),
    (3.0, 0.0, [0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0, 1.0]),
])
def test_categorical_projection_by_hand(reward, discount, probs, expected):
    torch.testing.assert_close(project(reward, discount, probs), torch.tensor(expected))


def test_categorical_projection_conserves_mass_and_mean():
    torch.manual_seed(0)
    support = torch.linspace(-10, 10, 51)
    probs = torch.softmax(torch.randn(64, 51), dim=1)
    reward = torch.empty(64).uniform_(-0.05, 0.05)
    discount = torch.full((64,), 0.99)
    discount[::4] = 0.0
    target = categorical_projection(reward, discount, probs, support)
    assert (target >= 0).all()
    torch.testing.assert_close(target.sum(1), torch.ones(64))
    # inside [v_min, v_max] the linear split keeps the mean: E[z] of the projection = r + d E[z']
    torch.testing.assert_close(target @ support, reward + discount * (probs @ support), atol=1e-5, rtol=0)

    # large rewards clip: all mass still there, mean pulled inside the support
    big = categorical_projection(torch.full((64,), 50.0), torch.full((64,), 0.99), probs, support)
    torch.testing.assert_close(big.sum(1), torch.ones(64))
    torch.testing.assert_close(big[:, -1], torch.ones(64))


# -- noisy linear ----------------------------------------------------------------------------


def test_noisy_linear_init_as_in_the_paper():
    torch.manual_seed(0)
    layer = NoisyLinear(16, 8, sigma0=0.5)
    bound = 1 / math.sqrt(16)
    assert layer.weight_mu.abs().max() <= bound and layer.bias_mu.abs().max() <= bound
    torch.testing.assert_close(layer.weight_sigma, torch.full((8, 16), 0.5 * bound))
    torch.testing.assert_close(layer.bias_sigma, torch.full((8,), 0.5 * bound))


def test_noisy_linear_factorised_noise_statistics():
    torch.manual_seed(0)
    layer = NoisyLinear(6, 5)
    # factorised: eps_w = f(eps_out) f(eps_in)^T and eps_b = f(eps_out), so eps_w is rank one
    eps_in = layer.weight_epsilon[0] / layer.bias_epsilon[0]
    torch.testing.assert_close(layer.weight_epsilon, torch.outer(layer.bias_epsilon, eps_in))
    samples = []
    for _ in range(4000):
        layer.reset_noise()
        samples.append(layer.weight_epsilon.flatten().clone())
    samples = torch.stack(samples)
    # f(x) = sign(x) sqrt|x|, x ~ N(0,1): E f = 0, E f^2 = E|x| = sqrt(2/pi); eps_w = f f'
    assert samples.mean().abs() < 0.02
    assert abs(samples.var().item() - 2 / math.pi) < 0.03
    # entries in different rows and columns are uncorrelated
    assert abs(torch.corrcoef(samples[:, [0, 7]].T)[0, 1].item()) < 0.05


def test_noisy_linear_output_noise_and_eval_mode():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3)
    x = torch.randn(2, 4)
    mean_output = F.linear(x, layer.weight_mu, layer.bias_mu)
    first = layer(x)
    torch.testing.assert_close(layer(x), first)  # noise changes only on reset_noise
    layer.reset_noise()
    assert not torch.allclose(layer(x), first)
    outputs = []
    for _ in range(3000):
        layer.reset_noise()
        outputs.append(layer(x).detach())
    torch.testing.assert_close(torch.stack(outputs).mean(0), mean_output, atol=0.03, rtol=0)

    layer.eval()  # deterministic: the mean layer, whatever the noise
    torch.testing.assert_close(layer(x), mean_output)
    layer.reset_noise()
    torch.testing.assert_close(layer(x), mean_output)


def test_noisy_linear_trains_sigma_and_reset_noise_reaches_nested_layers():
    torch.manual_seed(0)
    head = DuelingHead(4, num_actions=3, hidden_dim=8, num_atoms=5, noisy=True)
    noisy = [m for m in head.modules() if isinstance(m, NoisyLinear)]
    assert len(noisy) == 4
    head(torch.randn(2, 4)).pow(2).sum().backward()  # (a plain sum cancels the advantage's gradient)
    assert all(m.weight_sigma.grad is not None and m.weight_sigma.grad.abs().sum() > 0 for m in noisy)
    before = [m.weight_epsilon.clone() for m in noisy]
    reset_noise(head)
    assert all(not torch.equal(b, m.weight_epsilon) for b, m in zip(before, noisy))


# -- exploration -----------------------------------------------------------------------------


def test_epsilon_greedy():
    q = torch.tensor([[0.0, 2.0, 1.0]]).repeat(30_000, 1)
    assert (epsilon_greedy(q, 0.0) == 1).all()
    counts = torch.bincount(epsilon_greedy(q, 1.0), minlength=3).float() / len(q)
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3), atol=0.015, rtol=0)
    non_greedy = (epsilon_greedy(q, 0.3) != 1).float().mean().item()
    assert abs(non_greedy - 0.3 * 2 / 3) < 0.015


def test_linear_epsilon_schedule():
    assert linear_epsilon(0, 5000, 0.1, warmup_steps=1600) == 1.0
    assert linear_epsilon(1600, 5000, 0.1, warmup_steps=1600) == 1.0
    assert linear_epsilon(1600 + 2500, 5000, 0.1, warmup_steps=1600) == pytest.approx(0.55)
    assert linear_epsilon(6600, 5000, 0.1, warmup_steps=1600) == pytest.approx(0.1)
    assert linear_epsilon(10**6, 5000, 0.1, warmup_steps=1600) == pytest.approx(0.1)


# -- n-step transitions from windows ---------------------------------------------------------


def test_n_step_from_sequence_by_hand():
    obs = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)  # obs[b, i] = 4b + i
    window = {
        "obs": obs,
        "action": torch.tensor([[3, 0, 0], [1, 2, 0]]),
        "reward": torch.tensor([[2.0, -3.0, 0.5], [1.0, 1.0, 0.0]]),
        "terminated": torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        "mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),  # row 1's episode ends after 2 steps
    }
    t = n_step_from_sequence(window, gamma=0.9, reward_clip=1.0)
    torch.testing.assert_close(t["reward"], torch.tensor([1.0 - 0.9 + 0.81 * 0.5, 1.0 + 0.9]))
    torch.testing.assert_close(t["discount"], torch.tensor([0.729, 0.0]))
    torch.testing.assert_close(t["next_obs"], torch.tensor([[3.0], [6.0]]))
    torch.testing.assert_close(t["obs"], torch.tensor([[0.0], [4.0]]))
    assert t["action"].tolist() == [3, 1] and t["steps"].tolist() == [3, 2]
    unclipped = n_step_from_sequence(window, gamma=0.9)
    torch.testing.assert_close(unclipped["reward"], torch.tensor([2.0 - 2.7 + 0.81 * 0.5, 1.9]))


def test_n_step_from_sequence_agrees_with_replay_transitions():
    rng = np.random.default_rng(0)
    replay = EpisodeReplay(1000, seed=0)
    for length, terminated in [(7, True), (12, False), (3, True), (20, None)]:  # None: unfinished
        replay.add_first(np.array([rng.integers(0, 255)], np.uint8))
        for i in range(length):
            last = i == length - 1 and terminated is not None
            replay.add(rng.integers(0, 4), float(rng.normal() * 3), np.array([rng.integers(0, 255)], np.uint8),
                       terminated=last and terminated, truncated=last and not terminated)
    window = replay.sample_sequences(256, 5, pad=True, return_index=True)
    ours = n_step_from_sequence(window, gamma=0.9)
    theirs = replay.transitions_at(window["episode"].numpy(), window["step"].numpy(), n_step=5, gamma=0.9)
    for key in ("obs", "next_obs", "action", "reward", "discount", "steps"):
        np.testing.assert_allclose(ours[key].numpy(), theirs[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_drq_eps_dueling_head_is_dopamines_shared_layer():
    from crl.agents.drq import AtariQNetwork

    net = AtariQNetwork((4, 84, 84), num_actions=6)
    head = net.head
    # one shared Linear(3136, 512), then Linear(512, 1) and Linear(512, 6): Dopamine's FullRainbowNetwork
    shapes = sorted(tuple(p.shape) for p in head.parameters())
    assert shapes == sorted([(512, 3136), (512,), (1, 512), (1,), (6, 512), (6,)])
    features = torch.randn(3, 3136)
    hidden = head.shared(features)
    value, advantage = head.value(hidden), head.advantage(hidden)
    torch.testing.assert_close(head(features), value + advantage - advantage.mean(1, keepdim=True))
