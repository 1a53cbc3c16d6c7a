"""crl.contrastive against independent numpy references and tabular closed forms.

The numpy references below are written from the formulas, not by calling the torch code. The
tabular tests train a logits table with the library's loss from sampled data and compare it with
the loss's known optimum or fixed point.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crl import contrastive as C

# --------------------------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------------------------


def np_logsumexp(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_log_softmax(a, axis):
    return a - np.expand_dims(np_logsumexp(a, axis), axis)


def np_infonce_rows(l):
    B = l.shape[0]
    return -np.mean([l[i, i] - np_logsumexp(l[i], 0) for i in range(B)])


def np_infonce_cols(l):
    return np_infonce_rows(l.T)


def np_bce_identity(l):
    y = np.eye(l.shape[0])
    # -[y log s(l) + (1-y) log(1-s(l))], in the overflow-safe form
    return np.mean(np.maximum(l, 0) - l * y + np.log1p(np.exp(-np.abs(l))))


def np_td_infonce(next_l, fut_l, targ_l, gamma, labels=None):
    B = next_l.shape[0]
    labels = np.arange(B) if labels is None else labels
    ls_next = np_log_softmax(next_l, 1)
    loss_next = -np.mean([ls_next[i, labels[i]] for i in range(B)])
    w = np.exp(np_log_softmax(targ_l, 1))
    loss_fut = -np.mean((w * np_log_softmax(fut_l, 1)).sum(1))
    return (1 - gamma) * loss_next + gamma * loss_fut


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: with several intra-op threads on a busy 2-core machine the
    tabular loops ran 10-20x slower (threads waiting on each other), with one they do not."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return 3.0 * rng.normal(size=(6, 6))


# --------------------------------------------------------------------------------------------
# energies
# --------------------------------------------------------------------------------------------


@pytest.fixture
def xy():
    rng = np.random.default_rng(1)
    return rng.normal(size=(5, 3)), rng.normal(size=(5, 3))


def hand(fn, x, y):
    return np.array([[fn(x[i], y[j]) for j in range(len(y))] for i in range(len(x))])


def test_dot_energy(xy):
    x, y = xy
    ref = hand(lambda a, b: sum(a[k] * b[k] for k in range(len(a))), x, y)
    np.testing.assert_allclose(C.dot_energy(t(x), t(y)).numpy(), ref, rtol=1e-10)


def test_cosine_energy(xy):
    x, y = xy
    ref = hand(lambda a, b: a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b)) / 0.5, x, y)
    np.testing.assert_allclose(C.cosine_energy(t(x), t(y), temperature=0.5).numpy(), ref,
                               rtol=1e-10)
    assert np.all(np.abs(C.cosine_energy(t(x), t(y), temperature=1.0).numpy()) <= 1 + 1e-12)
    np.testing.assert_allclose(C.cosine_energy(t(x), t(y)).numpy(), ref * 0.5 / 0.1, rtol=1e-10)  # default 0.1


def test_l2_energies(xy):
    x, y = xy
    sq = hand(lambda a, b: np.sum((a - b) ** 2), x, y)
    np.testing.assert_allclose(C.neg_sq_l2_energy(t(x), t(y)).numpy(), -sq, rtol=1e-9)
    np.testing.assert_allclose(C.neg_l2_energy(t(x), t(y)).numpy(), -np.sqrt(sq), rtol=1e-9)


def test_l2_energies_keep_close_pairs_of_large_vectors_in_float32():
    # |x| ~ 57, positive pairs 1e-3 apart: the expanded |x|^2 + |y|^2 - 2 x.y form cancels to noise
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 64)) * 7
    y = x + rng.normal(size=(8, 64)) * 1e-3 / 8
    sq = hand(lambda a, b: np.sum((a - b) ** 2), x, y)
    got = C.neg_sq_l2_energy(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    np.testing.assert_allclose(-got.diagonal().numpy(), sq.diagonal(), rtol=1e-2)
    xs = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    C.neg_l2_energy(xs, torch.tensor(y, dtype=torch.float32)).diagonal().sum().backward()
    np.testing.assert_allclose(xs.grad.norm(dim=1).numpy(), np.ones(8), rtol=1e-2)  # d|x - y|/dx is a unit vector


def test_l2_energy_has_a_gradient_at_tiny_distances():
    # gcrl's near-zero last layer (scale 1e-12) starts all representations ~1e-12 apart
    x = (torch.randn(4, 3) * 1e-12).requires_grad_()
    y = torch.randn(4, 3) * 1e-12
    torch.nn.functional.cross_entropy(C.neg_l2_energy(x, y), torch.arange(4)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_l2_energy_finite_gradient_at_identical_inputs():
    x = torch.randn(4, 3, requires_grad=True)
    l = C.neg_l2_energy(x, x)
    assert l.diagonal().abs().max() < 1e-3
    l.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_bilinear_energy_and_gradient(xy):
    x, y = xy
    torch.manual_seed(0)
    bil = C.Bilinear(3).double()
    W = bil.W.detach().numpy()
    assert (W >= 0).all() and (W < 1).all() and W.std() > 0  # CURL's U[0,1) init
    ref = hand(lambda a, b: sum(a[p] * W[p, q] * b[q] for p in range(3) for q in range(3)), x, y)
    out = bil(t(x), t(y))
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10)
    C.infonce_forward(out).backward()
    assert bil.W.grad is not None and bil.W.grad.abs().sum() > 0
    # d(sum_ij l_ij)/dW = (sum_i x_i)(sum_j y_j)^T
    bil.W.grad = None
    bil(t(x), t(y)).sum().backward()
    np.testing.assert_allclose(bil.W.grad.numpy(), np.outer(x.sum(0), y.sum(0)), rtol=1e-10)


def test_energies_batch_over_leading_dims():
    x, y = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    for name in C.ENERGIES:
        batched = C.energy(name, x, y)
        assert batched.shape == (2, 4, 4)
        torch.testing.assert_close(batched[1], C.energy(name, x[1], y[1]))


def test_energy_registry():
    assert set(C.ENERGIES) == {"dot", "cosine", "neg_l2", "neg_sq_l2"}
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(C.make_energy("cosine", temperature=0.2)(x, y),
                               C.cosine_energy(x, y, 0.2))
    bil = C.make_energy("bilinear", dim=3)
    assert len(list(bil.parameters())) == 1
    with pytest.raises(ValueError, match="unknown energy"):
        C.energy("bilinear", x, y)
    with pytest.raises(ValueError, match="unknown energy"):
        C.make_energy("nope")


# --------------------------------------------------------------------------------------------
# losses on fixed logits vs numpy
# --------------------------------------------------------------------------------------------


def test_infonce_losses_match_numpy(logits):
    l = t(logits)
    np.testing.assert_allclose(C.infonce_forward(l).item(), np_infonce_rows(logits), rtol=1e-10)
    np.testing.assert_allclose(C.infonce_backward(l).item(), np_infonce_cols(logits), rtol=1e-10)
    np.testing.assert_allclose(C.infonce_symmetric(l).item(),
                               0.5 * (np_infonce_rows(logits) + np_infonce_cols(logits)),
                               rtol=1e-10)
    # the fixture is not symmetric, so forward and backward must differ
    assert abs(np_infonce_rows(logits) - np_infonce_cols(logits)) > 1e-3


def test_binary_nce_matches_numpy(logits):
    np.testing.assert_allclose(C.binary_nce(t(logits)).item(), np_bce_identity(logits),
                               rtol=1e-10)


def test_logsumexp_penalty_matches_numpy(logits):
    ref = 0.01 * np.mean([np.log(np.exp(row).sum()) ** 2 for row in logits])
    np.testing.assert_allclose(C.logsumexp_penalty(t(logits)).item(), ref, rtol=1e-10)
    np.testing.assert_allclose(C.logsumexp_penalty(t(logits), coef=0.5).item(), ref * 50,
                               rtol=1e-10)


def test_curl_loss_matches_numpy(logits):
    shifted = logits - logits.max(1, keepdims=True)
    np.testing.assert_allclose(C.curl_loss(t(logits)).item(), np_infonce_rows(shifted),
                               rtol=1e-10)
    # the row-max shift changes neither the value nor the gradient: CE is invariant to it
    np.testing.assert_allclose(C.curl_loss(t(logits) + 1e3).item(), C.curl_loss(t(logits)).item(), rtol=1e-9)


def test_losses_average_over_leading_dims(logits):
    stacked = torch.stack([t(logits), t(logits.T) * 0.5])
    for name, fn in C.LOSSES.items():
        expected = 0.5 * (fn(stacked[0]) + fn(stacked[1]))
        torch.testing.assert_close(fn(stacked), expected, msg=name)


def test_metrics_are_detached_tensors():
    l = torch.tensor([[2.0, 0.0, 1.0], [3.0, 1.0, 0.0], [0.0, 2.0, 4.0]], requires_grad=True)
    m: dict = {}
    loss = C.infonce_forward(l, metrics=m)
    assert loss.requires_grad
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad and v.dim() == 0
               for v in m.values())
    # row argmax (0, 0, 2): rows 0 and 2 right (column argmax would give (1, 2, 2): 1/3)
    assert m["accuracy"].item() == pytest.approx(2 / 3)
    assert m["logits_pos"].item() == pytest.approx(7 / 3)
    assert m["logits_neg"].item() == pytest.approx(6 / 6)
    C.logsumexp_penalty(l, metrics=m)
    assert m["logsumexp"].item() == pytest.approx(l.detach().logsumexp(1).mean().item())


# --------------------------------------------------------------------------------------------
# CPC with sampled negatives
# --------------------------------------------------------------------------------------------


def test_sample_negative_indices_properties():
    g = torch.Generator().manual_seed(0)
    B, M = 7, 4
    idx = C.sample_negative_indices(B, M, (3, 200), generator=g)
    assert idx.shape == (3, 200, B, M) and idx.dtype == torch.long
    assert (idx >= 0).all() and (idx < B).all()
    assert (idx != torch.arange(B).view(B, 1)).all()  # never the positive
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # distinct within a row
    # uniform over the B-1 others: each j != i appears with frequency M/(B-1)
    freq = torch.nn.functional.one_hot(idx, B).sum(-2).float().mean((0, 1))  # (B, B)
    off = ~torch.eye(B, dtype=torch.bool)
    assert (freq[off] - M / (B - 1)).abs().max() < 0.08


def test_cpc_multistep_matches_numpy():
    rng = np.random.default_rng(2)
    K, T, B, d, M = 2, 3, 5, 4, 3
    pred, targ = rng.normal(size=(K, T, B, d)), rng.normal(size=(K, T, B, d))
    idx = C.sample_negative_indices(B, M, (K, T), generator=torch.Generator().manual_seed(1))
    mask = (rng.random((K, T, B)) > 0.3).astype(float)
    n = idx.numpy()
    nll, correct = np.zeros((K, T, B)), np.zeros((K, T, B))
    for k in range(K):
        for s in range(T):
            for i in range(B):
                scores = [pred[k, s, i] @ targ[k, s, i]] + [pred[k, s, i] @ targ[k, s, j]
                                                            for j in n[k, s, i]]
                nll[k, s, i] = -(scores[0] - np_logsumexp(np.array(scores), 0))
                correct[k, s, i] = np.argmax(scores) == 0
    out = C.cpc_multistep(t(pred), t(targ), neg_idx=idx)
    np.testing.assert_allclose(out.item(), nll.mean(), rtol=1e-10)
    m: dict = {}
    out = C.cpc_multistep(t(pred), t(targ), neg_idx=idx, mask=t(mask), metrics=m)
    np.testing.assert_allclose(out.item(), (nll * mask).sum() / mask.sum(), rtol=1e-10)
    np.testing.assert_allclose(m["accuracy"].item(), (correct * mask).sum() / mask.sum())
    # sampling inside with the same generator state draws the same negatives
    out = C.cpc_multistep(t(pred), t(targ), M, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(out.item(), nll.mean(), rtol=1e-10)


def test_cpc_with_all_negatives_is_infonce_per_step():
    rng = np.random.default_rng(3)
    pred, targ = rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 6, 4))
    ref = np.mean([np_infonce_rows(pred[k] @ targ[k].T) for k in range(3)])
    np.testing.assert_allclose(C.cpc_multistep(t(pred), t(targ)).item(), ref, rtol=1e-10)
    # the same loss with M = B-1 sampled negatives (all of them, in another order)
    np.testing.assert_allclose(C.cpc_multistep(t(pred), t(targ), 5).item(), ref, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# TD-InfoNCE on fixed logits
# --------------------------------------------------------------------------------------------


def test_td_infonce_matches_numpy():
    rng = np.random.default_rng(4)
    B, N = 5, 7
    nl, fl, tl = (2 * rng.normal(size=(B, B)) for _ in range(3))
    for gamma in (0.0, 0.3, 0.99):
        np.testing.assert_allclose(C.td_infonce(t(nl), t(fl), t(tl), gamma).item(),
                                   np_td_infonce(nl, fl, tl, gamma), rtol=1e-10)
    # candidates that are not the batch's own next states: explicit labels, N != B
    nl, fl, tl = (2 * rng.normal(size=(B, N)) for _ in range(3))
    labels = rng.integers(N, size=B)
    np.testing.assert_allclose(
        C.td_infonce(t(nl), t(fl), t(tl), 0.9, next_labels=torch.tensor(labels)).item(),
        np_td_infonce(nl, fl, tl, 0.9, labels), rtol=1e-10)


def test_td_infonce_twin_critics():
    rng = np.random.default_rng(5)
    B = 4
    nl, fl, tl = (2 * rng.normal(size=(2, B, B)) for _ in range(3))
    tmin = np.minimum(tl[0], tl[1])  # the weights use the min over the twin target critics
    ref = np.mean([np_td_infonce(nl[e], fl[e], tmin, 0.8) for e in range(2)])
    np.testing.assert_allclose(C.td_infonce(t(nl), t(fl), t(tl), 0.8).item(), ref, rtol=1e-10)


def test_td_infonce_target_gets_no_gradient_and_gamma0_is_infonce(logits):
    l = t(logits).requires_grad_()
    target = t(logits.T).requires_grad_()
    m: dict = {}
    loss = C.td_infonce(l, l, target, 0.5, metrics=m)
    loss.backward()
    assert target.grad is None and l.grad.abs().sum() > 0
    assert set(m) == {"loss_next", "loss_future", "accuracy", "weights_entropy"}
    torch.testing.assert_close(loss, 0.5 * m["loss_next"] + 0.5 * m["loss_future"])
    torch.testing.assert_close(C.td_infonce(l, l, target, 0.0), C.infonce_forward(l))
    w = C.td_infonce_weights(target)
    torch.testing.assert_close(w.sum(1), torch.ones(6, dtype=w.dtype))


# --------------------------------------------------------------------------------------------
# tabular convergence to closed forms
# --------------------------------------------------------------------------------------------


def adam_decaying(params, lr, steps, final_ratio=0.01):
    """Adam with lr decaying geometrically to lr * final_ratio: averages out the sampling noise."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: final_ratio ** (k / steps))
    return opt, sched


