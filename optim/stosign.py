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
compiled pass per tensor) draws exactly what the eager kernel draws.

The family is built from parts: a `Base` (its state buffers, its per-step bias corrections and
its direction), an `Envelope` (its buffers and its bound D), and whether the sign is stochastic.
One kernel composes them; the config names them (`base=`, `envelope=`). The eager kernel is as
fast as foreach ops here (results/bench/elementwise_paths_cpu.md), so there is no foreach path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from optim._common import (
    Batch,
    ElementwiseOptimizer,
    check_beta,
    check_lr_wd,
    per_step_scalars,
    require,
)
from optim._fused import (
    HASH_CHUNK,
    Kernel,
    apply_update,
    hash_uniform,
    hash_uniform_into,
    noise_keys,
)

# ---------------------------------------------------------------- the parts


@dataclass(frozen=True)
class Base:
    """d = g: SignSGD's base."""

    buffers: tuple[str, ...] = ()

    def corrections(self, step: int, beta1: float, beta2: float) -> list[float]:
        """Per-step scalars the direction needs (0-d tensors in the kernel)."""
        return []

    def direction(self, grad, buffers, corrections, beta1, beta2, eps):
        return grad

    def direction_into(self, out, grad, buffers, corrections, beta1, beta2, eps):
        """`direction`, op for op, written into the scratch tensor `out` where it makes a new
        tensor (the foreach path: no allocation); returns d."""
        return grad


@dataclass(frozen=True)
class MomentumBase(Base):
    """d = m, m ← β1·m + (1−β1)·g."""

    buffers: tuple[str, ...] = ("exp_avg",)

    def direction(self, grad, buffers, corrections, beta1, beta2, eps):
        m = buffers[0]
        m.lerp_(grad, 1.0 - beta1)
        return m

    def direction_into(self, out, grad, buffers, corrections, beta1, beta2, eps):
        return self.direction(grad, buffers, corrections, beta1, beta2, eps)


@dataclass(frozen=True)
class AdamBase(Base):
    """d = m̂ / (sqrt(v̂) + ε), Adam's bias-corrected moments, computed as
    m·(√bc2/bc1) / (√v + ε·√bc2) with bc_i = 1 − β_i^k (the same quantity: one pass fewer)."""

    buffers: tuple[str, ...] = ("exp_avg", "exp_avg_sq")
    eps: float = 1e-8  # the group's ε enters the per-step scalars (set by `with_eps`)

    def corrections(self, step, beta1, beta2):
        root = math.sqrt(1.0 - beta2**step)
        return [root / (1.0 - beta1**step), self.eps * root]

    def with_eps(self, eps: float) -> "AdamBase":
        return replace(self, eps=eps)

    def direction(self, grad, buffers, corrections, beta1, beta2, eps):
        m, v = buffers
        scale, eps_root = corrections
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        return (m * scale) / (v.sqrt() + eps_root)

    def direction_into(self, out, grad, buffers, corrections, beta1, beta2, eps):
        m, v = buffers
        scale, eps_root = corrections
        denom, d = out
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        torch.sqrt(v, out=denom).add_(eps_root)
        return torch.mul(m, scale, out=d).div_(denom)


@dataclass(frozen=True)
class Envelope:
    """D = |d|: with the noise, sign(d + |d|·u) = sign(d) again."""

    buffers: tuple[str, ...] = ()

    def bound(self, d, buffers):
        return d.abs()

    def bound_into(self, out, d, buffers):
        """`bound`, written into the scratch tensor `out` (the foreach path)."""
        return torch.abs(d, out=out)


@dataclass(frozen=True)
class MaxEnvelope(Envelope):
    """D = max(D_{t−1}, |d|): a running maximum that never decays."""

    buffers: tuple[str, ...] = ("envelope",)

    def bound(self, d, buffers):
        env = torch.maximum(buffers[0], d.abs())
        buffers[0].copy_(env)
        return env

    def bound_into(self, out, d, buffers):
        return torch.maximum(buffers[0], torch.abs(d, out=out), out=buffers[0])


BASES = {"sgd": Base(), "momentum": MomentumBase(), "adam": AdamBase()}
ENVELOPES = {"max": MaxEnvelope(), "current": Envelope()}


@Kernel
def _sign_conversion_kernel(param, grad, *tensors, base: Base, envelope: Envelope | None,
                            beta1, beta2, eps, weight_decay):
    """One tensor's step. `tensors`: the base's buffers, the envelope's, lr, the base's
    corrections, then the two noise keys if `envelope` (stochastic) else none."""
    n_base, n_env = len(base.buffers), len(envelope.buffers) if envelope is not None else 0
    base_buffers, env_buffers = tensors[:n_base], tensors[n_base:n_base + n_env]
    lr, rest = tensors[n_base + n_env], tensors[n_base + n_env + 1:]
    n_corr = len(rest) - (2 if envelope is not None else 0)
    d = base.direction(grad, base_buffers, rest[:n_corr], beta1, beta2, eps)
    if envelope is not None:
        d = d + envelope.bound(d, env_buffers) * hash_uniform(d, rest[n_corr], rest[n_corr + 1])
    apply_update(param, d.sign(), lr, weight_decay)


