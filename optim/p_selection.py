"""SMuon's choice of p (Massena et al. 2026; arXiv:2605.19781), one layer at a time, as the
authors' code chooses it (github deel-ai-papers/schatten-muon @749ba8d, smuon/svs/: the
`p_method`s exact_momentum, exact_tightness, approx_tightness, approx_momentum; our names drop
the `exact_` of tightness).

Each criterion gets the layer's raw gradient G, its momentum buffer from before this step,
bias-corrected with this step's count (m_{t−1}/(1 − β^t), as `update_p_state` passes it), and
the input Gram AᵀA recorded in this step's forward (summed over tokens and ranks, not averaged).
It forms the matrix whose SVD it reads:
    M = lerp(lerp(m, G, 1−β), G, 1−β)   (the Nesterov look-ahead; approx_momentum: lerp(m, G, 1−β))
(`nesterov=False`, the other criteria: lerp(m, G, 1−β), as their experiments/mlp_exact_p.py
calls them.)
With M = Σ σ_i u_i v_iᵀ:  C_i = u_iᵀ G v_i,  B_i = v_iᵀ (AᵀA) v_i,  σ_A = sqrt(eig(AᵀA))
    exact_momentum:  J(p) = (Σ C_i σ_i^(1/p))² / (‖σ_A‖²_{ℓ_k} · (Σ σ_i^((p+1)/p))^(2/(p+1))),
                     k = 2(p+1)/(p−1)
    tightness:       J(p) = (Σ C_i σ_i^(1/p))² / Σ B_i σ_i^(2/p)
EMAs with `stat_ema` (the authors' sv_momentum) smooth what their code smooths: C and σ_A
(exact_momentum), C and B (tightness), B and the tail anchors (approx_tightness; its C is
fresh), σ_A, C, and the tails' energies (approx_momentum). σ_i itself is never smoothed.
p = argmax J on [p_min, p_max] by scipy's bounded Brent search (`minimize_scalar`), J evaluated
in fp32 as theirs (its overflow of ‖σ_A‖_{ℓ_k} at large k included: the method as run). The
statistics stay on the device; the few vectors J needs go to the host once per layer.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import minimize_scalar

SVD_OVERSAMPLE, SVD_NITER, FIT_POINTS, TAIL_CAP = 20, 4, 15, 500.0  # tightness_approx.py


def bounded_argmax(objective, lo: float, hi: float) -> float:
    """argmax of objective(p) on [lo, hi] by Brent's bounded search (scipy's defaults)."""
    return float(minimize_scalar(lambda p: -objective(p), bounds=(lo, hi), method="bounded").x)


def ema(state: dict, key: str, value: torch.Tensor, keep: float) -> torch.Tensor:
    """state[key] ← lerp(state[key], value, 1 − keep); a first value, or one of a new shape,
    is taken as is."""
    old = state.get(key)
    if old is None or old.shape != value.shape:
        state[key] = value.clone()
    else:
        old.lerp_(value.to(old.dtype), 1.0 - keep)
    return state[key]


def look_ahead(mom: torch.Tensor, grad: torch.Tensor, beta: float, nesterov: bool = True):
    m = mom.lerp(grad, 1.0 - beta)
    return m.lerp(grad, 1.0 - beta) if nesterov else m


def exact_momentum(st: dict, grad, mom, gram, beta: float, keep: float, lo: float, hi: float,
                   nesterov: bool = True, **_) -> float:
    u, s, vh = torch.linalg.svd(look_ahead(mom, grad, beta, nesterov).float(),
                                full_matrices=False)
    C = torch.einsum("mi,mn,ni->i", u, grad, vh.mT)
    s_a = torch.linalg.eigvalsh(gram).clamp(min=0.0).sqrt().flip(0)
    s_a, C = ema(st, "sel_sigma_a", s_a, keep), ema(st, "sel_C", C, keep)
    s, C, s_a = (t.float().cpu() for t in (s, C, s_a))

    def J(p):
        k = 2.0 * (p + 1.0) / (p - 1.0) if p > 1.0 else math.inf
        norm_a = s_a[0] if math.isinf(k) else (s_a**k).sum() ** (1.0 / k)
        p = min(p, 1e4)
        num = (C * s ** (1.0 / p)).sum() ** 2
        lp = (s ** ((p + 1.0) / p)).sum() ** (2.0 / (p + 1.0))
        return (num / (norm_a**2 * lp + 1e-12)).item()

    return bounded_argmax(J, lo, hi)


def tightness(st: dict, grad, mom, gram, beta: float, keep: float, lo: float, hi: float,
              nesterov: bool = True, **_) -> float:
    u, s, vh = torch.linalg.svd(look_ahead(mom, grad, beta, nesterov).float(),
                                full_matrices=False)
    C = torch.einsum("mi,mn,ni->i", u, grad, vh.mT)
    B = ((vh @ gram) * vh).sum(-1).clamp(min=0.0)
    C, B = ema(st, "sel_C", C, keep), ema(st, "sel_B", B, keep)
    s, C, B = (t.float().cpu() for t in (s, C, B))

    def J(p):
        p = min(max(p, 1.0 + 1e-9), 1e4)
        n, d = (C * s ** (1.0 / p)).sum(), (B * s ** (2.0 / p)).sum()
        return (n * n / (d + 1e-12)).item()

    return bounded_argmax(J, lo, hi)


def fit_power_law(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, α) of σ_i ≈ c·i^(−α), least squares in log-log on the last FIT_POINTS values
    (ranks within s, 1-based), α clamped to [0.05, 20], float64."""
    k = len(s)
    n = max(3, min(FIT_POINTS, k))
    log_r = torch.log(torch.arange(k - n + 1, k + 1, dtype=torch.float64, device=s.device))
    log_s = torch.log(s[-n:].double().clamp(min=1e-30))
    x, y = log_r - log_r.mean(), log_s - log_s.mean()
    alpha = (-(x @ y) / (x @ x + 1e-30)).clamp(min=0.05, max=20.0)
    return torch.exp(log_s.mean() + alpha * log_r.mean()), alpha


