"""Contrastive energies and losses, written once for every agent.

Conventions
-----------
* An *energy* maps two batches of representations x (..., B, d) and y (..., B, d) to a logits
  matrix l (..., B, B) with l_ij = f(x_i, y_j).
* A *loss* takes such a logits matrix with the positive pairs on the diagonal (l_ii) and the other
  entries of the row (or column) as negatives. Any leading dimensions (e.g. twin critics stacked as
  (2, B, B)) are averaged over, so a loss over an ensemble is the mean of its members' losses.
* Metrics: every loss takes an optional ``metrics`` dict and, when one is given, writes detached
  0-d tensors into it (no ``.item()``: the caller syncs once per update).

Energies: :func:`dot_energy`, :class:`Bilinear`, :func:`cosine_energy`, :func:`neg_l2_energy`,
:func:`neg_sq_l2_energy`; by name through :data:`ENERGIES` / :func:`energy` / :func:`make_energy`.

Losses: :func:`infonce_forward`, :func:`infonce_backward`, :func:`infonce_symmetric`,
:func:`binary_nce`, :func:`logsumexp_penalty`, :func:`curl_loss`, :func:`cpc_loss` /
:func:`cpc_multistep` (with :func:`sample_negative_indices`), :func:`td_infonce`
(with :func:`td_infonce_weights`); the (B, B) ones by name through :data:`LOSSES`.

Critic: :class:`ContrastiveCritic`, f(x, g) = energy(phi(x), psi(g)) over an ensemble.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from crl.encoders import MLP

Metrics = dict[str, Tensor]

# --------------------------------------------------------------------------------------------
# Energies: (..., B, d) x (..., B, d) -> (..., B, B)
# --------------------------------------------------------------------------------------------


def dot_energy(x: Tensor, y: Tensor) -> Tensor:
    """l_ij = x_i . y_j"""
    return x @ y.transpose(-1, -2)


def cosine_energy(x: Tensor, y: Tensor, temperature: float = 0.1) -> Tensor:
    """l_ij = (x_i . y_j) / (|x_i| |y_j| temperature)"""
    return dot_energy(F.normalize(x, dim=-1), F.normalize(y, dim=-1)) / temperature


def neg_sq_l2_energy(x: Tensor, y: Tensor) -> Tensor:
    """l_ij = -|x_i - y_j|^2

    From the differences themselves (torch.cdist without its matmul shortcut), not as
    2 x_i.y_j - |x_i|^2 - |y_j|^2: in float32 that form cancels for close pairs of large vectors
    (a positive pair 0.001 apart at norm ~57 lost the whole distance). cdist does not keep a
    (..., B, B, d) tensor for backward (15x faster than broadcasting at B = 256).
    """
    return -torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square()


def neg_l2_energy(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """l_ij = -sqrt(|x_i - y_j|^2 + eps)

    `eps` keeps the gradient finite at x_i == y_j (sqrt's is infinite at 0, which would give NaN)
    and, unlike clamping the squared distance at eps, nonzero below it: gcrl's near-zero last
    layer starts every distance ~1e-12, where a clamp passed no gradient and the critic never
    moved from log 2.
    """
    return -(-neg_sq_l2_energy(x, y) + eps).sqrt()


class Bilinear(nn.Module):
    """l_ij = x_i^T W y_j with a learned W (CURL). W is initialised as CURL does: U[0, 1)."""

    def __init__(self, dim_x: int, dim_y: int | None = None):
        super().__init__()
        self.W = nn.Parameter(torch.rand(dim_x, dim_x if dim_y is None else dim_y))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ self.W @ y.transpose(-1, -2)


ENERGIES: dict[str, Callable[..., Tensor]] = {
    "dot": dot_energy,
    "cosine": cosine_energy,
    "neg_l2": neg_l2_energy,
    "neg_sq_l2": neg_sq_l2_energy,
}
"""Parameter-free energies by name. "bilinear" has parameters: build it with :func:`make_energy`."""


def energy(name: str, x: Tensor, y: Tensor, **kwargs) -> Tensor:
    """Apply the parameter-free energy `name` (a key of ENERGIES) to x and y."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; parameter-free energies: {sorted(ENERGIES)}"
                       " (use make_energy for 'bilinear')")
    return ENERGIES[name](x, y, **kwargs)


