"""Tabular occupancy estimation: TD-InfoNCE vs Monte-Carlo InfoNCE vs a TD-learned successor representation.

The shape of Zheng et al. 2023's tabular claim (TD-InfoNCE ~20x more sample-efficient than the
successor representation, ~1500x more than Monte-Carlo CPC), measured on a random MDP under a fixed
stochastic policy pi, where the target is known exactly:

    M(s, a, g) = (1 - gamma) sum_{k>=1} gamma^(k-1) P(s_{t+k} = g | s, a)
               = (1 - gamma) (I - gamma P_pi)^-1 P   on (s, a) rows.

For each dataset size N (trajectory segments of the policy, N transitions in all) and seed, every
method gets the same data and the same number of minibatch updates, and its estimate of M is
compared with M (mean and max absolute error over all (s, a, g) entries):

* TD-InfoNCE (all states): crl.contrastive.td_infonce on a logits table f[(s, a), g] with every
  state as a candidate once; estimate softmax_g f. a' ~ pi(.|s') at each update (the algorithm
  samples the next action from its policy), Polyak target table.
* TD-InfoNCE (batch): the agents' (B, B) form, candidates = the batch's next states; estimate
  softmax_g(f + log p), p = the dataset's next-state marginal.
* MC InfoNCE (contrastive RL's critic): crl.contrastive.infonce_forward on (B, B) logits
  f[(s_i, a_i), g_j], goals from crl.replay.EpisodeReplay.sample_goals (truncated geometric over the
  rest of the segment); estimate softmax_g(f + log p), p = the marginal of the sampled goals.
* SR (TD): tabular successor representation, M(s,a,.) += lr ((1-gamma) e_s' + gamma M(s',a',.) -
  M(s,a,.)), a' ~ pi(.|s'), minibatch averaged per row, step size decaying geometrically.
* Certainty-equivalent (reference, not learned): the exact M of the empirical model P_hat(s'|s,a)
  (unvisited (s, a): uniform), the point the two TD methods converge to on a fixed dataset.
* MC limit (reference, not learned): the average over the visits of (s, a) of the goal sampler's
  exact distribution (the truncated-geometric future of each visit), the point MC InfoNCE converges
  to on a fixed dataset with unlimited updates.

The two references separate what the data allow from what the update budget allows: with a fixed
number of updates, MC InfoNCE sees one sampled goal per transition and update, so at large N its
error is set by the number of sampled goals rather than by N.

Sample-efficiency ratios: for a target error, the N at which each method's seed-mean error curve
crosses it (log-log interpolation), divided by TD-InfoNCE's N.

    .venv/bin/python experiments/tabular_occupancy.py --quick      # fast check, prints the table
    .venv/bin/python experiments/tabular_occupancy.py --write      # full sweep, PNG + BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchlib import ROOT, command_line, machine_line, write_section
from crl import contrastive as C
from crl.fileio import atomic_write_bytes
from crl.replay import EpisodeReplay

TITLE = "Tabular occupancy estimation (TD-InfoNCE vs MC InfoNCE vs SR)"
PNG = ROOT / "experiments" / "results" / "tabular_occupancy.png"
METHODS = {  # key -> label
    "td_infonce": "TD-InfoNCE (all states)",
    "td_infonce_batch": "TD-InfoNCE (batch)",
    "mc_infonce": "MC InfoNCE",
    "sr": "SR (TD)",
    "certainty_equivalent": "certainty-equivalent (exact, TD limit)",
    "mc_limit": "MC limit (exact average)",
}
LEARNED = ["td_infonce", "td_infonce_batch", "mc_infonce", "sr"]

# --------------------------------------------------------------------------------------------
# the MDP and its data


def random_mdp(S: int, A: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """P[s, a, s'] ~ Dirichlet(1); pi(a|s) = half Dirichlet(1), half uniform (no action is rare)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    pi = 0.5 * rng.dirichlet(np.ones(A), size=S) + 0.5 / A
    return P, pi


def occupancy(P: np.ndarray, pi: np.ndarray, gamma: float) -> np.ndarray:
    """M[(s,a), g] = (1-gamma) (I - gamma P_pi)^-1 P_sa, P_pi[(s,a),(s',a')] = P(s'|s,a) pi(a'|s')."""
    S, A, _ = P.shape
    P_sa = P.reshape(S * A, S)
    P_pi = (P_sa[:, :, None] * pi[None, :, :]).reshape(S * A, S * A)
    return (1 - gamma) * np.linalg.solve(np.eye(S * A) - gamma * P_pi, P_sa)


def stationary(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    P_S = np.einsum("sa,sat->st", pi, P)
    w, v = np.linalg.eig(P_S.T)
    d = np.abs(np.real(v[:, np.argmin(np.abs(w - 1))]))
    return d / d.sum()


def categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of probs (n, K)."""
    return (probs.cumsum(1) < rng.random((len(probs), 1))).sum(1).clip(max=probs.shape[1] - 1)


def collect(P, pi, n: int, segment: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Segments (states (L+1,), actions (L,)) of the policy, n transitions in all, L <= segment.

    Segments start in the stationary distribution and run in parallel.
    """
    lengths = [segment] * (n // segment) + ([n % segment] if n % segment else [])
    k, T = len(lengths), max(lengths)
    states = np.empty((k, T + 1), np.int64)
    actions = np.empty((k, T), np.int64)
    states[:, 0] = rng.choice(P.shape[0], size=k, p=stationary(P, pi))
    for t in range(T):
        actions[:, t] = categorical(pi[states[:, t]], rng)
        states[:, t + 1] = categorical(P[states[:, t], actions[:, t]], rng)
    return [(states[i, :L + 1], actions[i, :L]) for i, L in enumerate(lengths)]


class Transitions:
    """The dataset as flat (s, a) row indices x and next states s', plus a' ~ pi(.|s') sampling."""

    def __init__(self, segments, pi: np.ndarray, seed: int):
        self.A = pi.shape[1]
        self.x = torch.from_numpy(np.concatenate([s[:-1] * self.A + a for s, a in segments]))
        self.s_next = torch.from_numpy(np.concatenate([s[1:] for s, _ in segments]))
        self.pi_cdf = torch.from_numpy(pi.cumsum(1))
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.x)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, s', x' = s' A + a') with a' ~ pi(.|s') drawn afresh."""
        i = torch.randint(len(self.x), (batch,), generator=self.gen)
        s_next = self.s_next[i]
        u = torch.rand(batch, 1, generator=self.gen, dtype=torch.float64)
        a_next = (self.pi_cdf[s_next] < u).sum(1).clamp(max=self.A - 1)
        return self.x[i], s_next, s_next * self.A + a_next


# --------------------------------------------------------------------------------------------
# estimators: each returns an (S*A, S) estimate of M


def adam_decaying(params, lr: float, steps: int, final_ratio: float = 0.01):
    """Adam with lr decaying geometrically to lr * final_ratio: averages out the sampling noise."""
    opt = torch.optim.Adam(params, lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda k: final_ratio ** (k / steps))


def softmax_with_prior(f: np.ndarray, p: np.ndarray) -> np.ndarray:
    """softmax_g(f + log p): a contrastive optimum f = log M - log p + c(x) gives back M."""
    with np.errstate(divide="ignore"):
        z = f + np.log(p)  # goals never drawn as candidates get probability 0
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def fit_td_infonce(data: Transitions, S: int, gamma: float, steps: int, batch: int, *,
                   batch_form: bool, lr: float = 0.1, tau: float = 0.1) -> np.ndarray:
    f = torch.zeros(data.pi_cdf.shape[0] * data.A, S, requires_grad=True)
    f_target = f.detach().clone()
    opt, sched = adam_decaying([f], lr, steps)
    for _ in range(steps):
        x, s_next, x_next = data.sample(batch)
        if batch_form:
            logits = f[x][:, s_next]
            loss = C.td_infonce(logits, logits, f_target[x_next][:, s_next], gamma)
        else:
            logits = f[x]
            loss = C.td_infonce(logits, logits, f_target[x_next], gamma, next_labels=s_next)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            f_target.lerp_(f, tau)
    f = f.detach().double().numpy()
    if not batch_form:
        return softmax_with_prior(f, np.ones(S))
    return softmax_with_prior(f, np.bincount(data.s_next.numpy(), minlength=S) / len(data))


def fit_mc_infonce(segments, S: int, A: int, gamma: float, steps: int, batch: int, seed: int,
                   lr: float = 0.1) -> np.ndarray:
    replay = EpisodeReplay(capacity=sum(len(s) for s, _ in segments), seed=seed)
    for states, actions in segments:
        replay.add_episode({"observation": states[:, None]}, actions, np.zeros(len(actions)))
    rng = np.random.default_rng(seed)
    f = torch.zeros(S * A, S, requires_grad=True)
    opt, sched = adam_decaying([f], lr, steps)
    goal_counts = np.zeros(S)
    for _ in range(steps):
        b = replay.sample_goals(batch, gamma, goal_field="observation", rng=rng)
        x = b["observation"][:, 0] * A + b["action"]
        g = b["goal"][:, 0]
        loss = C.infonce_forward(f[x][:, g])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        goal_counts += np.bincount(g.numpy(), minlength=S)
    return softmax_with_prior(f.detach().double().numpy(), goal_counts / goal_counts.sum())


def fit_sr(data: Transitions, S: int, gamma: float, steps: int, batch: int,
           lr: float = 0.5, final_ratio: float = 0.01) -> np.ndarray:
    """TD(0) on the SR table, the batch's TD errors averaged per (s, a) row; uniform init."""
    rows = data.pi_cdf.shape[0] * data.A
    M = torch.full((rows, S), 1.0 / S, dtype=torch.float64)
    eye = torch.eye(S, dtype=torch.float64)
    for k in range(steps):
        x, s_next, x_next = data.sample(batch)
        td_error = (1 - gamma) * eye[s_next] + gamma * M[x_next] - M[x]
        total = torch.zeros_like(M).index_add_(0, x, td_error)
        count = torch.bincount(x, minlength=rows).clamp_min(1).unsqueeze(1)
        M += lr * final_ratio ** (k / steps) * total / count
    return M.numpy()