def tail_power_sum(c, alpha, k: int, min_dim: int, q: float) -> torch.Tensor:
    """Σ_{i=k+1}^{min_dim} (c·i^(−α))^q, summed directly."""
    if min_dim <= k:
        return c.new_zeros(())
    if abs(q) < 1e-7:
        return c.new_tensor(float(min_dim - k))
    ranks = torch.arange(k + 1, min_dim + 1, dtype=c.dtype, device=c.device)
    return c.pow(q) * ranks.pow(-alpha * q).sum()


def approx_tightness(st: dict, grad, mom, gram, beta: float, keep: float, lo: float, hi: float,
                     rank: float = 0.1, min_rank: int = 50, nesterov: bool = True) -> float:
    """tightness from the top k singular triplets (torch.svd_lowrank) and a power-law tail
    anchored to ⟨G, M⟩ and ‖M·AᵀA‖²_F (the authors' anchor: with a Gram for A, their
    ‖M·A‖² reads ‖M·AᵀA‖²)."""
    M = look_ahead(mom, grad, beta, nesterov).float()
    min_dim = min(M.shape)
    k = min(min_dim, max(min_rank, int(min_dim * rank)))
    u, s, v = torch.svd_lowrank(M, q=min(k + SVD_OVERSAMPLE, min_dim), niter=SVD_NITER)
    u, v, s = u[:, :k], v[:, :k], s[:k].double()
    C = torch.einsum("mi,mn,ni->i", u, grad, v).double()
    B = ((v.T @ gram) * v.T).sum(-1).double().clamp(min=0.0)
    tail_n = (grad.double() * M.double()).sum() - (C * s).sum()
    tail_d = ((M.double() @ gram.double()).pow(2).sum() - (B * s * s).sum()).clamp(min=0.0)
    c_pl, alpha = fit_power_law(s)
    B = ema(st, "sel_B", B, keep)
    tail_n, tail_d = ema(st, "sel_tail_n", tail_n, keep), ema(st, "sel_tail_d", tail_d, keep)
    s, C, B, tail_n, tail_d, c_pl, alpha = (t.cpu() for t in (s, C, B, tail_n, tail_d, c_pl,
                                                               alpha))
    has_tail = k < min_dim
    if has_tail:
        s1 = tail_power_sum(c_pl, alpha, k, min_dim, 1.0)
        s2 = tail_power_sum(c_pl, alpha, k, min_dim, 2.0)

    def parts(p):
        n, d = (C * s.pow(1.0 / p)).sum(), (B * s.pow(2.0 / p)).sum()
        if has_tail:
            grow_n = tail_power_sum(c_pl, alpha, k, min_dim, 1.0 / p) / (s1 + 1e-30)
            grow_d = tail_power_sum(c_pl, alpha, k, min_dim, 2.0 / p) / (s2 + 1e-30)
            n = n + tail_n * grow_n.clamp(max=TAIL_CAP)
            d = d + tail_d * grow_d.clamp(max=TAIL_CAP)
        return n, d

    n1, d1 = parts(1.0)
    scale = 1.0 / ((n1.pow(2) / (d1 + 1e-12)).abs().item() + 1e-30)

    def J(p):
        n, d = parts(p)
        return (n.pow(2) / (d + 1e-12)).item() * scale

    return bounded_argmax(J, lo, hi)


