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
    fp4_emulated   the same placement at 4 bits (StoSignSGD's later FP4 runs; their recipe is not
                   public, so this is an assumption): bf16 master weights and autocast; every
                   gradient and every optimizer state tensor rounded through FP4 E2M1 (±{0, 0.5,
                   1, 1.5, 2, 3, 4, 6}) with a shared power-of-two scale per block of 32
                   values (the OCP MXFP4 format), after backward and after each step.

`compute` (bf16 or fp32; only for bf16 and the emulated formats) says what the matmuls run in.
The default bf16 is the papers' setting. `compute=fp32` is for CPUs without bf16 units (this
project's CI machine has AVX2 only, where bf16 matmuls are emulated ~20x slower): the model stays
fp32 and, for the emulated formats, every parameter is rounded through bf16 after each step, so
the master weights still only hold bf16 values; only the activations are not rounded to bf16.
Miniatures that use it say so in their label.
"""

from __future__ import annotations

import contextlib

import torch

from tasks.train import checks

PRECISIONS = ("fp32", "bf16", "fp8_emulated", "fp4_emulated")
LOW_PRECISION = ("fp8_emulated", "fp4_emulated")  # bf16 master weights, rounded grads and state
COMPUTE_DTYPES = ("bf16", "fp32")
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def round_through(t: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | float = 1.0):
    """t rounded to the nearest value of `dtype` (after dividing by `scale`), in place."""
    return t.copy_((t / scale).to(dtype).to(t.dtype) * scale)


E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # FP4 E2M1's magnitudes
MX_BLOCK = 32  # values sharing one power-of-two scale (OCP MX)


_GRIDS: dict = {}


def _e2m1_grid(device: torch.device) -> torch.Tensor:
    """E2M1_GRID on `device`, copied there once (a copy per call would block every step)."""
    if device not in _GRIDS:
        _GRIDS[device] = torch.tensor(E2M1_GRID, device=device)
    return _GRIDS[device]


def round_mxfp4(t: torch.Tensor) -> None:
    """t rounded, in place, to MXFP4: blocks of 32 consecutive values (in memory order) share
    the scale 2^(floor(log2(block amax)) − 2), so the block's largest magnitude lands in
    [4, 8); each value/scale is rounded to the nearest E2M1 magnitude (ties to the larger),
    clamped at 6."""
    flat = t.detach().reshape(-1).float()
    pad = (-flat.numel()) % MX_BLOCK
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, MX_BLOCK)
    amax = blocks.abs().amax(dim=1, keepdim=True)
    scale = torch.exp2(torch.floor(torch.log2(amax.clamp(min=torch.finfo(torch.float32).tiny)))
                       - 2.0)
    grid = _e2m1_grid(t.device)
    x = (blocks.abs() / scale).clamp(max=E2M1_GRID[-1])
    midpoints = (grid[1:] + grid[:-1]) / 2
    q = grid[torch.bucketize(x, midpoints, right=True)] * scale * blocks.sign()
    t.copy_(q.reshape(-1)[: flat.numel()].view_as(t).to(t.dtype))


def round_state_e4m3(state: torch.Tensor) -> None:
    amax = state.abs().max().float()
    # an all-zero state stays zero at any scale: choosing 1 on the device, rather than asking
    # the host whether amax > 0, keeps the step free of a synchronization per state tensor
    round_through(state, torch.float8_e4m3fn, torch.where(amax > 0, amax / E4M3_MAX, 1.0))


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
        # how gradients and optimizer state are rounded (the emulated formats only)
        self.round_grad, self.round_state = {
            "fp8_emulated": (lambda g: round_through(g, torch.float8_e5m2), round_state_e4m3),
            "fp4_emulated": (round_mxfp4, round_mxfp4)}.get(name, (None, None))

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """fp8_emulated and fp4_emulated keep bf16 master weights (stored as bf16, or as fp32
        holding bf16 values with compute=fp32)."""
        if self.name not in LOW_PRECISION:
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
        if self.name not in LOW_PRECISION:
            return
        for p in params:
            if p.grad is not None:
                self.round_grad(p.grad)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.name not in LOW_PRECISION:
            return
        if not self.bf16_compute:  # fp32 storage: keep the master weights on bf16 values
            for group in optimizer.param_groups:
                for p in group["params"]:
                    round_through(p, torch.bfloat16)
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    self.round_state(value)