class _FunctionEnergy(nn.Module):
    def __init__(self, fn: Callable[..., Tensor], **kwargs):
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.fn(x, y, **self.kwargs)

    def extra_repr(self) -> str:
        return f"{self.fn.__name__}, {self.kwargs}" if self.kwargs else self.fn.__name__


def make_energy(name: str, dim: int | None = None, **kwargs) -> nn.Module:
    """An energy as a module, so that an agent's config can name it and its parameters register.

    `name` is "bilinear" (needs `dim`, the representation size) or a key of ENERGIES; extra kwargs
    (e.g. temperature=0.1 for "cosine") are bound to the function.
    """
    if name == "bilinear":
        if dim is None:
            raise ValueError("make_energy('bilinear') needs dim")
        return Bilinear(dim, **kwargs)
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; known: {sorted(ENERGIES) + ['bilinear']}")
    return _FunctionEnergy(ENERGIES[name], **kwargs)


# --------------------------------------------------------------------------------------------
# Losses on a (..., B, B) logits matrix with positives on the diagonal
# --------------------------------------------------------------------------------------------


def _check_square(logits: Tensor) -> None:
    if logits.dim() < 2 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"expected (..., B, B) logits, got shape {tuple(logits.shape)}")


def _record(metrics: Metrics | None, **values: Tensor) -> None:
    if metrics is not None:
        metrics.update({k: v.detach() for k, v in values.items()})


def _record_logit_stats(metrics: Metrics | None, logits: Tensor) -> None:
    """accuracy (row argmax on the diagonal), mean positive and mean negative logit."""
    if metrics is None:
        return
    with torch.no_grad():
        B = logits.shape[-1]
        diag = logits.diagonal(dim1=-2, dim2=-1)
        cols = torch.arange(B, device=logits.device)
        accuracy = (logits.argmax(-1) == cols).float().mean()
        neg = (logits.sum((-1, -2)) - diag.sum(-1)) / max(B * (B - 1), 1)
        _record(metrics, accuracy=accuracy, logits_pos=diag.mean(), logits_neg=neg.mean())


def infonce_forward(logits: Tensor, metrics: Metrics | None = None) -> Tensor:
    """InfoNCE over rows: L = -1/B sum_i log( exp(l_ii) / sum_j exp(l_ij) ) = CE(rows, I).

    Optimum (tabular, any B): l(x, g) = log p(g|x) - log p(g) + c(x).
    """
    _check_square(logits)
    loss = -logits.log_softmax(-1).diagonal(dim1=-2, dim2=-1).mean()
    _record_logit_stats(metrics, logits)
    return loss


def infonce_backward(logits: Tensor, metrics: Metrics | None = None) -> Tensor:
    """InfoNCE over columns: L = -1/B sum_j log( exp(l_jj) / sum_i exp(l_ij) ) = CE(columns, I).

    Optimum: l(x, g) = log p(x|g) - log p(x) + c(g) (= log p(g|x) - log p(g) + c(g)).
    """
    _check_square(logits)
    loss = -logits.log_softmax(-2).diagonal(dim1=-2, dim2=-1).mean()
    _record_logit_stats(metrics, logits)
    return loss


def infonce_symmetric(logits: Tensor, metrics: Metrics | None = None) -> Tensor:
    """L = (infonce_forward + infonce_backward) / 2.

    Optimum: l(x, g) = log p(g|x) - log p(g) + c (a single constant). Metrics are the rows'.
    """
    return 0.5 * (infonce_forward(logits, metrics) + infonce_backward(logits))


def binary_nce(logits: Tensor, metrics: Metrics | None = None) -> Tensor:
    """Binary NCE: L = 1/B^2 sum_ij BCE(sigmoid(l_ij), I_ij), averaged over all B^2 entries.

    Positives are the B diagonal entries, negatives the B(B-1) others, unweighted, so the optimum is
    l(x, g) = log p(g|x) - log p(g) - log(B - 1) (the odds of a positive among the entries).
    """
    _check_square(logits)
    eye = torch.eye(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, eye.expand_as(logits))
    _record_logit_stats(metrics, logits)
    return loss