def random_mdp(S, A, seed):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))  # P[s, a, s']
    pi = rng.dirichlet(np.ones(A), size=S)  # pi[s, a], fixed and stochastic
    return P, pi


def occupancy(P, pi, gamma):
    """M[(s,a), g] = (1-gamma) sum_{k>=1} gamma^(k-1) P(s_{t+k} = g | s_t = s, a_t = a).

    = (1-gamma) (I - gamma P_pi)^-1 P on (s,a) rows, P_pi[(s,a),(s',a')] = P(s'|s,a) pi(a'|s').
    """
    S, A, _ = P.shape
    P_sa = P.reshape(S * A, S)
    P_pi = (P_sa[:, :, None] * pi[None, :, :]).reshape(S * A, S * A)
    M = (1 - gamma) * np.linalg.solve(np.eye(S * A) - gamma * P_pi, P_sa)
    # the same by the state chain: M = (1-gamma) P_sa sum_k gamma^k P_S^k
    P_S = np.einsum("sa,sat->st", pi, P)
    np.testing.assert_allclose(M, (1 - gamma) * P_sa @ np.linalg.inv(np.eye(S) - gamma * P_S),
                               atol=1e-12)
    return M


def sample_transitions(P_sa, pi, A, B):
    """(s,a) uniform, s' ~ P(.|s,a), a' ~ pi(.|s'); (s,a) and (s',a') as row indices s*A + a."""
    sa = torch.randint(P_sa.shape[0], (B,))
    s_next = torch.multinomial(P_sa[sa], 1).squeeze(1)
    a_next = torch.multinomial(pi[s_next], 1).squeeze(1)
    return sa, s_next, s_next * A + a_next