def approx_momentum(st: dict, grad, mom, gram, beta: float, keep: float, lo: float, hi: float,
                    rank: float = 0.1, **_) -> float:
    """exact_momentum from top-k SVDs (torch.svd_lowrank, q = k) of M = lerp(m, G, 1−β) (no
    look-ahead, as theirs) and of AᵀA, each tail modelled as flat at its mean energy."""
    M = look_ahead(mom, grad, beta, nesterov=False).float()
    k_m = max(1, int(min(M.shape) * rank))
    k_a = max(1, int(gram.shape[0] * rank))
    u, s, v = torch.svd_lowrank(M, q=k_m)
    _, lam, _ = torch.svd_lowrank(gram, q=k_a)
    s_a = torch.relu(lam).sqrt()
    d_a, d_m = gram.shape[0] - k_a, min(M.shape) - k_m
    frob_m = (M * M).sum()
    tail_m = (frob_m - (s * s).sum()).clamp(min=0.0)
    tail_a = (torch.trace(gram) - (s_a * s_a).sum()).clamp(min=0.0)
    C = torch.einsum("mi,mn,ni->i", u, grad, v)
    tail_gm = ((grad * M).sum() - (C * s).sum()).clamp(min=0.0)
    if st.get("sel_sigma_a") is not None and st["sel_sigma_a"].shape != s_a.shape:
        st.pop("sel_sigma_a")
        st.pop("sel_C")
    s_a, C = ema(st, "sel_sigma_a", s_a, keep), ema(st, "sel_C", C, keep)
    tail_a, tail_gm = ema(st, "sel_tail_a", tail_a, keep), ema(st, "sel_tail_gm", tail_gm, keep)
    s, C, s_a, tail_a, tail_gm, tail_m, frob_m = (
        t.float().cpu() for t in (s, C, s_a, tail_a, tail_gm, tail_m, frob_m))
    mean_a = torch.sqrt(tail_a / max(d_a, 1)) + 1e-12
    mean_m = torch.sqrt(tail_m / max(d_m, 1)) + 1e-12

    def J(p):
        k = 2.0 * (p + 1.0) / (p - 1.0) if p > 1.0 else math.inf
        power = (p + 1.0) / p
        p_safe = min(p, 1e4)
        if math.isinf(k):
            norm_a = s_a[0]
        elif k == 2.0:
            norm_a = torch.sqrt((s_a**2).sum() + tail_a)
        else:
            norm_a = ((s_a**k).sum() + (d_a * mean_a**k if d_a > 0 else 0.0)) ** (1.0 / k)
        if power == 2.0:
            sum_m = frob_m
        else:
            sum_m = (s**power).sum() + (d_m * mean_m**power if d_m > 0 else 0.0)
        tail_num = tail_gm * mean_m ** (1.0 / p_safe - 1.0) if d_m > 0 else 0.0
        num = ((C * s ** (1.0 / p_safe)).sum() + tail_num) ** 2
        return (num / (norm_a**2 * sum_m ** (2.0 / (p + 1.0)) + 1e-12)).item()

    return bounded_argmax(J, lo, hi)


CRITERIA = {"exact_momentum": exact_momentum, "tightness": tightness,
            "approx_tightness": approx_tightness, "approx_momentum": approx_momentum}
