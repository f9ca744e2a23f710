"""SMuon's choice of p (Massena et al. 2026; arXiv:2605.19781), for every layer of a shape at
once, on the device: the criteria as functions of a (layers, candidates) tensor of p, and a
maximizer that scans a grid and refines by golden-section search, vectorized across layers
(no scipy, no per-layer trip to the host).

With the direction N = Σ σ_i u_i v_iᵀ (its SVD), the raw gradient G and the layer's input Gram
A·Aᵀ:  C_i = u_iᵀ G v_i,  B_i = v_iᵀ (A·Aᵀ) v_i,  s_i = σ_i^(1/p)
    tightness:       J(p) = (Σ C_i s_i)² / Σ B_i s_i²
    exact_momentum:  J(p) = (Σ C_i s_i)² / (‖A‖²_{S_k} · ‖s‖²_{ℓ_{p+1}}),  k = 2(p+1)/(p−1)
The approximate variants (`approx_tightness`, `approx_momentum`) take only the top singular
triplets (torch.svd_lowrank) and model the rest: a power law σ_i ≈ c·i^(−α) fitted to the last
computed values extends the spectrum, and the tail's share of the sums is anchored to totals
computed exactly (⟨G, N⟩, ‖N·A‖²), its growth with p bounded by TAIL_CAP (the authors' code,
github deel-ai-papers/schatten-muon, smuon/svs/tightness_approx.py, caps it at 500).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
TAIL_CAP = 500.0
FIT_POINTS = 15  # trailing computed singular values the power-law tail is fitted to


@dataclass
class Spectrum:
    """Per layer (dim 0), float64: singular values σ (normalized to σ_max = 1), C, B, the input
    Gram's eigenvalues, and for an approximate spectrum the tail model."""

    sigma: torch.Tensor
    C: torch.Tensor
    B: torch.Tensor
    gram_eigs: torch.Tensor
    tail_ranks: torch.Tensor | None = None  # (r_tail,) ranks k+1..min_dim
    tail_scale: torch.Tensor | None = None  # (L, 1) c of the power law
    tail_alpha: torch.Tensor | None = None  # (L, 1)
    tail_N: torch.Tensor | None = None  # (L,) ⟨G, N⟩ − Σ_top C_i σ_i
    tail_D: torch.Tensor | None = None  # (L,) ‖N·A‖² − Σ_top B_i σ_i²


def _tail_power_sum(spec: Spectrum, q: torch.Tensor) -> torch.Tensor:
    """Σ over the uncomputed ranks of σ_i^q under the power law, for q of shape (L, P)."""
    log_sigma = torch.log(spec.tail_scale) - spec.tail_alpha * torch.log(spec.tail_ranks)
    return torch.exp(q.unsqueeze(-1) * log_sigma.unsqueeze(1)).sum(-1)


def _amplification(spec: Spectrum, q: torch.Tensor, q1: float) -> torch.Tensor:
    """How the tail's Σ σ^q grows from q1 to q, capped at TAIL_CAP."""
    base = _tail_power_sum(spec, torch.full_like(q[:, :1], q1))
    return (_tail_power_sum(spec, q) / base.clamp(min=1e-300)).clamp(max=TAIL_CAP)


def _numerator(spec: Spectrum, p: torch.Tensor) -> torch.Tensor:
    s = spec.sigma.unsqueeze(1) ** (1.0 / p).unsqueeze(-1)  # (L, P, r)
    n = (spec.C.unsqueeze(1) * s).sum(-1)
    if spec.tail_ranks is not None:
        n = n + spec.tail_N.unsqueeze(1) * _amplification(spec, 1.0 / p, 1.0)
    return n


def tightness(spec: Spectrum, p: torch.Tensor) -> torch.Tensor:
    """J(p) for p of shape (L, P)."""
    s2 = spec.sigma.unsqueeze(1) ** (2.0 / p).unsqueeze(-1)
    d = (spec.B.unsqueeze(1) * s2).sum(-1)
    if spec.tail_ranks is not None:
        d = d + spec.tail_D.unsqueeze(1) * _amplification(spec, 2.0 / p, 2.0)
    return _numerator(spec, p) ** 2 / d.clamp(min=1e-300)