def train_td_infonce_table(P, pi, gamma, batch_form, B, steps=1500, lr=0.1, tau=0.1):
    """Learn a logits table f[(s,a), g] with td_infonce from sampled transitions.

    batch_form=False: candidate goals are all S states (each once), positives given by labels.
    batch_form=True: the agents' form, (B, B) logits whose candidates are the batch's next states
    (positives on the diagonal), both for the next-state term and the future term.
    """
    S, A, _ = P.shape
    P_sa, pi_t = torch.tensor(P.reshape(S * A, S)), torch.tensor(pi)
    f = torch.zeros(S * A, S, requires_grad=True)
    f_target = f.detach().clone()
    opt, sched = adam_decaying([f], lr, steps)
    for _ in range(steps):
        sa, s_next, sa_next = sample_transitions(P_sa, pi_t, A, B)
        if batch_form:
            logits = f[sa][:, s_next]
            loss = C.td_infonce(logits, logits, f_target[sa_next][:, s_next], gamma)
        else:
            logits = f[sa]
            loss = C.td_infonce(logits, logits, f_target[sa_next], gamma, next_labels=s_next)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            f_target.lerp_(f, tau)  # Polyak target critic
    return f.detach().double()


@pytest.mark.parametrize("gamma", [0.0, 0.9])
def test_td_infonce_tabular_fixed_point(gamma):
    """softmax_g f(s,a,g) -> M(s,a,g); at gamma = 0, M = P(s'|s,a). Max abs error <= 0.02."""
    torch.manual_seed(0)
    P, pi = random_mdp(S=5, A=2, seed=0)
    M = occupancy(P, pi, gamma)
    if gamma == 0.0:
        np.testing.assert_allclose(M, P.reshape(10, 5), atol=1e-12)
    f = train_td_infonce_table(P, pi, gamma, batch_form=False, B=512)
    err = np.abs(f.softmax(1).numpy() - M).max()
    assert err <= 0.02, err
    if gamma > 0:  # the fixed point is not the one-step model
        assert np.abs(f.softmax(1).numpy() - P.reshape(10, 5)).max() > 0.1


