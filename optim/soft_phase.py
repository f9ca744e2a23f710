"""How much the soft phase of SoftSignum and SoftMuon acts (arXiv:2605.31371), measured on the
steps a run actually takes: `scripts/soft_phase.py` trains a table's run with this probe on.

After the switch, SoftSignum steps by tanh(τ·u) per coordinate and SoftMuon by the spectral
soft sign σ ↦ τσ/√(1 + τ²σ²) of the momentum matrix. Where that is ≥ 1 − ε the coordinate (or
singular direction) is saturated: the step is the sign phase's (Signum's, Muon's). Where τ·|u|
is small the soft sign is linear: the step is momentum SGD at lr·τ there. So each soft step
gets three numbers:

    unsaturated  share of entries below 1 − ε (ε the group's `eps`): what the soft sign changes
    linear       share below 0.1 (tanh(x) and x/√(1 + x²) are within 0.5% of x there)
    from_sign    mean of 1 − soft sign over entries: how far the step is from the exact sign
                 (sign(u); the polar factor U·Vᵀ for SoftMuon), 0 (the same step) to 1 (no
                 step at all): what the temperature softens

and, for SoftMuon, `from_newton_schulz`: mean |soft sign − Muon's Newton-Schulz response| over
singular values, how far the step is from Muon's own: Newton-Schulz is not the exact polar
factor either (below 1 for small σ, 0.7 to 1.2 elsewhere), so a saturated soft sign still
differs from Muon's step by that much.

SoftSignum's step is read back from the parameters (θ before and after, weight decay undone,
over lr), so the probe reads what the optimizer did through whichever path (foreach, kernel,
compiled) it took. SoftMuon's is read from its input: the exact map of the momentum direction u
(from its state and the gradient after the step) at the step's τ. Its fast path approximates
that map by polar iterations whose singular values are not exactly the map's; read from the
step, that approximation counts as "unsaturated" (softsign_graph's SoftMuon run at τ ≥ 1.6e7:
97.5% of singular values read from the step, 36% by the map, all of them tiny ones).

The probe hooks every optimizer through torch's global step hooks and measures the soft groups
of SoftSignum and SoftMuon only; it changes nothing a run computes (the hooks read and copy,
never write).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from optim.muon import SoftMuon
from optim.softsign import SoftSignum
from optim.spectral import NS_COEFFICIENTS, as_matrix

LINEAR = 0.1  # below this the soft sign is its argument within 0.5%


@dataclass(frozen=True)
class SoftStep:
    """One soft step of one param group."""

    step: int  # the optimizer's step, 1-based
    soft_step: int  # 0 at the first step after the switch
    group: int
    tau: float
    unsaturated: float
    linear: float
    from_sign: float
    from_newton_schulz: float | None = None  # SoftMuon only


def _soft_groups(opt: torch.optim.Optimizer) -> list[tuple[int, dict]]:
    """(index, group) of the groups about to take a soft step."""
    if isinstance(opt, SoftSignum):
        groups = list(enumerate(opt.param_groups))
    elif isinstance(opt, SoftMuon):
        groups = [(i, g) for i, g in enumerate(opt.param_groups) if g.get("use_matrix")]
    else:
        return []
    return [(i, g) for i, g in groups if g["step"] >= opt.switch_step(g)]


def _step_magnitudes(step: torch.Tensor) -> torch.Tensor:
    """|tanh(τ·u)| of every coordinate of SoftSignum's step."""
    return step.abs().flatten().float()


def _map_magnitudes(group: dict, param: torch.Tensor, state: dict,
                    tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each singular value σ of SoftMuon's momentum direction u (Muon's: u = lerp(g, m, β)
    with Nesterov, else m; m the momentum after the step): the soft sign τσ/√(1 + τ²σ²), and
    what Muon's Newton-Schulz iteration (the sign phase) makes of σ."""
    m = state["momentum_buffer"]
    u = torch.lerp(param.grad, m, group["momentum"]) if group["nesterov"] else m
    sigma = torch.linalg.svdvals(as_matrix(u).double())
    soft = tau * sigma / torch.sqrt(1.0 + (tau * sigma) ** 2)
    return soft.float(), newton_schulz_response(sigma, group["ns_steps"]).float()


def newton_schulz_response(sigma: torch.Tensor, steps: int) -> torch.Tensor:
    """The singular values optim.spectral.newton_schulz5 maps a matrix with singular values
    `sigma` to, in exact arithmetic: σ/‖σ‖₂ through `steps` of s ← a·s + b·s³ + c·s⁵. Muon's
    step is not exactly 1 per direction: it is below 1 for small σ (and overshoots near 1)."""
    a, b, c = NS_COEFFICIENTS
    s = sigma / sigma.norm().clamp(min=1e-7)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


class Probe:
    """Collects a `SoftStep` per soft step of each soft group of every optimizer stepping
    while it is installed (`with probe.installed(): ...`)."""

    def __init__(self) -> None:
        self.steps: list[SoftStep] = []
        self._before: dict[int, tuple[int, list[torch.Tensor]]] = {}

    def _pre(self, opt, args, kwargs) -> None:
        copy = not isinstance(opt, SoftMuon)  # SoftMuon is read from its momentum
        self._before = {
            i: (g["step"], [p.detach().clone() for p in g["params"] if p.grad is not None]
                if copy else [])
            for i, g in _soft_groups(opt)}

    def _post(self, opt, args, kwargs) -> None:
        for i, (k, before) in self._before.items():
            group = opt.param_groups[i]
            j = k - opt.switch_step(group)
            schedule = group["tau_schedule"]
            tau = float(schedule[min(j, len(schedule) - 1)])
            params = [p for p in group["params"] if p.grad is not None]
            muon = None
            if isinstance(opt, SoftMuon):
                mags, muon = (torch.cat(x) for x in zip(*[
                    _map_magnitudes(group, p, opt.state[p], tau) for p in params]))
            else:
                lr, decay = group["lr"], group["weight_decay"]
                mags = torch.cat([_step_magnitudes((b * (1.0 - lr * decay) - p.detach()) / lr)
                                  for b, p in zip(before, params)])
            self.steps.append(SoftStep(
                step=k + 1, soft_step=j, group=i, tau=tau,
                unsaturated=float((mags < 1.0 - group["eps"]).float().mean()),
                linear=float((mags < LINEAR).float().mean()),
                from_sign=float((1.0 - mags.clamp(max=1.0)).mean()),
                from_newton_schulz=None if muon is None else float((mags - muon).abs().mean())))
        self._before = {}

    @contextmanager
    def installed(self) -> Iterator[Probe]:
        handles = [register_optimizer_step_pre_hook(self._pre),
                   register_optimizer_step_post_hook(self._post)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
