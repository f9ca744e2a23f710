"""StoSignSGD and the sign-conversion framework (shared/papers/stosignsgd.md).

Any base direction d_t becomes a sign method through an envelope D_t ≥ |d_t|:

    step = sign(d_t + D_t ⊙ u),  u ~ Uniform[−1, 1] per coordinate   (stochastic)
    step = sign(d_t)                                                (deterministic)
    θ ← θ·(1 − lr·λ) − lr·step

E[step] = d_t / D_t: unbiased for the rescaled direction.

base:      sgd (d = g) | momentum (d = m, EMA with β1) | adam (d = m̂ / (sqrt(v̂) + ε))
envelope:  max (D = max(D_{t−1}, |d|), never decays) | current (D = |d|: sign(d) again)

StoSignSGD is base=momentum, envelope=max, stochastic. The noise comes from the optimizer's own
torch.Generator, seeded by `seed` and saved in state_dict: a resumed run draws the same noise,
and data-parallel replicas built with the same seed draw identical noise (identical updates).
Noise is drawn in fp32 whatever the parameter dtype.
"""

from __future__ import annotations

import torch

from optim._common import Batch, ElementwiseOptimizer, check_beta, check_lr_wd, require

BASES = ("sgd", "momentum", "adam")
ENVELOPES = ("max", "current")


class StochasticSign(ElementwiseOptimizer):
    def __init__(self, params, lr: float = 1e-3, base: str = "momentum", envelope: str = "max",
                 stochastic: bool = True, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, seed: int = 0):
        check_lr_wd(lr, weight_decay)
        require(base in BASES, "base", base, f"one of {list(BASES)}")
        require(envelope in ENVELOPES, "envelope", envelope, f"one of {list(ENVELOPES)}")
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        require(eps >= 0, "eps", eps, ">= 0")
        super().__init__(params, {"lr": lr, "base": base, "envelope": envelope,
                                  "stochastic": stochastic, "beta1": beta1, "beta2": beta2,
                                  "eps": eps, "weight_decay": weight_decay})
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    # ------------------------------------------------------------ noise

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            # the same seed on every device: data-parallel ranks (cuda:0, cuda:1, ...) must
            # draw identical noise
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return self._generators[key]

    def _uniform_like(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """u ~ U[−1, 1] for every tensor, from ONE draw per device (one kernel, fixed order)."""
        device = tensors[0].device
        total = sum(t.numel() for t in tensors)
        flat = self._noise_buffer(device, total)
        torch.rand(total, generator=self._generator(device), out=flat)
        flat.mul_(2.0).sub_(1.0)
        return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]),
                                                     tensors)]

    def _noise_buffer(self, device: torch.device, total: int) -> torch.Tensor:
        """A flat fp32 buffer for the noise, kept between steps on CPU (see Batch.scratch)."""
        if device.type != "cpu":
            return torch.empty(total, device=device, dtype=torch.float32)
        buffers = self.__dict__.setdefault("_noise", {})
        if str(device) not in buffers or buffers[str(device)].numel() < total:
            buffers[str(device)] = torch.empty(total, device=device, dtype=torch.float32)
        return buffers[str(device)][:total]

    def state_dict(self):
        sd = super().state_dict()
        sd["generators"] = {k: g.get_state() for k, g in self._generators.items()}
        sd["seed"] = self.seed
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        gens = state_dict.pop("generators", {})
        self.seed = state_dict.pop("seed", self.seed)
        super().load_state_dict(state_dict)
        self._generators = {}
        for key, gen_state in gens.items():
            self._generator(torch.device(key)).set_state(gen_state)

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
            torch._foreach_addcmul_(direction, env, self._uniform_like(b.params))
        torch._foreach_sign_(direction)
        return direction


class StoSignSGD(StochasticSign):
    """EMA momentum (β1), running-max envelope, stochastic sign: the paper's practical method."""

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0):
        super().__init__(params, lr=lr, base="momentum", envelope="max", stochastic=True,
                         beta1=beta1, weight_decay=weight_decay, seed=seed)

