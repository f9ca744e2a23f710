"""Muon, MuAdam and SoftMuon: orthogonalized-momentum optimizers for hidden matrices, with an
auxiliary AdamW for every other parameter (groups with `use_matrix=False`, see optim.routing).

Muon (Jordan et al. 2024): m ← lerp(m, g, 1−β);  u = lerp(g, m, β) if nesterov else m
                          θ ← θ·(1 − lr·λ) − lr·NS5(u)·sqrt(max(1, rows/cols))
                          `shape_scale: moonlight` replaces sqrt(max(1, rows/cols)) by
                          matched_rms·sqrt(max(rows, cols)) (Moonlight's rule, arXiv:2502.16982:
                          the update's RMS matches AdamW's, so one lr serves both; the Softsign
                          repo's softmuon/d_softmuon.py uses it with matched_rms 0.2)
MuonPE:                   the SMuon authors' Muon: bias-corrected Nesterov momentum and the
                          Polar Express schedule (the Muon row of the SMuon tables)
MuAdam (arXiv:2510.10777): v ← lerp(v, g², 1−β2); D = (v̂ + ε)^(−1/4); n = lerp(m̂, g, 1−β1)
                          θ ← θ·(1 − lr·λ) − lr·D ⊙ polar(D ⊙ n)
                          polar: by default the Polar Express schedule of the SMuon authors'
                          MuAdam (`orthogonalizer: polar_express`), or Muon's NS5
                          (`newton_schulz`); `rows_cols_scale: true` multiplies by Muon's
                          sqrt(max(1, rows/cols)), which the authors' MuAdam does not.
SoftMuon (arXiv:2605.31371): Muon for the first ⌊α_sign·T⌋ steps, then the spectral soft sign
                          (U·Uᵀ + τ_j⁻²·I)^(−1/2)·U, τ_j from the folded-Cauchy schedule fitted
                          to the singular values of the raw gradients of the group's matrices;
                          matmuls only by default (the polar factor of [U, τ_j⁻¹·I],
                          optim/spectral.py `soft_sign_fast`), the fp64 eigendecomposition with
                          `exact=True`.
Same-shape matrices are stacked and orthogonalized as one batch. Momentum is never written into
p.grad: later gradient logging sees the real gradient.
"""

from __future__ import annotations

import math

import torch

from optim._common import (
    Batch,
    check_beta,
    check_lr_wd,
    muon_scale,
    require,
)
from optim.matrix import MatrixOptimizer
from optim.spectral import (
    MUADAM_COEFFICIENTS,
    as_matrix,
    batched,
    newton_schulz5,
    ns_dtype_for,
    polar_express,
    singular_values,
    soft_sign_fast,
    soft_sign_matrix,
)
from optim.temperature import temperature_schedule


def _check_ns(ns_steps, ns_dtype):
    require(isinstance(ns_steps, int) and 1 <= ns_steps < 100, "ns_steps", ns_steps,
            "an integer in [1, 100)")
    require(ns_dtype in ("auto", "bf16", "fp32"), "ns_dtype", ns_dtype,
            "one of ['auto', 'bf16', 'fp32']")


SHAPE_SCALES = ("muon", "moonlight")


