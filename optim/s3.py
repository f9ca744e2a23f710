"""S3 — SoftSignSGD (Peng et al. 2025; arXiv:2507.06464).

    m ← β·m + (1−β)·g
    r ← β2·r + (1−β2)·|g|^p                    β2 = β unless set (the ablation)
    nesterov:  n = β·m + (1−β)·g,  b = (β2·r + (1−β2)·|g|^p)^(1/p)
    otherwise: n = m,              b = r^(1/p)
    θ ← θ·(1 − lr·λ) − lr · n / (b + ε)

With β2 = β every coordinate of n/b lies in [−1, 1] (Hölder), so no coordinate moves by more
than lr per step; for any ε ≥ 0, including 0, where 0/0 (a coordinate that has only seen zero
gradients) is a zero step. No bias correction: the first step's small size is the method's own
warm-up. All math is fp32, also for bf16 parameters. `fused=True`: the same update as one
compiled pass per tensor (optim/_fused.py; the cube root of the default p = 3 by a third-order
iteration).
"""

from __future__ import annotations

import torch

from optim._common import Batch, ElementwiseOptimizer, check_beta, check_lr_wd, require
from optim._fused import Kernel, abs_pow, apply_update, root


def _abs_pow_into(outs, xs, p: float):
    """outs ← |xs|^p (one pass fewer than a copy and then in-place ops: each pass over
    memory counts on a CPU)."""
    for out, x in zip(outs, xs):
        torch.abs(x, out=out)
    if p == 2:
        torch._foreach_mul_(outs, outs)
    elif p != 1:
        torch._foreach_pow_(outs, p)
    return outs


def _root_(xs, p: float) -> None:
    """xs ← xs^(1/p) in place. For p other than 1, 2 and 4 as 2^(log2(x)/p): three vectorized
    passes, 2.5x faster than `pow` on a CPU (where S3's default p = 3 spent 57 ms of its 90 in
    it, on 14.2M parameters), within 3e-6 relative of the exact root over the whole float
    range and 1.5e-6 for values of 1e-10 to 1e10 (log2's rounding, scaled: the larger
    |log2 x|, the larger; tests/test_optim_math.py). The kernel's cube root is within 3e-7:
    the two paths agree to ~1e-6, as the fused-path tests hold them."""
    if p == 2:
        torch._foreach_sqrt_(xs)
    elif p == 4:
        torch._foreach_sqrt_(xs)
        torch._foreach_sqrt_(xs)
    elif p != 1:
        torch._foreach_log2_(xs)
        torch._foreach_mul_(xs, 1.0 / p)
        for x in xs:  # torch has no foreach exp2
            x.exp2_()


class S3(ElementwiseOptimizer):
    buffers = ("exp_avg", "exp_avg_p")

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.95, p: float = 3.0,
                 nesterov: bool = True, eps: float = 1e-8, weight_decay: float = 0.0,
                 beta2: float | None = None, fused: bool = False):
        check_lr_wd(lr, weight_decay)
        check_beta("beta", beta)
        if beta2 is not None:
            check_beta("beta2", beta2)
        require(p >= 1, "p", p, ">= 1")
        require(eps >= 0, "eps", eps, ">= 0")
        super().__init__(params, {"lr": lr, "beta": beta, "p": float(p), "nesterov": nesterov,
                                  "eps": eps, "weight_decay": weight_decay, "beta2": beta2,
                                  "fused": fused})

    def _direction(self, group, b: Batch):
        beta, p = group["beta"], group["p"]
        beta2 = beta if group["beta2"] is None else group["beta2"]
        m, r = b.buffers["exp_avg"], b.buffers["exp_avg_p"]
        g_p = _abs_pow_into(b.scratch(0), b.grads, p)
        torch._foreach_lerp_(m, b.grads, 1.0 - beta)
        torch._foreach_lerp_(r, g_p, 1.0 - beta2)
        if group["nesterov"]:
            numer = b.scratch(1)
            for out, mi, g in zip(numer, m, b.grads):
                torch.lerp(mi, g, 1.0 - beta, out=out)
            denom = g_p  # β2·r + (1−β2)·|g|^p, computed in place of |g|^p
            torch._foreach_lerp_(denom, r, beta2)
        else:
            numer = b.copy_into(1, m)
            denom = b.copy_into(0, r)
        _root_(denom, p)
        if group["eps"] == 0:  # b = 0 only where every gradient so far was 0, and so is n
            for d in denom:
                d.masked_fill_(d == 0, 1.0)
        else:
            torch._foreach_add_(denom, group["eps"])
        torch._foreach_div_(numer, denom)
        return numer

    def _kernel_step(self, group, b: Batch):
        beta = group["beta"]
        self.run_kernel(_s3_kernel, group, b, self.buffers, beta=beta,
                        beta2=beta if group["beta2"] is None else group["beta2"], p=group["p"],
                        nesterov=group["nesterov"], eps=group["eps"])


@Kernel
def _s3_kernel(param, grad, m, r, lr, *, beta, beta2, p, nesterov, eps, weight_decay):
    """One tensor's S3 step (the foreach `_direction` above, fused)."""
    g_p = abs_pow(grad, p)
    m.lerp_(grad, 1.0 - beta)
    r.lerp_(g_p, 1.0 - beta2)
    if nesterov:
        numer, base = m.lerp(grad, 1.0 - beta), g_p.lerp(r, beta2)
    else:
        numer, base = m, r
    denom = root(base, p)
    # with ε = 0, b = 0 only where every gradient so far was 0, and so is n: a zero step
    denom = torch.where(denom == 0, 1.0, denom) if eps == 0 else denom + eps
    apply_update(param, numer / denom, lr, weight_decay)
