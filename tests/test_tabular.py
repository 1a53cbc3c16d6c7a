"""Monte-Carlo contrastive critics on a tabular MDP recover the discounted occupancy M.

Contrastive RL's critic is trained on (s, a, g) where g is a later state of the same episode drawn
by crl.replay's truncated-geometric goal sampler. On a random MDP under a fixed stochastic policy pi
its optimum is known in closed form:

  M(s, a, g) = (1 - gamma) sum_{k>=1} gamma^(k-1) P(s_{t+k} = g | s, a)
             = (1 - gamma) (I - gamma P_pi)^-1 P   on (s, a) rows,

  InfoNCE (B x B, negatives = the batch's goals, drawn from their marginal p):
      f = log M - log p + c(s, a),           so softmax_g(f + log p) = M;
  binary NCE (B x B BCE, unweighted):
      f = log M - log p - log(B - 1),        so p * exp(f + log(B - 1)) = M, with no free constant.

The tests fill an EpisodeReplay with long episodes of the MDP, learn a logits table f[(s, a), g]
with crl.contrastive's losses from sampled goal batches, and compare with M (max abs error <= 0.02).
A negative control samples goals with a different gamma and must miss the bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crl import contrastive as C
from crl.replay import EpisodeReplay

S, A, GAMMA = 5, 2, 0.9
EPISODES, LENGTH = 40, 5000  # 200k steps; truncation at episode ends biases M by ~1/((1-gamma)T) in TV
BATCH = 256
TOL = 0.02


def random_mdp(S, A, seed):
    """P[s, a, s'] ~ Dirichlet(1); pi(a|s) half Dirichlet(1), half uniform (every (s, a) is visited)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    pi = 0.5 * rng.dirichlet(np.ones(A), size=S) + 0.5 / A
    return P, pi


def occupancy(P, pi, gamma):
    """M[(s,a), g] = (1-gamma) (I - gamma P_pi)^-1 P_sa, P_pi[(s,a),(s',a')] = P(s'|s,a) pi(a'|s')."""
    S, A, _ = P.shape
    P_sa = P.reshape(S * A, S)
    P_pi = (P_sa[:, :, None] * pi[None, :, :]).reshape(S * A, S * A)
    return (1 - gamma) * np.linalg.solve(np.eye(S * A) - gamma * P_pi, P_sa)


def categorical(probs, rng):
    """One draw per row of probs (n, K)."""
    return (probs.cumsum(1) < rng.random((len(probs), 1))).sum(1).clip(max=probs.shape[1] - 1)


def rollout(P, pi, episodes, length, rng):
    """States (E, T+1) and actions (E, T) of E parallel episodes under pi, s_0 uniform."""
    S, A, _ = P.shape
    states = np.empty((episodes, length + 1), np.int64)
    actions = np.empty((episodes, length), np.int64)
    states[:, 0] = rng.integers(S, size=episodes)
    for t in range(length):
        actions[:, t] = categorical(pi[states[:, t]], rng)
        states[:, t + 1] = categorical(P[states[:, t], actions[:, t]], rng)
    return states, actions


@pytest.fixture(scope="module")
def mdp():
    P, pi = random_mdp(S, A, seed=0)
    states, actions = rollout(P, pi, EPISODES, LENGTH, np.random.default_rng(0))
    replay = EpisodeReplay(capacity=EPISODES * (LENGTH + 1), seed=0)
    for s, a in zip(states, actions):
        obs = s[:, None]  # state index as a 1-d observation; the goal space is the state space
        replay.add_episode({"observation": obs, "achieved_goal": obs}, a, np.zeros(LENGTH))
    return P, pi, replay


def train_mc_table(replay, loss_fn, sampler_gamma, steps=1500, lr=0.1, seed=0):
    """Learn f[(s,a), g] with loss_fn on (B, B) logits f(x_i, g_j) of goal-relabelled batches.

    Returns f and p, the marginal of the sampled goals (the distribution the negatives come from).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f = torch.zeros(S * A, S, requires_grad=True)
    opt = torch.optim.Adam([f], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.01 ** (k / steps))  # averages the noise
    goal_counts = np.zeros(S)
    for _ in range(steps):
        batch = replay.sample_goals(BATCH, sampler_gamma, goal_field="achieved_goal", rng=rng,
                                    return_index=True)
        x = batch["observation"][:, 0] * A + batch["action"]
        g = batch["goal"][:, 0]
        loss = loss_fn(f[x][:, g])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        goal_counts += np.bincount(g.numpy(), minlength=S)
    return f.detach().double().numpy(), goal_counts / goal_counts.sum()


def infonce_estimate(f, p):
    """softmax_g(f + log p): InfoNCE's optimum f = log M - log p + c(x) gives back M."""
    z = f + np.log(p)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def test_rollout_statistics_match_the_mdp(mdp):
    """The data really come from P: empirical P(s'|s,a) of the stored episodes within 0.02."""
    P, _, replay = mdp
    batch = replay.sample_transitions(100_000, rng=np.random.default_rng(1))
    x = batch["observation"][:, 0] * A + batch["action"]
    counts = np.zeros((S * A, S))
    np.add.at(counts, (x.numpy(), batch["next_observation"][:, 0].numpy()), 1)
    assert np.abs(counts / counts.sum(1, keepdims=True) - P.reshape(S * A, S)).max() <= TOL


@pytest.mark.parametrize("gamma", [0.0, GAMMA])
def test_mc_infonce_converges_to_occupancy(mdp, gamma):
    """InfoNCE with geometric goals: softmax_g(f + log p) = M within 0.02; gamma = 0 gives P(s'|s,a)."""
    P, pi, replay = mdp
    M = occupancy(P, pi, gamma)
    f, p = train_mc_table(replay, C.infonce_forward, gamma)
    err = np.abs(infonce_estimate(f, p) - M).max()
    assert err <= TOL, err
    if gamma > 0:  # the occupancy is not the one-step model: the test tells them apart
        assert np.abs(M - P.reshape(S * A, S)).max() > 5 * TOL


def test_mc_binary_nce_converges_to_occupancy(mdp):
    """Binary NCE: f = log M - log p - log(B-1) with no free constant, so p exp(f + log(B-1)) = M."""
    P, pi, replay = mdp
    M = occupancy(P, pi, GAMMA)
    f, p = train_mc_table(replay, C.binary_nce, GAMMA, steps=2000, lr=0.3)  # its constant is slow at 0.1
    estimate = p * np.exp(f + np.log(BATCH - 1))
    err = np.abs(estimate - M).max()
    assert err <= TOL, err


def test_sampler_gamma_mismatch_misses_the_bound(mdp):
    """Negative control: goals drawn with gamma 0.5 give M(0.5) (within the bound), not M(0.9)."""
    P, pi, replay = mdp
    f, p = train_mc_table(replay, C.infonce_forward, sampler_gamma=0.5)
    estimate = infonce_estimate(f, p)
    assert np.abs(estimate - occupancy(P, pi, 0.5)).max() <= TOL
    err = np.abs(estimate - occupancy(P, pi, GAMMA)).max()
    assert err > 2 * TOL, err
