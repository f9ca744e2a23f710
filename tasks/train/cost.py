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


def state_buffers(optim_cfg: dict) -> int:
    """fp32 state buffers per trained parameter of the run's optimizer, from the registry (2,
    as Adam, for one not listed); the Muon family's aux AdamW counts as its main update."""
    name = str(optim_cfg.get("_target_", "")).rsplit(".", 1)[-1]
    return registry.STATE_BUFFERS.get(name, 2)


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


def training_memory(params: int, trained: int, activation_bytes: float,
                    weight_bytes: float = 4.0) -> dict:
    """Bytes per GPU of the weights, the fp32 gradients of what trains and the activations of
    one micro-batch; the optimizer's state is added by whoever knows the optimizer."""
    return {"weights": params * weight_bytes, "gradients": trained * 4.0,
            "activations": float(activation_bytes)}