# ---------------------------------------------------------------- the optimizer


class StochasticSign(ElementwiseOptimizer):
    shardable = False  # the noise hashes each element's position in its whole tensor

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

    @staticmethod
    def _parts(group) -> tuple[Base, Envelope | None]:
        """The group's base (with its ε, where it takes one), and its envelope where the sign
        is stochastic (else None)."""
        base = BASES[group["base"]]
        if isinstance(base, AdamBase):
            base = base.with_eps(group["eps"])
        return base, ENVELOPES[group["envelope"]] if group["stochastic"] else None

    def _buffers(self, group):
        base, envelope = self._parts(group)
        return base.buffers + (envelope.buffers if envelope is not None else ())

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

    def _kernel_step(self, group, b: Batch):
        base, envelope = self._parts(group)
        beta1, beta2 = group["beta1"], group["beta2"]
        corrections = per_step_scalars(b, lambda k: base.corrections(k, beta1, beta2))
        keys = self._noise_keys(group, b) if envelope is not None else None

        def per_tensor(i):  # the base's corrections, then the noise keys (stochastic)
            noise = [] if keys is None else [b.scalar(("noise", i, j), k, torch.int32)
                                             for j, k in enumerate(keys[i])]
            return [*corrections(i), *noise]

        self.run_kernel(_sign_conversion_kernel, group, b, self._buffers(group),
                        per_tensor=per_tensor, base=base, envelope=envelope, beta1=beta1,
                        beta2=beta2, eps=group["eps"])

    def _foreach_update(self, group, b: Batch):
        """The kernel's operations in their order, tensor by tensor, each written in place into
        scratch tensors: the same numbers bit for bit (tests/test_optim_fused.py), without the
        eager kernel's fresh tensor per operation (on a CPU a parameter-sized allocation costs
        a page fault per 4 KiB: the kernel ran at 34x torch's fused AdamW, this at ~1.3x its
        foreach AdamW; results/bench/)."""
        base, envelope = self._parts(group)
        beta1, beta2, eps = group["beta1"], group["beta2"], group["eps"]
        corrections = per_step_scalars(b, lambda k: base.corrections(k, beta1, beta2))
        keys = self._noise_keys(group, b) if envelope is not None else None
        keep = 1.0 - b.scalar("lr", group["lr"]) * group["weight_decay"]  # the kernel's, fp32
        first, second = b.scratch(0), b.scratch(1)
        noise = self._noise_scratch(b)
        n_base = len(base.buffers)
        for i, (param, grad) in enumerate(zip(b.params, b.grads)):
            buffers = [b.buffers[name][i] for name in self._buffers(group)]
            d = base.direction_into((first[i], second[i]), grad, buffers[:n_base],
                                    corrections(i), beta1, beta2, eps)
            if envelope is None:
                step = torch.sign(d, out=first[i] if d is not first[i] else second[i])
            else:
                bound = envelope.bound_into(first[i] if d is not first[i] else second[i], d,
                                            buffers[n_base:])
                u = hash_uniform_into(noise[i], *keys[i], self._hash_scratch(param))
                step = torch.addcmul(d, bound, u, out=u).sign_()  # sign(d + D·u), as the kernel
            if group["weight_decay"]:  # x·1 is x: with no decay the pass is skipped
                param.mul_(keep)
            param.add_(step, alpha=-group["lr"])  # −lr·s is exact for s in {−1, 0, 1}

    def _noise_scratch(self, b: Batch) -> list[torch.Tensor]:
        """Contiguous float scratch for each tensor's noise (kept on the CPU, as Batch.scratch)."""
        cache = self.scratch_buffers
        out = []
        for orig, work in zip(b.originals, b.params):
            if work.device.type != "cpu":
                out.append(torch.empty(work.shape, dtype=work.dtype, device=work.device))
                continue
            key = ("noise", orig)
            if key not in cache or cache[key].shape != work.shape:
                cache[key] = torch.empty(work.shape, dtype=work.dtype)
            out.append(cache[key])
        return out

    def _hash_scratch(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two int32 chunks `hash_uniform_into` works in: HASH_CHUNK elements on the CPU
        (kept), the tensor's size on a GPU."""
        size = HASH_CHUNK if param.device.type == "cpu" else max(param.numel(), 1)
        key = ("hash", param.device)
        found = self.scratch_buffers.get(key)
        if found is None or found[0].numel() < size:
            found = tuple(torch.empty(size, dtype=torch.int32, device=param.device)
                          for _ in range(2))
            if param.device.type == "cpu":
                self.scratch_buffers[key] = found
        return found


class StoSignSGD(StochasticSign):
    """EMA momentum (β1), running-max envelope, stochastic sign: the paper's practical method."""

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0, fused: bool = False):
        super().__init__(params, lr=lr, base="momentum", envelope="max", stochastic=True,
                         beta1=beta1, weight_decay=weight_decay, seed=seed, fused=fused)