def logsumexp_penalty(logits: Tensor, coef: float = 0.01, metrics: Metrics | None = None) -> Tensor:
    """L = coef * 1/B sum_i ( logsumexp_j l_ij )^2 (contrastive RL adds it to InfoNCE with 0.01).

    It pins InfoNCE's free per-row constant c(x), pushing each row's logsumexp towards 0.
    """
    lse = logits.logsumexp(-1)
    _record(metrics, logsumexp=lse.mean())
    return coef * lse.square().mean()


def curl_loss(logits: Tensor, metrics: Metrics | None = None) -> Tensor:
    """CURL: subtract each row's max, then CE over rows with the diagonal as labels.

    CURL's logits are Bilinear(q, sg k): queries from the online encoder, keys from the key
    (momentum) encoder.

    L = -1/B sum_i log softmax_j(l_ij - max_k l_ik) at j = i. The shift leaves the value and the
    gradient of the CE unchanged (softmax is shift invariant); it is kept for fidelity and
    numerical range, and detached as it carries no gradient.
    """
    _check_square(logits)
    shifted = logits - logits.max(-1, keepdim=True).values.detach()
    loss = -shifted.log_softmax(-1).diagonal(dim1=-2, dim2=-1).mean()
    _record_logit_stats(metrics, logits)
    return loss


LOSSES: dict[str, Callable[..., Tensor]] = {
    "infonce_forward": infonce_forward,
    "infonce_backward": infonce_backward,
    "infonce_symmetric": infonce_symmetric,
    "binary_nce": binary_nce,
    "curl": curl_loss,
}
"""Losses on (..., B, B) logits with positives on the diagonal, by name: loss(logits, metrics)."""


# --------------------------------------------------------------------------------------------
# CPC with sampled negatives
# --------------------------------------------------------------------------------------------


def sample_negative_indices(batch_size: int, num_negatives: int, shape: tuple[int, ...] = (), *,
                            generator: torch.Generator | None = None,
                            device: torch.device | str | None = None) -> Tensor:
    """Indices (*shape, B, M): for each i, M distinct j != i, uniform without replacement.

    Independent draws for every leading index and every i.
    """
    B, M = batch_size, num_negatives
    if not 0 <= M <= B - 1:
        raise ValueError(f"num_negatives must be in [0, B-1] = [0, {B - 1}], got {M}")
    # A random M-subset of {0, ..., B-2}, then r -> r + [r >= i] skips i itself.
    r = torch.rand(*shape, B, B - 1, generator=generator, device=device).argsort(-1)[..., :M]
    i = torch.arange(B, device=r.device).unsqueeze(-1)
    return r + (r >= i).long()


def cpc_loss(pos_logits: Tensor, neg_logits: Tensor, mask: Tensor | None = None,
             metrics: Metrics | None = None) -> Tensor:
    """CE of [l+, l-_1, ..., l-_M] with label 0, averaged over all elements (weighted by `mask`).

    pos_logits (...,), neg_logits (..., M), mask (...,) of 0/1 (e.g. t+k past the episode's end):
    L = sum_n mask_n * -log( exp(l+_n) / (exp(l+_n) + sum_m exp(l-_nm)) ) / sum_n mask_n.
    Use it directly when the score is not a dot product (e.g. ContraBAR's per-k MLP classifier).
    """
    all_logits = torch.cat([pos_logits.unsqueeze(-1), neg_logits], dim=-1)
    nll = -all_logits.log_softmax(-1)[..., 0]
    if mask is None:
        loss = nll.mean()
        weight = None
    else:
        weight = mask.to(nll.dtype)
        loss = (nll * weight).sum() / weight.sum().clamp_min(1.0)
    if metrics is not None:
        with torch.no_grad():
            correct = (all_logits.argmax(-1) == 0).to(nll.dtype)
            if weight is None:
                accuracy = correct.mean()
            else:
                accuracy = (correct * weight).sum() / weight.sum().clamp_min(1.0)
        _record(metrics, accuracy=accuracy)
    return loss


