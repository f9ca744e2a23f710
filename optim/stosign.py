"""StoSignSGD and the sign-conversion framework (arXiv:2604.15416).

Any base direction d_t becomes a sign method through an envelope D_t ≥ |d_t|:

    step = sign(d_t + D_t ⊙ u),  u ~ Uniform[−1, 1] per coordinate   (stochastic)
    step = sign(d_t)                                                (deterministic)
    θ ← θ·(1 − lr·λ) − lr·step

E[step] = d_t / D_t: unbiased for the rescaled direction.

base:      sgd (d = g) | momentum (d = m, EMA with β1) | adam (d = m̂ / (sqrt(v̂) + ε))
envelope:  max (D = max(D_{t−1}, |d|), never decays) | current (D = |d|: sign(d) again)

StoSignSGD is base=momentum, envelope=max, stochastic. The noise is counter-based: u of each
coordinate is an integer hash of (seed, step, tensor slot, element index) (optim/_fused.py,
`hash_uniform`; uniform on a symmetric 24-bit grid, as fine as torch.rand in fp32). So it needs
no generator state: a resumed run draws the same noise, data-parallel replicas built with the
same seed draw identical noise (identical updates), and the fused path (`fused=True`, one
compiled pass per tensor) draws exactly what the foreach path draws.
"""

from __future__ import annotations

import torch

from optim._common import (
    Batch,
    ElementwiseOptimizer,
    check_beta,
    check_lr_wd,
    per_step_scalars,
    require,
)
from optim._fused import apply_update, hash_uniform, noise_keys

BASES = ("sgd", "momentum", "adam")
ENVELOPES = ("max", "current")


class StochasticSign(ElementwiseOptimizer):
    def __init__(self, params, lr: float = 1e-3, base: str = "momentum", envelope: str = "max",
                 stochastic: bool = True, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, seed: int = 0,
                 fused: bool = False):
        check_lr_wd(lr, weight_decay)
        require(base in BASES, "base", base, f"one of {list(BASES)}")
        require(envelope in ENVELOPES, "envelope", envelope, f"one of {list(ENVELOPES)}")
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        require(eps >= 0, "eps", eps, ">= 0")
        super().__init__(params, {"lr": lr, "base": base, "envelope": envelope,
                                  "stochastic": stochastic, "beta1": beta1, "beta2": beta2,
                                  "eps": eps, "weight_decay": weight_decay, "fused": fused})
        self.seed = int(seed)

    # ------------------------------------------------------------ noise

    def _noise_keys(self, group, b: Batch) -> list[tuple[int, int]]:
        """Per tensor: the keys of its noise at this step, from (seed, step, the tensor's slot:
        group and position in it)."""
        g_index = next(i for i, g in enumerate(self.param_groups) if g is group)
        position = {id(p): i for i, p in enumerate(group["params"])}
        return [noise_keys(self.seed, st["step"], (g_index << 20) + position[id(p)])
                for p, st in zip(b.originals, b.states)]

    def state_dict(self):
        sd = super().state_dict()
        sd["seed"] = self.seed
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        state_dict.pop("generators", None)  # RNG states have no use: the noise is a hash of keys
        self.seed = state_dict.pop("seed", self.seed)
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------ the update

    def _base_direction(self, group, b: Batch) -> list[torch.Tensor]:
        if group["base"] == "sgd":
            return b.grads
        m = b.buffers["exp_avg"]
        torch._foreach_lerp_(m, b.grads, 1.0 - group["beta1"])
        if group["base"] == "momentum":
            return m
        v = b.buffers["exp_avg_sq"]
        torch._foreach_mul_(v, group["beta2"])
        torch._foreach_addcmul_(v, b.grads, b.grads, value=1.0 - group["beta2"])
        steps = [st["step"] for st in b.states]
        direction = b.copy_into(0, m)  # becomes m̂ / (sqrt(v̂) + ε)
        torch._foreach_div_(direction, [1.0 - group["beta1"] ** k for k in steps])
        denom = b.copy_into(1, v)
        torch._foreach_div_(denom, [1.0 - group["beta2"] ** k for k in steps])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_div_(direction, denom)
        return direction

    def _buffers(self, group):
        buffers = {"sgd": (), "momentum": ("exp_avg",),
                   "adam": ("exp_avg", "exp_avg_sq")}[group["base"]]
        if group["envelope"] == "max" and group["stochastic"]:
            buffers += ("envelope",)
        return buffers

    def _direction(self, group, b: Batch):
        d = self._base_direction(group, b)
        abs_d = b.copy_into(1, d)
        torch._foreach_abs_(abs_d)
        direction = b.copy_into(2, d)  # becomes the sign step, in place
        if group["stochastic"]:
            env = abs_d
            if group["envelope"] == "max":
                env = b.buffers["envelope"]
                torch._foreach_maximum_(env, abs_d)
            noise = [hash_uniform(p, k1, k2)
                     for p, (k1, k2) in zip(b.params, self._noise_keys(group, b))]
            torch._foreach_addcmul_(direction, env, noise)
        torch._foreach_sign_(direction)
        return direction

    def _fused(self, group, b: Batch):
        beta1, beta2 = group["beta1"], group["beta2"]
        # reciprocal bias corrections (adam), so the kernel multiplies instead of dividing
        corrections = per_step_scalars(
            b, lambda k: [1.0 / (1.0 - beta1**k), 1.0 / (1.0 - beta2**k)]
            if group["base"] == "adam" else [])
        keys = self._noise_keys(group, b) if group["stochastic"] else None
        device = b.params[0].device

        def per_tensor(i):  # the bias corrections (adam), then the noise keys (stochastic)
            noise = [] if keys is None else [torch.tensor(k, dtype=torch.int32, device=device)
                                             for k in keys[i]]
            return [*corrections(i), *noise]

        self.run_kernel(_stochastic_sign_kernel, group, b, self._buffers(group),
                        per_tensor=per_tensor, base=group["base"], envelope=group["envelope"],
                        stochastic=group["stochastic"], beta1=beta1, beta2=beta2,
                        eps=group["eps"])


def _stochastic_sign_kernel(param, grad, *tensors, base, envelope, stochastic, beta1, beta2,
                            eps, weight_decay):
    """One tensor's step; `tensors` = the state buffers of `_buffers`, lr, then the reciprocal
    bias corrections (adam) and the two noise keys (stochastic)."""
    n_buffers = {"sgd": 0, "momentum": 1, "adam": 2}[base]
    has_envelope = stochastic and envelope == "max"
    buffers, rest = tensors[:n_buffers + has_envelope], tensors[n_buffers + has_envelope:]
    lr, rest = rest[0], rest[1:]
    d = grad
    if base != "sgd":
        m = buffers[0]
        m.lerp_(grad, 1.0 - beta1)
        d = m
    if base == "adam":
        v = buffers[1]
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        inv_bc1, inv_bc2, rest = rest[0], rest[1], rest[2:]
        d = (m * inv_bc1) / ((v * inv_bc2).sqrt() + eps)
    if stochastic:
        env = d.abs()
        if has_envelope:
            env = torch.maximum(buffers[-1], env)
            buffers[-1].copy_(env)
        d = d + env * hash_uniform(d, rest[0], rest[1])
    apply_update(param, d.sign(), lr, weight_decay)


class StoSignSGD(StochasticSign):
    """EMA momentum (β1), running-max envelope, stochastic sign: the paper's practical method."""

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0, fused: bool = False):
        super().__init__(params, lr=lr, base="momentum", envelope="max", stochastic=True,
                         beta1=beta1, weight_decay=weight_decay, seed=seed, fused=fused)

