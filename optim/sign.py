"""Sign-family baselines: SignSGD and Signum (Bernstein et al. 2018, arXiv:1802.04434), Lion
(Chen et al. 2023, arXiv:2302.06675).
`fused=True`: each update as one compiled pass per tensor (optim/_fused.py)."""

from __future__ import annotations

import torch

from optim._common import Batch, ElementwiseOptimizer, check_beta, check_lr_wd
from optim._fused import Kernel, apply_update


class SignSGD(ElementwiseOptimizer):
    """θ ← θ·(1 − lr·λ) − lr·sign(g)."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0,
                 fused: bool = False):
        check_lr_wd(lr, weight_decay)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "fused": fused})

    def _direction(self, group, b: Batch):
        direction = b.copy_into(0, b.grads)
        torch._foreach_sign_(direction)
        return direction

    def _kernel_step(self, group, b: Batch):
        self.run_kernel(_signsgd_kernel, group, b, ())


@Kernel
def _signsgd_kernel(param, grad, lr, *, weight_decay):
    apply_update(param, grad.sign(), lr, weight_decay)


class Signum(ElementwiseOptimizer):
    """m ← β·m + (1−β)·g;  θ ← θ·(1 − lr·λ) − lr·sign(m).  β = 0 is SignSGD."""

    buffers = ("exp_avg",)

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9, weight_decay: float = 0.0,
                 fused: bool = False):
        check_lr_wd(lr, weight_decay)
        check_beta("beta", beta)
        super().__init__(params, {"lr": lr, "beta": beta, "weight_decay": weight_decay,
                                  "fused": fused})

    def _direction(self, group, b: Batch):
        m = b.buffers["exp_avg"]
        torch._foreach_lerp_(m, b.grads, 1.0 - group["beta"])
        direction = b.copy_into(0, m)
        torch._foreach_sign_(direction)
        return direction

    def _kernel_step(self, group, b: Batch):
        self.run_kernel(_signum_kernel, group, b, self.buffers, beta=group["beta"])


@Kernel
def _signum_kernel(param, grad, m, lr, *, beta, weight_decay):
    m.lerp_(grad, 1.0 - beta)
    apply_update(param, m.sign(), lr, weight_decay)


class Lion(ElementwiseOptimizer):
    """c = β1·m + (1−β1)·g;  θ ← θ·(1 − lr·λ) − lr·sign(c);  m ← β2·m + (1−β2)·g."""

    buffers = ("exp_avg",)

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0,
                 fused: bool = False):
        check_lr_wd(lr, weight_decay)
        check_beta("betas[0]", betas[0])
        check_beta("betas[1]", betas[1])
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay,
                                  "fused": fused})

    def _direction(self, group, b: Batch):
        beta1, beta2 = group["betas"]
        m = b.buffers["exp_avg"]
        c = b.copy_into(0, m)
        torch._foreach_lerp_(c, b.grads, 1.0 - beta1)
        torch._foreach_sign_(c)
        torch._foreach_lerp_(m, b.grads, 1.0 - beta2)  # after c: the update uses the old m
        return c

    def _kernel_step(self, group, b: Batch):
        beta1, beta2 = group["betas"]
        self.run_kernel(_lion_kernel, group, b, self.buffers, beta1=beta1, beta2=beta2)


@Kernel
def _lion_kernel(param, grad, m, lr, *, beta1, beta2, weight_decay):
    direction = m.lerp(grad, 1.0 - beta1).sign()
    m.lerp_(grad, 1.0 - beta2)
    apply_update(param, direction, lr, weight_decay)
