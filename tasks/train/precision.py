"""Numerical precision of a run: what the forward pass computes in, and (for emulated FP8) what
gradients and optimizer state are rounded to.

    fp32           everything fp32
    bf16           bf16 autocast for the forward pass; fp32 weights, gradients and state
    fp8_emulated   StoSignSGD's FP8 setting, for ANY optimizer: bf16 master weights and bf16
                   autocast; every gradient rounded through float8_e5m2 after backward; every
                   optimizer state tensor rounded through float8_e4m3fn with a per-tensor scale
                   (amax / 448) after each step. The values are stored in their usual dtype but
                   only ever hold FP8-representable numbers, which is what the paper's claim is
                   about (AdamW's second moment underflows there; a max-based state survives).

`compute` (bf16 or fp32; only for bf16 and fp8_emulated) says what the matmuls run in. The default
bf16 is the papers' setting. `compute=fp32` is for CPUs without bf16 units (this project's CI
machine has AVX2 only, where bf16 matmuls are emulated ~20x slower): the model stays fp32 and, for
fp8_emulated, every parameter is rounded through bf16 after each step, so the master weights still
only hold bf16 values; only the activations are not rounded to bf16. Miniatures that use it
say so in their label.
"""

from __future__ import annotations

import contextlib

import torch

from tasks.train import checks

PRECISIONS = ("fp32", "bf16", "fp8_emulated")
COMPUTE_DTYPES = ("bf16", "fp32")
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def round_through(t: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | float = 1.0):
    """t rounded to the nearest value of `dtype` (after dividing by `scale`), in place."""
    return t.copy_((t / scale).to(dtype).to(t.dtype) * scale)


def round_state_e4m3(state: torch.Tensor) -> None:
    amax = state.abs().max()
    if amax > 0:
        round_through(state, torch.float8_e4m3fn, amax.float() / E4M3_MAX)


def validate_precision(cfg: dict) -> None:
    """The `precision` section of a run config: its keys (compute only where matmuls may run
    in bf16) and values."""
    check_precision(cfg.get("name"), cfg.get("compute", "bf16"))
    checks.known_keys("precision", cfg, ("name",) if cfg["name"] == "fp32" else
                      ("name", "compute"))


def check_precision(name: str, compute: str = "bf16") -> None:
    """The precision config's values (before a run, and when one is built)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision.name must be one of {list(PRECISIONS)}, got {name!r}")
    if compute not in COMPUTE_DTYPES:
        raise ValueError(f"precision.compute must be one of {list(COMPUTE_DTYPES)}, "
                         f"got {compute!r}")


class Precision:
    def __init__(self, name: str, device: torch.device, compute: str = "bf16"):
        check_precision(name, compute)
        self.name, self.device = name, device
        self.bf16_compute = name != "fp32" and compute == "bf16"

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """fp8_emulated keeps bf16 master weights (stored as bf16, or as fp32 holding bf16 values
        with compute=fp32)."""
        if self.name != "fp8_emulated":
            return model
        if self.bf16_compute:
            return model.to(torch.bfloat16)
        with torch.no_grad():
            for p in model.parameters():
                round_through(p, torch.bfloat16)
        return model

    @property
    def autocast(self):
        if self.bf16_compute:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def after_backward(self, params) -> None:
        if self.name == "fp8_emulated":
            for p in params:
                if p.grad is not None:
                    round_through(p.grad, torch.float8_e5m2)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.name != "fp8_emulated":
            return
        if not self.bf16_compute:  # fp32 storage: keep the master weights on bf16 values
            for group in optimizer.param_groups:
                for p in group["params"]:
                    round_through(p, torch.bfloat16)
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    round_state_e4m3(value)
