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
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tasks.train.base import Cost, evals_in_run


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


def image_classifier_cost(cfg: dict, build: Callable[[], torch.nn.Module], image_size: int,
                          eval_images: int, data: tuple) -> Cost:
    """Compute and memory of an image-classification run (`cfg` a resolved run config): one
    training batch traced on meta through cross-entropy, eval at a third of its FLOPs."""
    batch = cfg["task"]["batch_size"]
    params, flops, saved = trace_on_meta(
        build, lambda: (torch.zeros(batch, 3, image_size, image_size),
                        torch.zeros(batch, dtype=torch.long)),
        lambda model, x, y: F.cross_entropy(model(x), y))
    per_image = flops / batch
    train_images = cfg["steps"] * cfg["grad_accum"] * batch
    evals = evals_in_run(cfg["steps"], cfg["eval_every"])
    return Cost(params=params, trained_params=params, train_flops=per_image * train_images,
                eval_flops=per_image / 3 * evals * eval_images,
                memory_bytes=training_memory(params, params,
                                             saved * compute_bytes(cfg["precision"]) / 4),
                data=data, compute=compute_dtype(cfg["precision"]),
                basis=f"traced on meta: {per_image / 1e9:.3g} GFLOP per training image "
                      f"(forward + backward) at {image_size} px, eval = forward only")
