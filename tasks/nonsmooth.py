"""A non-smooth convex problem on which deterministic sign methods stall (StoSignSGD's theory).

    f(x) = (1/d) Σ_i [ p·w·|x_i − a| + (1 − p)·|x_i − b| ],   p·w > 1 − p
Its minimizer is x_i = a (the weighted median). Each step samples, per coordinate, which term
it sees (the heavy one with probability p), so the stochastic subgradient is unbiased. Its sign
is not: between a and b, E[g_i] = p·w − (1 − p) > 0 points to a, but E[sign g_i] = p − (1 − p)
< 0 when p < 1/2, so SignSGD drifts to b and stalls there, a fixed distance |b − a| away.
Momentum (Signum) averages gradients before the sign and an unbiased stochastic sign
(StoSignSGD) keeps E[step] ∝ E[g]; both converge. Defaults: p = 0.3, w = 10, a = 0, b = 1.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

from tasks.train import checks
from tasks.train.base import Cost, DataNeed, Target, Task, generated
from tasks.train.cost import training_memory


class Point(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.x = nn.Parameter(torch.full((dim,), float(init)))


class NonSmoothTask(Task):
    checkpoint_trainable_only = False  # the whole model trains

    def __init__(self, *, seed: int, device: torch.device, data_root: str, dim: int = 100,
                 heavy_prob: float = 0.3, heavy_weight: float = 10.0, a: float = 0.0,
                 b: float = 1.0, init: float = 0.5, target_distance: float = 0.05,
                 name: str = "nonsmooth", grad_accum: int = 1):
        if not 0 < heavy_prob < 1:
            raise ValueError(f"task.heavy_prob must be in (0, 1), got {heavy_prob}")
        if heavy_prob * heavy_weight <= 1 - heavy_prob:
            raise ValueError("task.heavy_weight too small: the minimizer would not be at a "
                             "(need heavy_prob·heavy_weight > 1 − heavy_prob)")
        self.name, self.seed, self.device, self.dim = name, seed, device, dim
        self.p, self.w, self.a, self.b = heavy_prob, heavy_weight, a, b
        self.model = Point(dim, init).to(device)
        self.tokens_per_batch = 1
        self.target = Target("distance", target_distance, "min")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        checks.integer(task, "dim")
        p = checks.number(task, "heavy_prob", 0.0, 1.0, low_open=True)
        w = checks.number(task, "heavy_weight", 0.0, checks.F32_MAX, low_open=True)
        checks.number(task, "target_distance", 0.0, checks.F32_MAX, low_open=True)
        for key in ("a", "b", "init"):  # float32 parameters and losses: past this they are inf
            checks.number(task, key, -checks.F32_MAX, checks.F32_MAX, high_open=False)
        if p * w <= 1 - p:
            raise ValueError(f"task.heavy_weight ({w}) too small for task.heavy_prob ({p}): "
                             f"the minimizer is at a only if heavy_prob·heavy_weight > "
                             f"1 − heavy_prob")

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        return (generated("samples"),)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        """A handful of elementwise operations per coordinate and step: CPU seconds."""
        dim = cfg["task"].get("dim", 100)
        return Cost(params=dim, trained_params=dim,
                    train_flops=10.0 * dim * cfg["steps"] * cfg["grad_accum"], eval_flops=0.0,
                    memory_bytes=training_memory(dim, dim, 4 * dim),
                    data=cls.data_needs(cfg),
                    compute="fp32", basis="about 10 elementwise operations per coordinate and step")

    def train_batch(self, step: int, micro: int) -> torch.Tensor:
        key = hashlib.sha1(f"{self.seed}/{step}/{micro}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
        return (torch.rand(self.dim, generator=gen) < self.p).to(self.device)  # heavy term?

    def loss(self, model, heavy: torch.Tensor) -> torch.Tensor:
        x = model.x
        sampled = torch.where(heavy, self.w * (x - self.a).abs(), (x - self.b).abs())
        return sampled.mean()

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        return (self.p * self.w * (x - self.a).abs() + (1 - self.p) * (x - self.b).abs()).mean()

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        x = model.x.float()
        optimum = self.objective(torch.full_like(x, self.a))
        return {"distance": float((x - self.a).pow(2).mean().sqrt()),
                "suboptimality": float(self.objective(x) - optimum)}

    def describe(self) -> dict:
        return {"params": self.dim, "data": {"heavy_prob": self.p, "heavy_weight": self.w,
                                             "a": self.a, "b": self.b}}