def cpc_multistep(predictions: Tensor, targets: Tensor, num_negatives: int | None = None, *,
                  neg_idx: Tensor | None = None, mask: Tensor | None = None,
                  generator: torch.Generator | None = None,
                  metrics: Metrics | None = None) -> Tensor:
    """Multi-step CPC with a dot-product score and negatives from other batch elements.

    predictions, targets: (K, ..., B, d). predictions[k, ..., i] is the prediction made for
    sequence i of the code k+1 steps ahead (e.g. W_k c_t), targets[k, ..., i] that code (z_{t+k+1}).
    Any dims between K and B (e.g. time t) are kept apart: negatives for element (k, ..., i) are
    targets[k, ..., j] of other batch elements j != i at the same (k, ...).

      L = mean_{k, ..., i} -log( exp(p_i.z_i) / (exp(p_i.z_i) + sum_{j in N(i)} exp(p_i.z_j)) )

    N(i) = all j != i when num_negatives is None (then it is InfoNCE over rows of p z^T per
    (k, ...)), else `num_negatives` distinct j != i drawn uniformly (or given as neg_idx
    (K, ..., B, M)). `mask` (K, ..., B) drops invalid elements from the mean.
    """
    if predictions.shape != targets.shape or predictions.dim() < 3:
        raise ValueError(f"expected equal (K, ..., B, d) shapes, got {tuple(predictions.shape)}"
                         f" and {tuple(targets.shape)}")
    *lead, B, d = targets.shape
    pos = (predictions * targets).sum(-1)
    if neg_idx is None and num_negatives is None:
        logits = dot_energy(predictions, targets)
        off_diag = ~torch.eye(B, dtype=torch.bool, device=logits.device)
        neg = logits.masked_select(off_diag).view(*lead, B, B - 1)
    else:
        if neg_idx is None:
            neg_idx = sample_negative_indices(B, num_negatives, tuple(lead), generator=generator,
                                              device=targets.device)
        M = neg_idx.shape[-1]
        # negs[..., i, m, :] = targets[..., neg_idx[..., i, m], :]; the expand is a free view.
        candidates = targets.unsqueeze(-3).expand(*lead, B, B, d)
        negs = candidates.gather(-2, neg_idx.unsqueeze(-1).expand(*lead, B, M, d))
        neg = (predictions.unsqueeze(-2) * negs).sum(-1)
    return cpc_loss(pos, neg, mask, metrics)


# --------------------------------------------------------------------------------------------
# TD-InfoNCE
# --------------------------------------------------------------------------------------------


def td_infonce_weights(target_future_logits: Tensor) -> Tensor:
    """W_ij = sg softmax_j( min_ensemble f_target(s'_i, a'_i, g_i, g~_j) ).

    target_future_logits: (..., B, N); all leading dims are ensemble members (twin critics),
    reduced by their elementwise minimum. Returns (B, N), rows summing to 1, no gradient.
    """
    with torch.no_grad():
        t = target_future_logits
        if t.dim() > 2:
            t = t.reshape(-1, *t.shape[-2:]).min(0).values
        return t.softmax(-1)