def certainty_equivalent(data: Transitions, pi: np.ndarray, S: int, gamma: float) -> np.ndarray:
    """Exact M of the empirical model (no learning noise); unvisited (s, a) rows of P_hat uniform."""
    A = pi.shape[1]
    counts = np.zeros((S * A, S))
    np.add.at(counts, (data.x.numpy(), data.s_next.numpy()), 1)
    visits = counts.sum(1, keepdims=True)
    P_hat = np.where(visits > 0, counts / np.maximum(visits, 1), 1.0 / S)
    return occupancy(P_hat.reshape(S, A, S), pi, gamma)


def mc_limit(segments, S: int, A: int, gamma: float) -> np.ndarray:
    """Mean over the visits of (s, a) of the sampler's goal distribution; unvisited rows uniform.

    Visit i of a segment with T steps: P(goal = s_{i+d}) proportional to gamma^(d-1), d = 1..T-i;
    U_i = e_{s_{i+1}} + gamma U_{i+1} is the unnormalised sum, Z_i = sum_{d=1}^{T-i} gamma^(d-1).
    """
    sums, visits = np.zeros((S * A, S)), np.zeros(S * A)
    eye = np.eye(S)
    for states, actions in segments:
        T = len(actions)
        U = np.zeros((T + 1, S))
        for i in range(T - 1, -1, -1):
            U[i] = eye[states[i + 1]] + gamma * U[i + 1]
        Z = U[:T].sum(1, keepdims=True)  # each future step carries its weight once: sum_d gamma^(d-1)
        x = states[:T] * A + actions
        np.add.at(sums, x, U[:T] / Z)
        visits += np.bincount(x, minlength=S * A)
    return np.where(visits[:, None] > 0, sums / np.maximum(visits, 1)[:, None], 1.0 / S)


