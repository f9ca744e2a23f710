"""A deep linear network fitting a linear teacher with heavy-tailed singular values: the SMuon
authors' `experiments/muon_limitations.py` (deel-ai-papers/schatten-muon @749ba8d), where Muon's
fixed geometry (every singular direction gets the same step) fails.

    teacher W* = U·diag(i^(−alpha))·Vᵀ   (U, V Haar-random orthogonal, i = 1..min(out, in))
    inputs  X ~ N(0, I), n_samples × in_dim, fixed;  targets Y = X·W*ᵀ
    student x ↦ W_depth ··· W_1·x  (bias-free Linear layers, width `width`, torch's default init)
    loss    mean squared error over all of Y, full batch every step

Every weight is a matrix the Muon family steps (`param_roles`: no auxiliary Adam), as in the
script. The teacher, the data and the student's initialization are drawn from generators keyed
by the run's seed, so a run is a function of its config.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.train import checks
from tasks.train.base import Cost, DataNeed, Target, Task, generated, keyed_generator
from tasks.train.cost import training_memory


def haar_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """An n×n orthogonal matrix from the QR of a Gaussian one (the script's construction)."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    return q


def heavy_tailed_teacher(out_dim: int, in_dim: int, alpha: float,
                         gen: torch.Generator) -> torch.Tensor:
    """U·diag(i^(−alpha))·Vᵀ, out_dim × in_dim."""
    u, v = haar_orthogonal(out_dim, gen), haar_orthogonal(in_dim, gen)
    r = min(out_dim, in_dim)
    s = torch.zeros(out_dim, in_dim)
    s.diagonal().copy_(torch.arange(1, r + 1, dtype=torch.float32) ** (-alpha))
    return u @ s @ v.T


class DeepLinear(nn.Module):
    """Bias-free Linear layers in_dim → width → … → out_dim, no activation."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False)
                                    for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def param_roles(self) -> dict[str, str]:
        # the script hands every weight, the first and last included, to Muon / SMuon
        return {name: "matrix" for name, _ in self.named_parameters()}


def widths(depth: int, in_dim: int, width: int, out_dim: int) -> list[int]:
    return [in_dim] + [width] * (depth - 1) + [out_dim]


class DeepLinearTask(Task):
    checkpoint_trainable_only = False

    def __init__(self, *, seed: int, device: torch.device, data_root: str, depth: int = 5,
                 in_dim: int = 100, out_dim: int = 100, width: int = 100,
                 n_samples: int = 1000, alpha: float = 1.0, name: str = "deep_linear",
                 grad_accum: int = 1):
        self.name, self.seed, self.device = name, seed, device
        self.depth, self.alpha = depth, alpha
        data_gen = keyed_generator(seed, "teacher")
        self.teacher = heavy_tailed_teacher(out_dim, in_dim, alpha, data_gen)
        self.inputs = torch.randn(n_samples, in_dim, generator=data_gen)
        self.targets = self.inputs @ self.teacher.T
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)
        init_gen = keyed_generator(seed, "student")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=init_gen)))
            self.model = DeepLinear(widths(depth, in_dim, width, out_dim))
        self.model.to(device)
        self.tokens_per_batch = n_samples
        self.target = Target("log10_loss", None, "min")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        for key in ("depth", "in_dim", "out_dim", "width", "n_samples"):
            checks.integer(task, key)
        checks.number(task, "alpha", 0.0, 100.0)

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        return (generated("teacher and inputs"),)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        """Three matmuls per layer and step (forward, two in backward) on the full batch."""
        t = cfg["task"]
        sizes = widths(t["depth"], t["in_dim"], t["width"], t["out_dim"])
        params = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        n = t["n_samples"]
        per_step = 6.0 * n * params
        evals = cfg["steps"] // cfg["eval_every"] + 1
        return Cost(params=params, trained_params=params,
                    train_flops=per_step * cfg["steps"] * cfg["grad_accum"],
                    eval_flops=2.0 * n * params * evals,
                    memory_bytes=training_memory(params, params, 4.0 * n * sum(sizes)),
                    data=cls.data_needs(cfg), compute="fp32",
                    basis="6·samples·weights FLOPs a step (forward and backward matmuls)")

    def train_batch(self, step: int, micro: int) -> None:
        return None  # full batch: the same fixed inputs every step

    def loss(self, model, batch) -> torch.Tensor:
        return F.mse_loss(model(self.inputs), self.targets)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        loss = float(F.mse_loss(model(self.inputs).float(), self.targets))
        return {"loss": loss, "log10_loss": math.log10(loss) if loss > 0 else -math.inf}

    def describe(self) -> dict:
        return {"params": sum(p.numel() for p in self.model.parameters()),
                "data": {"depth": self.depth, "alpha": self.alpha,
                         "teacher_singular_values": [round(float(s), 6) for s in
                                                     torch.linalg.svdvals(self.teacher)[:5]]}}