def td_infonce(next_logits: Tensor, future_logits: Tensor, target_future_logits: Tensor,
               gamma: float, *, next_labels: Tensor | None = None,
               metrics: Metrics | None = None) -> Tensor:
    """TD-InfoNCE critic loss (Zheng, Salakhutdinov, Eysenbach 2023).

      L = (1 - gamma) * CE_row(f(s_i, a_i, g_i, s'_j), I)
          + gamma * CE_row(f(s_i, a_i, g_i, g~_j), W)
      W = td_infonce_weights(f_target(s'_i, a'_i, g_i, g~_j)),  a'_i ~ pi(. | s'_i, g_i)

    next_logits (..., B, N): online critic at (s_i, a_i, g_i) against candidates c_j, whose
      positive for row i is column next_labels[i]; by default (None) column i, i.e. the candidates
      are the batch's own next states s'_j (then N = B).
    future_logits (..., B, N'): online critic at (s_i, a_i, g_i) against candidate goals g~_j (often
      the same tensor as next_logits, i.e. g~ = s').
    target_future_logits (..., B, N'): target critic at (s'_i, a'_i, g_i) against the same g~_j;
      leading dims are ensemble members, reduced by min (see td_infonce_weights).
    Leading dims of next_logits / future_logits (ensemble members) are averaged over.

    Fixed point (tabular, every candidate set containing each goal once):
    softmax_g f(s, a, g) = M(s, a, g) = (1 - gamma) sum_{k>=1} gamma^(k-1) P(s_{t+k} = g | s, a);
    with candidates drawn from a marginal p, softmax_g(f + log p) = M (exact as B -> infinity).
    """
    B = next_logits.shape[-2]
    if next_labels is None:
        if next_logits.shape[-1] != B:
            raise ValueError("next_logits must be (..., B, B) when next_labels is None")
        next_labels = torch.arange(B, device=next_logits.device)
    next_logp = next_logits.log_softmax(-1)
    index = next_labels.expand(*next_logp.shape[:-1]).unsqueeze(-1)
    loss_next = -next_logp.gather(-1, index).mean()

    w = td_infonce_weights(target_future_logits)
    loss_future = -(w * future_logits.log_softmax(-1)).sum(-1).mean()

    loss = (1.0 - gamma) * loss_next + gamma * loss_future
    if metrics is not None:
        with torch.no_grad():
            accuracy = (next_logits.argmax(-1) == next_labels).float().mean()
            w_entropy = -(w * w.clamp_min(1e-30).log()).sum(-1).mean()
        _record(metrics, loss_next=loss_next, loss_future=loss_future, accuracy=accuracy,
                weights_entropy=w_entropy)
    return loss


# --------------------------------------------------------------------------------------------
# The contrastive critic of goal-conditioned agents
# --------------------------------------------------------------------------------------------


class ContrastiveCritic(nn.Module):
    """f(x_i, g_j) = energy(phi(x_i), psi(g_j)) for an ensemble of independent (phi, psi) pairs.

    x is whatever the agent conditions on: (s, a) for contrastive RL, (s, a, commanded goal) for
    TD-InfoNCE. ``forward(x, g)`` gives logits (E, B, N) for B inputs and N candidate goals;
    ``pairwise(x, g)`` the E x B scores f(x_i, g_i) without the (B, N) matrix.

    Zheng et al. 2023's stabilising choices are the arguments: wide LayerNorm MLPs, a small
    representation, Xavier init and a last layer initialised near zero (``last_layer_scale``), so
    that every logit starts near 0.
    """

    def __init__(self, x_dim: int, goal_dim: int, hidden_dims: Sequence[int], repr_dim: int, *,
                 ensemble: int = 2, energy: str = "dot", energy_kwargs: dict | None = None,
                 layer_norm: bool = True, init: str = "xavier_uniform",
                 last_layer_scale: float | None = 1e-12):
        super().__init__()

        def mlp(in_dim: int) -> nn.Module:
            return MLP(in_dim, hidden_dims, repr_dim, layer_norm=layer_norm, init=init,
                       last_layer_scale=last_layer_scale)

        self.phi = nn.ModuleList(mlp(x_dim) for _ in range(ensemble))
        self.psi = nn.ModuleList(mlp(goal_dim) for _ in range(ensemble))
        self.energies = nn.ModuleList(make_energy(energy, repr_dim, **(energy_kwargs or {}))
                                      for _ in range(ensemble))

    def representations(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """phi(x) (E, B, d) and psi(g) (E, N, d)."""
        return (torch.stack([phi(x) for phi in self.phi]), torch.stack([psi(g) for psi in self.psi]))

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        phi, psi = self.representations(x, g)
        return torch.stack([energy(p, q) for energy, p, q in zip(self.energies, phi, psi)])

    def pairwise(self, x: Tensor, g: Tensor) -> Tensor:
        """f(x_i, g_i) for each member: (E, B). Row by row, so no B x B matrix is built."""
        phi, psi = self.representations(x, g)
        scores = [energy(p.unsqueeze(-2), q.unsqueeze(-2)) for energy, p, q in zip(self.energies, phi, psi)]
        return torch.stack(scores).squeeze(-1).squeeze(-1)