# --------------------------------------------------------------------------------------------
# sweep, crossings, report


def run_sweep(args):
    """Ns; mean and max abs errors per method, each (seeds, len(Ns)); CPU seconds per method;
    the mean error of the uniform guess 1/S."""
    P, pi = random_mdp(args.states, args.actions, args.mdp_seed)
    S, A = args.states, args.actions
    M = occupancy(P, pi, args.gamma)
    Ns = np.array(args.sizes, dtype=np.int64)
    mean_err = {m: np.zeros((args.seeds, len(Ns))) for m in METHODS}
    max_err = {m: np.zeros((args.seeds, len(Ns))) for m in METHODS}
    seconds = dict.fromkeys(METHODS, 0.0)
    jobs = [(seed, j) for seed in range(args.seeds) for j in range(len(Ns))]
    for seed, j in tqdm(jobs, desc="seeds x dataset sizes", unit="fit", dynamic_ncols=True):
        torch.manual_seed(1000 * seed + j)
        segments = collect(P, pi, int(Ns[j]), args.segment, np.random.default_rng([seed, j]))
        data = Transitions(segments, pi, seed=1000 * seed + j)
        fits = {
            "td_infonce": lambda: fit_td_infonce(data, S, args.gamma, args.steps, args.batch, batch_form=False),
            "td_infonce_batch": lambda: fit_td_infonce(data, S, args.gamma, args.steps, args.batch,
                                                       batch_form=True),
            "mc_infonce": lambda: fit_mc_infonce(segments, S, A, args.gamma, args.steps, args.batch,
                                                 seed=1000 * seed + j),
            "sr": lambda: fit_sr(data, S, args.gamma, args.steps, args.batch),
            "certainty_equivalent": lambda: certainty_equivalent(data, pi, S, args.gamma),
            "mc_limit": lambda: mc_limit(segments, S, A, args.gamma),
        }
        for method, fit in fits.items():
            start = time.process_time()
            error = np.abs(fit() - M)
            seconds[method] += time.process_time() - start
            mean_err[method][seed, j], max_err[method][seed, j] = error.mean(), error.max()
    return Ns, mean_err, max_err, seconds, np.abs(1.0 / S - M).mean()


