"""The Softsign temperature schedule (Feoktistov et al., ICML 2026; arXiv:2605.31371), shared
by SoftSignum and SoftMuon: the entries of a momentum (or the singular values of the gradients)
are modelled as a folded Cauchy distribution, and τ_j makes the j/N-quantile coordinate just
saturate at soft step j.
"""

from __future__ import annotations

import math

import torch


def folded_cauchy_quantiles(values: torch.Tensor, n: int, newton_steps: int = 10) -> torch.Tensor:
    """q_j with P(|X| ≤ q_j) = j/n, j = 0..n−1, for X ~ Cauchy(median(values), MAD(values)).

    Newton's method on F(q) = C((q−μ)/s) − C((−q−μ)/s), C(x) = 1/2 + atan(x)/π, from
    q = s·tan(πρ/2) + |μ|, clamped at ≥ 0. Computed in float64 on the CPU (n numbers).
    """
    values = values.detach().flatten()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    mu = values.median().double().cpu()
    s = (values - mu.to(values)).abs().median().double().cpu().clamp(min=1e-30)
    rho = torch.arange(n, dtype=torch.float64) / n
    q = s * torch.tan(math.pi * rho / 2) + mu.abs()
    for _ in range(newton_steps):
        hi, lo = (q - mu) / s, (-q - mu) / s
        f = (torch.atan(hi) - torch.atan(lo)) / math.pi - rho
        df = (1.0 / (1.0 + hi * hi) + 1.0 / (1.0 + lo * lo)) / (math.pi * s)
        q = (q - f / df).clamp(min=0.0)
    return q


def temperature_schedule(values: torch.Tensor, n: int, saturation: float, tau_max: float,
                         newton_steps: int = 10) -> list[float]:
    """τ_j = saturation / q_j clamped to [1, τ_max]: |values| above q_j saturate at step j."""
    q = folded_cauchy_quantiles(values, n, newton_steps)
    tau = torch.where(q > 0, saturation / q.clamp(min=1e-300), torch.tensor(math.inf))
    return tau.clamp(min=1.0, max=tau_max).tolist()
