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

    def _direction(self, group, b: Batch):
        beta1, beta2, beta3 = group["betas"]
        m, v, n = (b.buffers[k] for k in ("exp_avg", "exp_avg_diff", "exp_avg_sq"))
        prev = b.buffers["prev_grad"]
        for st, g, pg in zip(b.states, b.grads, prev):
            if st["step"] == 1:  # no previous gradient: the difference starts at 0
                pg.copy_(g)
        diff = prev  # g_k − g_{k−1}, computed in place of the previous gradient
        torch._foreach_sub_(diff, b.grads)
        torch._foreach_neg_(diff)
        torch._foreach_lerp_(m, b.grads, 1.0 - beta1)
        torch._foreach_lerp_(v, diff, 1.0 - beta2)
        corrected = b.copy_into(0, b.grads)
        torch._foreach_add_(corrected, diff, alpha=beta2)
        torch._foreach_mul_(corrected, corrected)
        torch._foreach_lerp_(n, corrected, 1.0 - beta3)
        torch._foreach_copy_(prev, b.grads)
        steps = [st["step"] for st in b.states]  # per tensor: a tensor may skip steps
        bc1, bc2, bc3 = ([1.0 - beta**k for k in steps] for beta in (beta1, beta2, beta3))
        update = b.copy_into(0, m)
        torch._foreach_div_(update, bc1)
        if len(set(bc2)) == 1:  # the usual case: every tensor at the same step
            torch._foreach_add_(update, v, alpha=beta2 / bc2[0])
        else:
            torch._foreach_add_(update, torch._foreach_div(v, bc2), alpha=beta2)
        denom = b.copy_into(1, n)
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, [math.sqrt(x) for x in bc3])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_div_(update, denom)
        return update

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