def crossing(Ns: np.ndarray, errors: np.ndarray, level: float) -> tuple[str, float]:
    """Where the curve first drops to `level`, linear in (log N, log error).

    ("at", N) for a crossing inside the grid, ("<=", N_min) if already there at the smallest N,
    (">", N_max) if never.
    """
    log_n, log_e, target = np.log(Ns), np.log(errors), np.log(level)
    if log_e[0] <= target:
        return "<=", float(Ns[0])
    for k in range(1, len(Ns)):
        if log_e[k] <= target:
            w = (log_e[k - 1] - target) / (log_e[k - 1] - log_e[k])
            return "at", float(np.exp(log_n[k - 1] + w * (log_n[k] - log_n[k - 1])))
    return ">", float(Ns[-1])


def fmt_n(c: tuple[str, float]) -> str:
    kind, n = c
    return f"{n:,.0f}" if kind == "at" else f"{'≤' if kind == '<=' else '>'} {n:,.0f}"


def ratio(c: tuple[str, float], ref: tuple[str, float]) -> str:
    """N / N_ref, with the direction of the bound when either end is censored."""
    (kind, n), (ref_kind, n_ref) = c, ref
    r = f"{n / n_ref:.1f}x"
    if kind == "at" and ref_kind == "at":
        return r
    upper = kind in ("at", "<=") and ref_kind in ("at", ">")   # n is at most, n_ref at least
    lower = kind in ("at", ">") and ref_kind in ("at", "<=")
    return f"≤ {r}" if upper else f"≥ {r}" if lower else "n/a"