class Muon(MatrixOptimizer):
    shardable = True  # each matrix's update is computed whole (Batch.whole) under FSDP2

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, ns_dtype: str = "auto",
                 shape_scale: str = "muon", matched_rms: float = 0.2,
                 aux_lr=None, aux_betas=None, aux_eps=None, aux_weight_decay=None):
        check_lr_wd(lr, weight_decay)
        check_beta("momentum", momentum)
        _check_ns(ns_steps, ns_dtype)
        require(shape_scale in SHAPE_SCALES, "shape_scale", shape_scale,
                f"one of {list(SHAPE_SCALES)}")
        require(matched_rms > 0, "matched_rms", matched_rms, "> 0")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                    "weight_decay": weight_decay, "ns_steps": ns_steps, "ns_dtype": ns_dtype,
                    "shape_scale": shape_scale, "matched_rms": matched_rms}
        super().__init__(params, defaults, {"aux_lr": aux_lr, "aux_betas": aux_betas,
                                            "aux_eps": aux_eps,
                                            "aux_weight_decay": aux_weight_decay})

    def _momentum_direction(self, group, b: Batch) -> list[torch.Tensor]:
        beta = group["momentum"]
        m = b.buffers["momentum_buffer"]
        torch._foreach_lerp_(m, b.grads, 1.0 - beta)
        return torch._foreach_lerp(b.grads, m, beta) if group["nesterov"] else m

    def _orthogonalize(self, group, b: Batch, us: list[torch.Tensor]) -> list[torch.Tensor]:
        """polar(u)·shape scale of each u (of the batch's parameters), same shapes as one
        batch. Sharded parameters' u are gathered whole first, and each rank keeps its rows."""
        us = b.whole(us)
        dtype = ns_dtype_for(us[0].device, group["ns_dtype"])
        out = batched(lambda xs: self._polar(group, xs, dtype), [as_matrix(u) for u in us])
        return b.own([o.view_as(u).to(u.dtype) * self._shape_scale(group, u.shape)
                      for o, u in zip(out, us)])

    def _polar(self, group, xs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return newton_schulz5(xs, group["ns_steps"], dtype=dtype)

    def _shape_scale(self, group, shape) -> float:
        if group.get("shape_scale", "muon") == "moonlight":
            rows, cols = shape[0], math.prod(shape[1:])  # the flattened 2-D shape
            return group["matched_rms"] * max(rows, cols) ** 0.5
        return muon_scale(shape)

    def _matrix_step(self, group) -> None:
        b = Batch(self, group, buffers=("momentum_buffer",))
        if not len(b):
            return
        updates = self._orthogonalize(group, b, self._momentum_direction(group, b))
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_add_(b.params, updates, alpha=-group["lr"])
        b.commit()


class MuonPE(Muon):
    """The SMuon authors' Muon baseline (deel-ai-papers/schatten-muon,
    smuon/optimizers/baseline.py MuonWithAuxAdam), the Muon row of the SMuon tables:

        m ← lerp(m, g, 1−β);  n = lerp(m/(1−β^t), g, 1−β)        (bias-corrected Nesterov)
        θ ← θ·(1 − lr·λ) − lr·PE(n)·sqrt(max(1, rows/cols))

    PE: the Polar Express schedule MUADAM_COEFFICIENTS on n/(‖n‖_F + 1e-7), five quintics, no
    polish. Their defaults: lr 0.02, β 0.95; aux Adam lr 3e-4, betas (0.9, 0.95), eps 1e-10."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95,
                 weight_decay: float = 0.0, ns_dtype: str = "auto", aux_lr=None,
                 aux_betas=None, aux_eps=None, aux_weight_decay=None):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=True,
                         weight_decay=weight_decay, ns_steps=len(MUADAM_COEFFICIENTS),
                         ns_dtype=ns_dtype, aux_lr=aux_lr, aux_betas=aux_betas,
                         aux_eps=aux_eps, aux_weight_decay=aux_weight_decay)

    def _momentum_direction(self, group, b: Batch) -> list[torch.Tensor]:
        beta = group["momentum"]
        m = b.buffers["momentum_buffer"]
        torch._foreach_lerp_(m, b.grads, 1.0 - beta)
        return [(m_i / (1.0 - beta ** st["step"])).lerp_(g, 1.0 - beta)
                for m_i, g, st in zip(m, b.grads, b.states)]

    def _polar(self, group, xs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return polar_express(xs, MUADAM_COEFFICIENTS, dtype)


ORTHOGONALIZERS = ("polar_express", "newton_schulz")


class MuAdam(Muon):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, ns_steps: int = 5,
                 ns_dtype: str = "auto", orthogonalizer: str = "polar_express",
                 rows_cols_scale: bool = False, aux_lr=None, aux_betas=None, aux_eps=None,
                 aux_weight_decay=None):
        check_beta("beta2", beta2)
        require(eps > 0, "eps", eps, "> 0")
        require(orthogonalizer in ORTHOGONALIZERS, "orthogonalizer", orthogonalizer,
                f"one of {list(ORTHOGONALIZERS)}")
        require(orthogonalizer == "newton_schulz" or ns_steps == len(MUADAM_COEFFICIENTS),
                "ns_steps", ns_steps,
                f"{len(MUADAM_COEFFICIENTS)} with orthogonalizer polar_express (its schedule "
                "has that many steps)")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=True,
                         weight_decay=weight_decay, ns_steps=ns_steps, ns_dtype=ns_dtype,
                         aux_lr=aux_lr, aux_betas=aux_betas, aux_eps=aux_eps,
                         aux_weight_decay=aux_weight_decay)
        extra = {"beta2": beta2, "eps": eps, "orthogonalizer": orthogonalizer,
                 "rows_cols_scale": rows_cols_scale}
        for group in self.param_groups:
            for key, value in extra.items():
                group.setdefault(key, value)
        self.defaults.update(extra)

    def _polar(self, group, xs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if group["orthogonalizer"] == "newton_schulz":
            return super()._polar(group, xs, dtype)
        return polar_express(xs, MUADAM_COEFFICIENTS, dtype)

    def _shape_scale(self, group, shape) -> float:
        return muon_scale(shape) if group["rows_cols_scale"] else 1.0

    def _matrix_step(self, group) -> None:
        b = Batch(self, group, buffers=("exp_avg", "exp_avg_sq"))
        if not len(b):
            return
        beta1, beta2 = group["momentum"], group["beta2"]
        m, v = b.buffers["exp_avg"], b.buffers["exp_avg_sq"]
        torch._foreach_lerp_(m, b.grads, 1.0 - beta1)
        torch._foreach_lerp_(v, torch._foreach_mul(b.grads, b.grads), 1.0 - beta2)
        inputs, scales = [], []
        for st, g, m_i, v_i in zip(b.states, b.grads, m, v):
            t = st["step"]
            n = (m_i / (1.0 - beta1**t)).lerp_(g, 1.0 - beta1)  # bias-corrected Nesterov
            d = (v_i / (1.0 - beta2**t)).add_(group["eps"]).pow_(-0.25)
            inputs.append(d * n)
            scales.append(d)
        updates = [d * o for d, o in zip(scales, self._orthogonalize(group, b, inputs))]
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_add_(b.params, updates, alpha=-group["lr"])
        b.commit()


class SoftMuon(Muon):
    shardable = False  # its temperature pools the singular values of the local gradients

    def __init__(self, params, lr: float = 0.02, total_steps: int | None = None,
                 sign_fraction: float = 0.9, eps: float = 1e-4, tau_max: float = 1e9,
                 newton_steps: int = 10, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, ns_dtype: str = "auto",
                 exact: bool = False, shape_scale: str = "muon", matched_rms: float = 0.2,
                 aux_lr=None, aux_betas=None, aux_eps=None, aux_weight_decay=None):
        require(isinstance(total_steps, int) and total_steps > 0, "total_steps", total_steps,
                "a positive integer (set it from the run's steps)")
        require(0.0 <= sign_fraction <= 1.0, "sign_fraction", sign_fraction, "in [0, 1]")
        require(0.0 < eps < 1.0, "eps", eps, "in (0, 1)")
        require(tau_max >= 1.0, "tau_max", tau_max, ">= 1")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, ns_steps=ns_steps, ns_dtype=ns_dtype,
                         shape_scale=shape_scale, matched_rms=matched_rms,
                         aux_lr=aux_lr, aux_betas=aux_betas, aux_eps=aux_eps,
                         aux_weight_decay=aux_weight_decay)
        extra = {"total_steps": total_steps, "sign_fraction": sign_fraction, "eps": eps,
                 "tau_max": tau_max, "newton_steps": newton_steps, "step": 0,
                 "tau_schedule": None, "exact": exact}
        for group in self.param_groups:
            if group["use_matrix"]:
                for k, v in extra.items():
                    group.setdefault(k, v)
        self.defaults.update(extra)

    @staticmethod
    def switch_step(group) -> int:
        return int(group["sign_fraction"] * group["total_steps"])

    def _matrix_step(self, group) -> None:
        b = Batch(self, group, buffers=("momentum_buffer",))
        if not len(b):
            return
        k, switch = group["step"], self.switch_step(group)
        u = self._momentum_direction(group, b)
        if k < switch:
            updates = self._orthogonalize(group, b, u)
        else:
            if group["tau_schedule"] is None:
                eps = group["eps"]
                saturation = (1.0 - eps) / (1.0 - (1.0 - eps) ** 2) ** 0.5  # ≈ 70.7 at 1e-4
                pooled = torch.cat([singular_values(g) for g in b.grads])
                group["tau_schedule"] = temperature_schedule(
                    pooled, max(group["total_steps"] - switch, 1), saturation, group["tau_max"],
                    group["newton_steps"])
            sched = group["tau_schedule"]
            tau = sched[min(k - switch, len(sched) - 1)]
            updates = [y.view_as(x).to(x.dtype) * self._shape_scale(group, x.shape)
                       for x, y in zip(u, self._soft_sign(group, u, tau))]
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_add_(b.params, updates, alpha=-group["lr"])
        b.commit()
        group["step"] = k + 1

    @staticmethod
    def _soft_sign(group, us: list[torch.Tensor], tau: float) -> list[torch.Tensor]:
        matrices = [as_matrix(x).float() for x in us]
        if group["exact"]:
            return [soft_sign_matrix(x, tau) for x in matrices]
        dtype = ns_dtype_for(matrices[0].device, group["ns_dtype"])
        return batched(lambda xs: soft_sign_fast(xs, tau, dtype), matrices)
