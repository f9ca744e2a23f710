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
is kept. τ_max defaults to 20, the official SoftSignum class's `tmax` (github
brain-lab-research/softsign); the schedule as the paper's text describes it, unclamped, is
`tau_max=1e9` (the official SoftMuon's and schedule helper's value). With 20 and momenta of
~1e-3, τ is clamped from the first soft step: |τ·u| ≪ 1 for most coordinates, so the soft phase
is momentum SGD at lr·τ; with 1e9 the unsaturated share follows ρ_j and the update stays
sign-like until the last steps (tests/test_optim_math.py measures both). T (`total_steps`)
comes from the run config (conf/optim/*.yaml: `${steps}`).
The schedule lives in the param group, so it round-trips through state_dict.
Each step is one kernel per tensor (`_switched_kernel`; compiled with `fused=True`, see
optim/_fused.py); `fused=False` runs the same math as foreach ops, 3-7x faster than the eager
kernel on CPU (results/bench/elementwise_paths_cpu.md).
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
from optim.temperature import temperature_schedule


class _SwitchedSign(ElementwiseOptimizer):
    """Signum for the first ⌊sign_fraction·total_steps⌋ steps, then the `after_switch` phase."""

    shardable = False  # τ is calibrated on statistics pooled over every whole tensor

    buffers = ("momentum_buffer",)
    after_switch = ""  # the phase after the switch: "soft" or "momentum"

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

    def _advance(self, group, b: Batch) -> tuple[str, float]:
        """This step's phase ("sign" or `after_switch`) and temperature; counts the step."""
        k, switch = group["step"], self.switch_step(group)
        group["step"] = k + 1
        if k < switch:
            return "sign", 1.0
        return self.after_switch, self._temperature(group, b, k - switch)

    def _temperature(self, group, b: Batch, soft_step: int) -> float:
        """τ of this soft step (before the kernel has updated any state)."""
        return 1.0

    def _direction(self, group, b: Batch):
        phase, tau = self._advance(group, b)
        beta, damp = group["momentum"], group["dampening"]
        bufs = b.buffers["momentum_buffer"]
        for st, buf, g in zip(b.states, bufs, b.grads):
            if st["step"] == 1:
                buf.copy_(g)
            else:
                buf.mul_(beta).add_(g, alpha=1.0 - damp)
        u = b.copy_into(0, bufs)  # the direction; turned into the step in place
        if group["nesterov"]:
            torch._foreach_mul_(u, beta)
            torch._foreach_add_(u, b.grads)
        if phase == "sign":
            torch._foreach_sign_(u)
        elif phase == "soft":
            torch._foreach_mul_(u, tau)
            torch._foreach_tanh_(u)
        return u

    def _kernel_step(self, group, b: Batch):
        phase, tau = self._advance(group, b)
        self.run_kernel(_switched_kernel, group, b, self.buffers, [b.scalar("tau", tau)],
                        per_step_scalars(b, lambda s: [float(s == 1)]), phase=phase,
                        momentum=group["momentum"], dampening=group["dampening"],
                        nesterov=group["nesterov"])


def momentum_direction(buf, grad, first, *, momentum, dampening, nesterov):
    """The new momentum buffer and the direction u of one tensor (its buffer is not written)."""
    new = torch.where(first > 0, grad, buf * momentum + grad * (1.0 - dampening))
    return new, (new * momentum + grad if nesterov else new)


@Kernel
def _switched_kernel(param, grad, buf, lr, tau, first, *, phase, momentum, dampening, nesterov,
                     weight_decay):
    new, u = momentum_direction(buf, grad, first, momentum=momentum, dampening=dampening,
                                nesterov=nesterov)
    buf.copy_(new)
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
                 sign_fraction: float = 0.9, eps: float = 1e-4, tau_max: float = 20.0,
                 newton_steps: int = 10, momentum: float = 0.9, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0, fused: bool = False):
        require(0.0 < eps < 1.0, "eps", eps, "in (0, 1)")
        require(tau_max >= 1.0, "tau_max", tau_max, ">= 1")
        require(isinstance(newton_steps, int) and newton_steps >= 1, "newton_steps",
                newton_steps, "a positive integer")
        super().__init__(params, lr, total_steps, sign_fraction, momentum, nesterov, dampening,
                         weight_decay, fused, eps=eps, tau_max=tau_max,
                         newton_steps=newton_steps, tau_schedule=None)

    def _temperature(self, group, b: Batch, soft_step):
        if group["tau_schedule"] is None:  # the first soft step: fit τ_j to this step's momenta
            n = max(group["total_steps"] - self.switch_step(group), 1)
            pooled = torch.cat([self._soft_direction(group, b, i).flatten()
                                for i in range(len(b))])
            group["tau_schedule"] = temperature_schedule(
                pooled, n, math.atanh(1.0 - group["eps"]), group["tau_max"],
                group["newton_steps"])
        schedule = group["tau_schedule"]
        return schedule[min(soft_step, len(schedule) - 1)]

    @staticmethod
    def _soft_direction(group, b: Batch, i: int) -> torch.Tensor:
        """Tensor i's direction u at this step, from its state before the update."""
        first = torch.tensor(float(b.states[i]["step"] == 1), device=b.grads[i].device)
        return momentum_direction(b.buffers["momentum_buffer"][i], b.grads[i], first,
                                  momentum=group["momentum"], dampening=group["dampening"],
                                  nesterov=group["nesterov"])[1]

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