def momentum(spec: Spectrum, p: torch.Tensor) -> torch.Tensor:
    """J(p) of the exact_momentum criterion for p of shape (L, P)."""
    k = 2.0 * (p + 1.0) / (p - 1.0).clamp(min=1e-12)
    a = spec.gram_eigs.clamp(min=0).sqrt()
    a = a / a.amax(-1, keepdim=True).clamp(min=1e-300)  # J's argmax is unchanged by scaling A
    schatten_k = (a.unsqueeze(1) ** k.unsqueeze(-1)).sum(-1) ** (1.0 / k)
    power = spec.sigma.unsqueeze(1) ** ((p + 1.0) / p).unsqueeze(-1)  # s^(p+1) = σ^((p+1)/p)
    lp_sum = power.sum(-1)
    if spec.tail_ranks is not None:
        lp_sum = lp_sum + _tail_power_sum(spec, (p + 1.0) / p)
    lp = lp_sum ** (1.0 / (p + 1.0))
    return _numerator(spec, p) ** 2 / (schatten_k**2 * lp**2).clamp(min=1e-300)


CRITERIA = {"tightness": tightness, "exact_momentum": momentum,
            "approx_tightness": tightness, "approx_momentum": momentum}


def maximize(objective, layers: int, lo: float, hi: float, grid: int = 48,
             iterations: int = 40, device=None) -> torch.Tensor:
    """argmax over [lo, hi] of objective(p) for each layer: the best of a grid (even in 1/p,
    where J varies most), then golden-section search in the bracket around it. objective maps
    p of shape (L, P) to J of shape (L, P); NaN counts as −∞."""

    def value(p):
        return torch.nan_to_num(objective(p), nan=-math.inf)

    candidates = 1.0 / torch.linspace(1.0 / hi, 1.0 / lo, grid, dtype=torch.float64,
                                      device=device)
    candidates = candidates.flip(0)  # increasing p
    best = value(candidates.expand(layers, grid)).argmax(-1)
    a = candidates[(best - 1).clamp(min=0)]
    b = candidates[(best + 1).clamp(max=grid - 1)]
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    jc, jd = value(c.unsqueeze(-1)).squeeze(-1), value(d.unsqueeze(-1)).squeeze(-1)
    for _ in range(iterations):  # the bracket shrinks by 0.618 a step
        left = jc >= jd  # the maximum lies in [a, d]
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        new = torch.where(left, b - GOLDEN * (b - a), a + GOLDEN * (b - a))
        j_new = value(new.unsqueeze(-1)).squeeze(-1)
        c, d, jc, jd = (torch.where(left, new, d), torch.where(left, c, new),
                        torch.where(left, j_new, jd), torch.where(left, jc, j_new))
    return (a + b) / 2


def fit_tail(sigma_top: torch.Tensor, min_dim: int) -> tuple:
    """(ranks, c, α) of the power law σ_i ≈ c·i^(−α) fitted (least squares in log-log) to the
    last FIT_POINTS computed singular values, for the ranks past them (α in [0.05, 20])."""
    k = sigma_top.shape[-1]
    n = max(3, min(FIT_POINTS, k))
    ranks = torch.arange(k - n + 1, k + 1, dtype=torch.float64, device=sigma_top.device)
    x = torch.log(ranks) - torch.log(ranks).mean()
    y = torch.log(sigma_top[..., -n:].clamp(min=1e-30))
    y_mean = y.mean(-1, keepdim=True)
    alpha = (-(y - y_mean) @ x / (x @ x)).clamp(0.05, 20.0).unsqueeze(-1)
    log_c = y_mean + alpha * torch.log(ranks).mean()
    tail = torch.arange(k + 1, min_dim + 1, dtype=torch.float64, device=sigma_top.device)
    return tail, torch.exp(log_c), alpha
