"""Adan (Xie et al. 2022), S3's baseline; not in torch. Decoupled weight decay as in the
paper's no-proximal variant.

    d = g_k − g_{k−1}  (0 at the first step)
    m ← β1·m + (1−β1)·g
    v ← β2·v + (1−β2)·d
    n ← β3·n + (1−β3)·(g + β2·d)²
    θ ← θ·(1 − lr·λ) − lr · (m/(1−β1^k) + β2·v/(1−β2^k)) / (sqrt(n/(1−β3^k)) + ε)

`fused=True`: the same update as one compiled pass per tensor (optim/_fused.py).
"""

from __future__ import annotations

import math

import torch

from optim._common import (
    Batch,
    ElementwiseOptimizer,
    check_beta,
    check_lr_wd,
    per_step_scalars,
    require,
)
from optim._fused import Kernel, apply_update


class Adan(ElementwiseOptimizer):
    buffers = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad")

    def __init__(self, params, lr: float = 1e-3, betas=(0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, fused: bool = False):
        check_lr_wd(lr, weight_decay)
        require(len(betas) == 3, "betas", betas, "three values (β1, β2, β3)")
        for i, beta in enumerate(betas):
            check_beta(f"betas[{i}]", beta)
        require(eps >= 0, "eps", eps, ">= 0")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "fused": fused})

    def _foreach_update(self, group, b: Batch):
        """The kernel's update in 13 passes over memory instead of 20 (each pass counts on a
        CPU): the difference kept negated, the corrected gradient made in one pass, √(1−β3^k)
        folded into the moments' scalars and ε, and the division joined to the update
        (addcdiv). The same math; it agrees with the kernel to fp32 rounding (tests)."""
        beta1, beta2, beta3 = group["betas"]
        m, v, n = (b.buffers[k] for k in ("exp_avg", "exp_avg_diff", "exp_avg_sq"))
        prev = b.buffers["prev_grad"]
        for st, g, pg in zip(b.states, b.grads, prev):
            if st["step"] == 1:  # no previous gradient: the difference starts at 0
                pg.copy_(g)
        back = prev  # g_{k−1} − g_k = −diff, computed in place of the previous gradient
        torch._foreach_sub_(back, b.grads)
        torch._foreach_lerp_(m, b.grads, 1.0 - beta1)
        torch._foreach_mul_(v, beta2)  # v ← β2·v + (1−β2)·diff
        torch._foreach_add_(v, back, alpha=-(1.0 - beta2))
        corrected = b.scratch(0)  # g + β2·diff
        for out, g, d in zip(corrected, b.grads, back):
            torch.add(g, d, alpha=-beta2, out=out)
        torch._foreach_mul_(n, beta3)
        torch._foreach_addcmul_(n, corrected, corrected, value=1.0 - beta3)
        torch._foreach_copy_(prev, b.grads)
        steps = [st["step"] for st in b.states]  # per tensor: a tensor may skip steps
        root3 = [math.sqrt(1.0 - beta3**k) for k in steps]
        # (m/bc1 + β2·v/bc2) / (√n/√bc3 + ε) = (m·√bc3/bc1 + v·β2·√bc3/bc2) / (√n + ε·√bc3)
        update = b.scratch(0)
        for out, mi, vi, k, r in zip(update, m, v, steps, root3):
            torch.mul(mi, r / (1.0 - beta1**k), out=out)
            out.add_(vi, alpha=beta2 * r / (1.0 - beta2**k))
        denom = b.scratch(1)
        for out, ni, r in zip(denom, n, root3):
            torch.sqrt(ni, out=out).add_(group["eps"] * r)
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_addcdiv_(b.params, update, denom, value=-group["lr"])

    def _kernel_step(self, group, b: Batch):
        beta1, beta2, beta3 = group["betas"]

        def scalars(k):  # reciprocals, so the kernel multiplies (a division costs ~4 products)
            return [1.0 / (1.0 - beta1**k), beta2 / (1.0 - beta2**k),
                    1.0 / math.sqrt(1.0 - beta3**k), float(k == 1)]

        self.run_kernel(_adan_kernel, group, b, self.buffers,
                        per_tensor=per_step_scalars(b, scalars), betas=group["betas"],
                        eps=group["eps"])


@Kernel
def _adan_kernel(param, grad, m, v, n, prev, lr, inv_bc1, beta2_over_bc2, inv_sqrt_bc3, first,
                 *, betas, eps, weight_decay):
    beta1, beta2, beta3 = betas
    diff = torch.where(first > 0, 0.0, grad - prev)  # 0 at the first step
    m.lerp_(grad, 1.0 - beta1)
    v.lerp_(diff, 1.0 - beta2)
    corrected = grad + beta2 * diff
    n.lerp_(corrected * corrected, 1.0 - beta3)
    prev.copy_(grad)
    update = m * inv_bc1 + v * beta2_over_bc2
    apply_update(param, update / (n.sqrt() * inv_sqrt_bc3 + eps), lr, weight_decay)
