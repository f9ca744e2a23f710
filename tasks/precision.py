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
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp8_emulated")
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def round_through(t: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | float = 1.0):
    """t rounded to the nearest value of `dtype` (after dividing by `scale`), in place."""
    return t.copy_((t / scale).to(dtype).to(t.dtype) * scale)


def round_state_e4m3(state: torch.Tensor) -> None:
    amax = state.abs().max()
    if amax > 0:
        round_through(state, torch.float8_e4m3fn, amax.float() / E4M3_MAX)


class Precision:
    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS:
            raise ValueError(f"precision.name must be one of {list(PRECISIONS)}, got {name!r}")
        self.name, self.device = name, device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """fp8_emulated keeps bf16 master weights."""
        return model.to(torch.bfloat16) if self.name == "fp8_emulated" else model

    @property
    def autocast(self):
        if self.name in ("bf16", "fp8_emulated"):
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
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    round_state_e4m3(value)
