"""Estimate a run's compute and memory from its config, without data and without training.

Models are built on PyTorch's meta device (shapes only, no memory), one forward and backward
pass runs there under `FlopCounterMode`, and the tensors autograd saves for backward are
summed by storage. That gives exact matmul/conv FLOPs for any model the task builds and an
upper bound on activation memory: on the meta device attention keeps its score matrix, which
the fused attention kernels used on GPUs do not.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from optim import registry

# Optimizer state buffers per trained parameter (fp32), by class name, from the registry; the
# aux AdamW of the Muon family is counted as the main update's buffers.
STATE_BUFFERS = registry.STATE_BUFFERS


def state_buffers(optim_cfg: dict) -> int:
    """Buffers per parameter of the run's optimizer (2, as Adam, for one not listed)."""
    return STATE_BUFFERS.get(str(optim_cfg.get("_target_", "")).rsplit(".", 1)[-1], 2)


def compute_dtype(precision_cfg: dict) -> str:
    """What a run's matmuls run in under its precision config: "bf16" or "fp32"."""
    bf16 = precision_cfg.get("name") != "fp32" and precision_cfg.get("compute", "bf16") == "bf16"
    return "bf16" if bf16 else "fp32"


def compute_bytes(precision_cfg: dict) -> int:
    """Bytes per activation value: 2 where the forward runs in bf16, else 4."""
    return 2 if compute_dtype(precision_cfg) == "bf16" else 4


def trace_on_meta(build: Callable[[], torch.nn.Module], inputs: Callable[[], tuple],
                  loss: Callable) -> tuple[int, float, int]:
    """(parameters, FLOPs of one forward + backward, bytes saved for backward in fp32) of
    `loss(model, *inputs())` with the model built on the meta device."""
    with torch.device("meta"):
        model = build()
        args = inputs()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:  # weights are not activations
            saved[storage._cdata] = storage.nbytes()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss(model, *args).backward()
    n_params = sum(p.numel() for p in model.parameters())
    return n_params, float(counter.get_total_flops()), sum(saved.values())


def training_memory(params: int, trained: int, optim_cfg: dict, activation_bytes: float,
                    weight_bytes: float = 4.0) -> dict:
    """Bytes per GPU: weights, gradients and optimizer state (fp32) of what trains, and the
    activations of one micro-batch."""
    return {"weights": params * weight_bytes, "gradients": trained * 4.0,
            "optimizer_state": trained * 4.0 * state_buffers(optim_cfg),
            "activations": float(activation_bytes)}