def plot(Ns, mean_err, levels, uniform_err: float, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"td_infonce": dict(color="C0", linewidth=3, alpha=0.8), "td_infonce_batch": dict(color="C9", linestyle="-."),
              "mc_infonce": dict(color="C3"), "sr": dict(color="C2"),
              "certainty_equivalent": dict(color="0.35", linestyle="--"),
              "mc_limit": dict(color="C3", linestyle=":")}
    for method, label in METHODS.items():
        errs = mean_err[method]
        (line,) = ax.plot(Ns, errs.mean(0), marker="o", markersize=3, label=label, **styles[method])
        if len(errs) > 1 and method in LEARNED:
            ax.fill_between(Ns, errs.min(0), errs.max(0), color=line.get_color(), alpha=0.12, linewidth=0)
    for level in levels:
        ax.axhline(level, color="0.75", linewidth=0.8, linestyle=":")
    ax.axhline(uniform_err, color="k", linewidth=0.8, linestyle=(0, (1, 3)), label="uniform guess 1/S")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("transitions in the dataset (N)")
    ax.set_ylabel("mean |estimate - M| over (s, a, g)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def error_table(Ns, errors) -> list[str]:
    lines = ["| N | " + " | ".join(METHODS.values()) + " |", "|---:|" + "---:|" * len(METHODS)]
    for j, n in enumerate(Ns):
        lines.append(f"| {n:,} | " + " | ".join(f"{errors[m][:, j].mean():.4f}" for m in METHODS) + " |")
    return lines


def notes(args, Ns, mean_err, uniform_err: float) -> list[str]:
    """What the numbers say (computed, not assumed), and how this setting differs from the paper's."""
    mean = {m: mean_err[m].mean(0) for m in METHODS}
    gap_sr = np.expm1(np.abs(np.log(mean["sr"] / mean["td_infonce"])).max())
    big = Ns >= 1000
    limits = (mean["mc_limit"] / mean["certainty_equivalent"])[big]
    mc_over_limit = (mean["mc_infonce"] / mean["mc_limit"])[-1]
    below_uniform = Ns[mean["td_infonce"] < uniform_err]
    shrink = Ns[(mean["td_infonce"] < mean["certainty_equivalent"]) & (mean["sr"] < mean["certainty_equivalent"])]
    crossings = [(crossing(Ns, mean["mc_infonce"], lv), crossing(Ns, mean["td_infonce"], lv))
                 for lv in args.levels]
    mc_vs_td = [(mc, td) for mc, td in crossings if td[0] == "at"]
    lines = [
        "Reading:",
        "",
        "* SR vs TD-InfoNCE: on a fixed dataset with a' ~ pi both have the same fixed point, the "
        "certainty-equivalent M of the empirical model (TD-InfoNCE with every state as a candidate: "
        "softmax f = (1-gamma) P_hat + gamma P_hat pi softmax f_target). Here their errors differ by "
        f"at most {gap_sr:.0%} at any N"
        + (", so the measured SR / TD-InfoNCE ratio is ~1x, not the paper's ~20x. " if gap_sr < 0.25 else ". ")
        + "With enough updates a gap between them can only come from optimisation (step sizes, update "
        "budget, function approximation), not from the data.",
    ]
    if big.any():
        lines.append(
            f"* MC vs TD, exact limits: at the same N >= 1,000 the MC limit's error is "
            f"{limits.min():.1f}-{limits.max():.1f}x the certainty-equivalent's (the last ratio column "
            "gives the data ratio). Learned MC InfoNCE is also limited by its updates (each update "
            f"sees one sampled goal per transition): at N = {Ns[-1]:,} its error is {mc_over_limit:.1f}x "
            "its own limit, so its ratio to TD-InfoNCE grows with the precision asked.")
    if len(shrink):
        lines.append(
            f"* At N = {', '.join(f'{n:,}' for n in shrink)} TD-InfoNCE and the "
            "SR beat their exact limit: rows of (s, a) seen rarely or never stay near their uniform "
            "initial value, a shrinkage the exact solve lacks.")
    lines.append(
        "* Scale: this MDP mixes fast, so M is close to uniform; TD-InfoNCE beats the uniform guess "
        + (f"from N = {below_uniform.min():,} on." if len(below_uniform) else "at no N of the grid."))
    shape = ("holds here (MC InfoNCE needs more data than TD-InfoNCE at every level TD-InfoNCE reaches: "
             + ", ".join(ratio(mc, td) for mc, td in mc_vs_td) + ")"
             if mc_vs_td and all(mc[1] > td[1] for mc, td in mc_vs_td) else "does not hold in full here")
    lines.append(
        "* Setting vs the paper: we do not have the paper's tabular protocol (its MDP, data "
        "collection, update budget, learning rates); this is one random MDP with dense Dirichlet(1) "
        "transitions, long segments (little truncation bias), every method with the same update "
        "budget, tabular parameters (no function approximation). The MC-vs-TD part of the claim "
        f"{shape}; compare the sizes in the ratio table with the paper's ~20x (SR) and ~1500x (MC).")
    return lines


def report(args, Ns, mean_err, max_err, seconds, wall: float, uniform_err: float) -> str:
    lines = [
        f"Command: `{command_line()}`  ",
        machine_line() + f" torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"sweep {wall / 60:.1f} min wall.",
        "",
        f"Random MDP: {args.states} states, {args.actions} actions, P(.|s,a) ~ Dirichlet(1), fixed "
        f"policy pi(.|s) = 0.5 Dirichlet(1) + 0.5 uniform (MDP seed {args.mdp_seed}), gamma = "
        f"{args.gamma}. Target: the exact M = (1-gamma)(I - gamma P_pi)^-1 P. Data per (seed, N): "
        f"trajectory segments of pi of at most {args.segment} steps from its stationary distribution, "
        f"N transitions in all; every learned method sees the same data and makes {args.steps} "
        f"updates of batch {args.batch} (logits tables: Adam, lr 0.1 -> 0.001 geometric; TD-InfoNCE "
        "target table Polyak 0.1; SR: step 0.5 -> 0.005; TD methods draw a' ~ pi(.|s') each update). "
        f"{args.seeds} seeds (data and training), one MDP. The references are exact computations on "
        "the same data: the certainty-equivalent M of the empirical model (what TD-InfoNCE and the SR "
        "converge to with unlimited updates) and the MC limit (the average of the goal sampler's "
        "distribution over the visits, what MC InfoNCE converges to). Scale: the uniform guess "
        f"1/{args.states} has mean error {uniform_err:.4f}.",
        "",
        "Mean |estimate - M| over all (s, a, g), mean over seeds (min-max bands in the PNG):",
        "",
        *error_table(Ns, mean_err),
        "",
        "Max |estimate - M| over (s, a, g), mean over seeds:",
        "",
        *error_table(Ns, max_err),
        "",
        "Sample-efficiency ratios at a mean-error level: N where the seed-mean curve reaches it "
        "(log-log interpolation; ≤ / > when it is reached at the smallest N / not within the grid), "
        "over TD-InfoNCE's (all states). Paper (Zheng et al. 2023): SR / TD-InfoNCE ~20x, "
        "MC / TD-InfoNCE ~1500x.",
        "",
        "| mean error | N TD-InfoNCE | N TD-InfoNCE (batch) | N SR | N MC InfoNCE | N cert.-equiv. | "
        "N MC limit | SR / TD-InfoNCE | MC / TD-InfoNCE | MC limit / cert.-equiv. |",
        "|---:|" + "---:|" * 9,
    ]
    for level in args.levels:
        c = {m: crossing(Ns, mean_err[m].mean(0), level) for m in METHODS}
        lines.append(
            f"| {level:g} | " + " | ".join(fmt_n(c[m]) for m in
                                          ["td_infonce", "td_infonce_batch", "sr", "mc_infonce",
                                           "certainty_equivalent", "mc_limit"])
            + f" | {ratio(c['sr'], c['td_infonce'])} | {ratio(c['mc_infonce'], c['td_infonce'])}"
            f" | {ratio(c['mc_limit'], c['certainty_equivalent'])} |")
    lines += ["", *notes(args, Ns, mean_err, uniform_err)]
    cpu = ", ".join(f"{METHODS[m]} {seconds[m]:.0f} s" for m in METHODS)
    lines += ["", f"CPU time of the fits over the sweep: {cpu}.", "",
              f"![tabular occupancy](experiments/results/{PNG.name}) (`experiments/results/{PNG.name}`)"]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--states", type=int, default=20)
    p.add_argument("--actions", type=int, default=4)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--sizes", type=int, nargs="+",
                   default=[100, 300, 1000, 3000, 10_000, 30_000, 100_000, 300_000])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3000, help="minibatch updates per fit, every method")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--segment", type=int, default=1000, help="longest trajectory segment")
    p.add_argument("--levels", type=float, nargs="+", default=[0.003, 0.002, 0.0015, 0.001],
                   help="mean-error levels for the sample-efficiency ratios (below the uniform guess's)")
    p.add_argument("--mdp-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sweep for a fast check (no PNG unless --write)")
    p.add_argument("--write", action="store_true", help="write the PNG and the BENCHMARKS.md section")
    args = p.parse_args(argv)
    if args.quick and args.write:
        p.error("--quick is a check only: a full sweep writes BENCHMARKS.md")
    if args.quick:
        args.sizes, args.seeds, args.steps = [100, 1000, 10_000], 2, 500
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    Ns, mean_err, max_err, seconds, uniform_err = run_sweep(args)
    body = report(args, Ns, mean_err, max_err, seconds, time.perf_counter() - start, uniform_err)
    print(body)
    if args.write:
        plot(Ns, mean_err, args.levels, uniform_err, PNG, f"Estimating M on a random MDP ({args.states} states, "
             f"{args.actions} actions, gamma {args.gamma})")
        write_section(TITLE, body)
        print(f"wrote {PNG.relative_to(ROOT)} and the '{TITLE}' section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