def test_td_infonce_batch_form_fixed_point():
    """(B, B) form with the batch's next states as candidates, drawn from the marginal p(g):
    softmax_g(f(s,a,g) + log p(g)) -> M(s,a,g), max abs error <= 0.02 (exact as B -> inf)."""
    torch.manual_seed(1)
    gamma = 0.9
    P, pi = random_mdp(S=5, A=2, seed=1)
    M = occupancy(P, pi, gamma)
    p_next = P.reshape(10, 5).mean(0)  # marginal of s' under uniform (s,a)
    f = train_td_infonce_table(P, pi, gamma, batch_form=True, B=128)
    err = np.abs((f + t(np.log(p_next))).softmax(1).numpy() - M).max()
    assert err <= 0.02, err


def random_joint(X, G, seed):
    rng = np.random.default_rng(seed)
    J = 0.5 * rng.dirichlet(np.ones(X * G)) + 0.5 / (X * G)  # dense: every pair has mass
    return J.reshape(X, G)


def log_ratio(J):
    """log p(g|x) - log p(g)."""
    return np.log(J) - np.log(J.sum(1, keepdims=True)) - np.log(J.sum(0, keepdims=True))


def train_pair_table(loss_fn, J, B, blocks=32, steps=1500, lr=0.1, init=None):
    """Learn f[x, g] with loss_fn on (blocks, B, B) logits f(x_i, g_j) of pairs (x_i, g_i) ~ J.

    Each block is an independent batch: positives on its diagonal, negatives the other pairs'
    goals, i.e. draws from p(x) p(g). `init` (X, G) is the table's starting value (default 0).
    """
    X, G = J.shape
    J_flat = torch.tensor(J.ravel())
    f = (torch.zeros(X, G) if init is None else torch.tensor(init, dtype=torch.float32))
    f.requires_grad_()
    opt, sched = adam_decaying([f], lr, steps)
    for _ in range(steps):
        idx = torch.multinomial(J_flat, blocks * B, replacement=True).view(blocks, B)
        x, g = idx // G, idx % G
        loss = loss_fn(f[x[:, :, None], g[:, None, :]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return f.detach().double().numpy()


def test_binary_nce_tabular_optimum():
    """BCE over all B^2 entries -> f = log p(g|x) - log p(g) - log(B-1), max abs error <= 0.06.

    B = 8 so that the shift is distinguishable: log 8 - log 7 = 0.134 > the tolerance.
    """
    torch.manual_seed(0)
    J, B = random_joint(4, 5, seed=0), 8
    f = train_pair_table(C.binary_nce, J, B)
    err = np.abs(f - (log_ratio(J) - np.log(B - 1))).max()
    assert err <= 0.06, err


def centred(a, axis=None):
    return a - a.mean(axis=axis, keepdims=True)


@pytest.mark.parametrize("loss_name, axis", [("infonce_forward", 1), ("infonce_backward", 0),
                                             ("infonce_symmetric", None)])
def test_infonce_tabular_optimum(loss_name, axis):
    """InfoNCE -> f = log p(g|x) - log p(g) + c: c(x) for rows (forward), c(g) for columns
    (backward), one constant (symmetric). Compared after centring over that axis, max abs <= 0.06.

    The table starts at random row and column offsets a(x) + b(g) (std 1): the loss must remove
    the offsets its optimum does not allow and may keep the others, so a loss normalising over the
    wrong axis ends about 1 away from the closed form, not within the tolerance.
    """
    torch.manual_seed(0)
    J = random_joint(4, 5, seed=1)
    rng = np.random.default_rng(2)
    init = rng.normal(size=(4, 1)) + rng.normal(size=(1, 5))
    f = train_pair_table(C.LOSSES[loss_name], J, B=8, init=init)
    err = np.abs(centred(f, axis) - centred(log_ratio(J), axis)).max()
    assert err <= 0.06, err
