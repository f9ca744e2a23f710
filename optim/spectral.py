"""Matrix functions of the Muon family, on 2-D views of parameters (conv kernels flattened to
(out, in·kh·kw)).

- `newton_schulz5`: Muon's quintic iteration, an approximate polar factor (singular values land
  in roughly [0.5, 1.5]); cheap, matmul-only.
- `spectral_map`: an exact map of the singular values, U f(Σ) Vᵀ, through the eigendecomposition
  of the smaller Gram matrix X·Xᵀ computed in float64 (squaring the condition number costs
  nothing in fp64 at these sizes). Used for SoftMuon's soft sign and SMuon's Σ^(1/p); tests check
  it against torch.linalg.svd.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def ns_dtype_for(device: torch.device, ns_dtype: str) -> torch.dtype:
    """bf16 on accelerators (as Muon is specified); on CPU 'auto' picks fp32, because CPU bf16
    matmuls are ~30x slower than fp32 there and save no memory traffic worth having."""
    if ns_dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[ns_dtype]


def newton_schulz5(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate U·Vᵀ of a 2-D g = U·Σ·Vᵀ (Keller Jordan's coefficients)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype=dtype, copy=True)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if transposed else x


def _gram_eig(x: torch.Tensor):
    """(eigenvalues ≥ 0, eigenvectors, wide x, transposed?) of the smaller Gram of 2-D x."""
    transposed = x.size(0) > x.size(1)
    wide = (x.T if transposed else x).double()
    evals, evecs = torch.linalg.eigh(wide @ wide.T)
    return evals.clamp_(min=0.0), evecs, wide, transposed


def spectral_map(x: torch.Tensor, coefficient) -> torch.Tensor:
    """U·f(Σ)·Vᵀ for 2-D x = U·Σ·Vᵀ, given coefficient(λ) = f(σ)/σ as a function of λ = σ².

    Writing U f(Σ) Vᵀ = V_g·diag(f(σ)/σ)·V_gᵀ·x avoids any SVD and any division by σ where
    f(σ)/σ stays finite as σ → 0.
    """
    evals, evecs, wide, transposed = _gram_eig(x)
    out = (evecs * coefficient(evals)) @ (evecs.T @ wide)
    out = out.T if transposed else out
    return out.to(x.dtype)


def soft_sign_matrix(x: torch.Tensor, tau: float) -> torch.Tensor:
    """(X·Xᵀ + τ⁻²·I)^(−1/2)·X: σ ↦ τσ / sqrt(1 + τ²σ²), SoftMuon's spectral soft sign."""
    return spectral_map(x, lambda lam: torch.rsqrt(lam + 1.0 / (tau * tau)))


def schatten_power(x: torch.Tensor, p: float) -> torch.Tensor:
    """U·Σ^(1/p)·Vᵀ, p ∈ [1, ∞] (p = ∞ is the exact polar factor U·Vᵀ).

    Directions with σ below 1e-7·σ_max (numerically zero) are dropped rather than amplified.
    """
    exponent = (1.0 / p - 1.0) / 2.0 if math.isfinite(p) else -0.5

    def coefficient(lam):
        floor = lam.max() * 1e-14
        return torch.where(lam > floor, lam.clamp(min=floor).pow(exponent), 0.0)

    return spectral_map(x, coefficient)


def singular_values(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(as_matrix(x).float())
