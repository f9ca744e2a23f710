"""SoftSignum and HardSwitchSign (Feoktistov et al., ICML 2026; arXiv:2605.31371).

Momentum, torch-SGD style: buf ← g at the first step, then buf ← β·buf + (1 − dampening)·g;
u = g + β·buf with nesterov, else buf.

    first S = ⌊α_sign·T⌋ steps:  θ ← θ·(1 − lr·λ) − lr·sign(u)               (Signum)
    then, soft step j = 0, 1, …:  θ ← θ·(1 − lr·λ) − lr·tanh(τ_j·u)           (SoftSignum)
                                  θ ← θ·(1 − lr·λ) − lr·u                     (HardSwitchSign)

The temperatures τ_j are computed once, at the first soft step, for each param group: the
pooled momentum entries are modelled as a folded Cauchy(μ = median, s = MAD), q_j is its
ρ_j = j/N quantile, and τ_j = atanh(1 − ε)/q_j clamped to [1, τ_max] — so a share ρ_j of the
coordinates is magnitude-sensitive at soft step j and the rest saturated. Past step T the last τ
is kept. T (`total_steps`) comes from the run config (conf/optim/*.yaml: `${steps}`).
The schedule lives in the param group, so it round-trips through state_dict.
`fused=True`: each step as one compiled pass per tensor (optim/_fused.py), except SoftSignum's
first soft step, where the schedule is fitted to the pooled momentum by the foreach path.
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
from optim._fused import apply_update, scalar
from optim.temperature import temperature_schedule


class _SwitchedSign(ElementwiseOptimizer):
    """Signum for the first ⌊sign_fraction·total_steps⌋ steps, then `_after_switch`."""

    buffers = ("momentum_buffer",)
    after_switch = ""  # what the fused kernel does after the switch: "soft" or "momentum"

    def __init__(self, params, lr, total_steps, sign_fraction, momentum, nesterov, dampening,
                 weight_decay, fused=False, **extra):
        check_lr_wd(lr, weight_decay)
        require(isinstance(total_steps, int) and total_steps > 0, "total_steps", total_steps,
                "a positive integer (set it from the run's steps)")
        require(0.0 <= sign_fraction <= 1.0, "sign_fraction", sign_fraction, "in [0, 1]")
        check_beta("momentum", momentum)
        require(0.0 <= dampening < 1.0, "dampening", dampening, "in [0, 1)")
        require(not (nesterov and (momentum == 0 or dampening != 0)), "nesterov", nesterov,
                "used with momentum > 0 and dampening = 0")
        defaults = {"lr": lr, "total_steps": total_steps, "sign_fraction": sign_fraction,
                    "momentum": momentum, "nesterov": nesterov, "dampening": dampening,
                    "weight_decay": weight_decay, "step": 0, "fused": fused, **extra}
        super().__init__(params, defaults)

    @staticmethod
    def switch_step(group) -> int:
        return int(group["sign_fraction"] * group["total_steps"])

    def _direction_buffers(self, group, b: Batch) -> list[torch.Tensor]:
        beta, damp = group["momentum"], group["dampening"]
        bufs = b.buffers["momentum_buffer"]
        for st, buf, g in zip(b.states, bufs, b.grads):
            if st["step"] == 1:
                buf.copy_(g)
            else:
                buf.mul_(beta).add_(g, alpha=1.0 - damp)
        u = b.copy_into(0, bufs)  # the direction; later turned into the step in place
        if group["nesterov"]:
            torch._foreach_mul_(u, beta)
            torch._foreach_add_(u, b.grads)
        return u

    def _after_switch(self, group, u: list[torch.Tensor], soft_step: int):
        """The step direction after the switch; may overwrite `u` (a scratch copy)."""
        raise NotImplementedError

    def _direction(self, group, b: Batch):
        u = self._direction_buffers(group, b)
        k, switch = group["step"], self.switch_step(group)
        group["step"] = k + 1
        if k < switch:
            torch._foreach_sign_(u)
            return u
        return self._after_switch(group, u, k - switch)

    def _temperature(self, group, soft_step: int) -> float | None:
        """τ of this soft step; None where it is not known yet (SoftSignum before its fit)."""
        return 1.0

    def _fused(self, group, b: Batch):
        k, switch = group["step"], self.switch_step(group)
        tau = self._temperature(group, k - switch) if k >= switch else 1.0
        if tau is None:  # the schedule's fit needs the pooled momentum: foreach, once
            self._foreach_update(group, b)
            return
        group["step"] = k + 1
        self.run_kernel(_switched_kernel, group, b, self.buffers, [scalar(tau, b.params[0])],
                        per_step_scalars(b, lambda s: [float(s == 1)]),
                        phase="sign" if k < switch else self.after_switch,
                        momentum=group["momentum"], dampening=group["dampening"],
                        nesterov=group["nesterov"])


def _switched_kernel(param, grad, buf, lr, tau, first, *, phase, momentum, dampening, nesterov,
                     weight_decay):
    new = torch.where(first > 0, grad, buf * momentum + grad * (1.0 - dampening))
    buf.copy_(new)
    u = new * momentum + grad if nesterov else new
    if phase == "sign":
        direction = u.sign()
    elif phase == "soft":
        direction = (u * tau).tanh()
    else:
        direction = u
    apply_update(param, direction, lr, weight_decay)


class SoftSignum(_SwitchedSign):
    after_switch = "soft"

    def __init__(self, params, lr: float = 1e-3, total_steps: int | None = None,
                 sign_fraction: float = 0.9, eps: float = 1e-4, tau_max: float = 1e9,
                 newton_steps: int = 10, momentum: float = 0.9, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0, fused: bool = False):
        require(0.0 < eps < 1.0, "eps", eps, "in (0, 1)")
        require(tau_max >= 1.0, "tau_max", tau_max, ">= 1")
        require(isinstance(newton_steps, int) and newton_steps >= 1, "newton_steps",
                newton_steps, "a positive integer")
        super().__init__(params, lr, total_steps, sign_fraction, momentum, nesterov, dampening,
                         weight_decay, fused, eps=eps, tau_max=tau_max,
                         newton_steps=newton_steps, tau_schedule=None)

    def _after_switch(self, group, u, soft_step):
        if group["tau_schedule"] is None:
            n = max(group["total_steps"] - self.switch_step(group), 1)
            pooled = torch.cat([x.flatten() for x in u])
            group["tau_schedule"] = temperature_schedule(
                pooled, n, math.atanh(1.0 - group["eps"]), group["tau_max"],
                group["newton_steps"])
        tau = self._temperature(group, soft_step)
        torch._foreach_mul_(u, tau)
        torch._foreach_tanh_(u)
        return u

    def _temperature(self, group, soft_step):
        schedule = group["tau_schedule"]
        return None if schedule is None else schedule[min(soft_step, len(schedule) - 1)]

    def log_values(self) -> dict[str, float]:
        """τ per group once the soft phase has begun, as `tau/group<i>` (optim.hooks)."""
        return {f"tau/group{i}": t for i, t in enumerate(self.current_temperature())
                if t is not None}

    def current_temperature(self) -> list[float | None]:
        """τ about to be used by each group (None while still in the sign phase)."""
        out = []
        for group in self.param_groups:
            j = group["step"] - self.switch_step(group)
            sched = group["tau_schedule"]
            out.append(sched[min(j, len(sched) - 1)] if sched is not None and j >= 0 else None)
        return out


class HardSwitchSign(_SwitchedSign):
    """Signum until the switch, then plain momentum SGD on the same momentum."""

    after_switch = "momentum"

    def __init__(self, params, lr: float = 1e-3, total_steps: int | None = None,
                 sign_fraction: float = 0.9, momentum: float = 0.9, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0, fused: bool = False):
        super().__init__(params, lr, total_steps, sign_fraction, momentum, nesterov, dampening,
                         weight_decay, fused)

    def _after_switch(self, group, u, soft_step):
        return u
