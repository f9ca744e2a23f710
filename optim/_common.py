"""Pieces every optimizer here shares: argument checks, fp32 working tensors for low-precision
parameters, and the auxiliary AdamW that matrix optimizers use for non-matrix parameters."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch.distributed.tensor import DTensor
from torch.optim.adam import adam as torch_adam

from optim._dtensor import local, shard_of, whole_of
from optim._fused import DeviceScalars, Kernel, flat, recompile_limit

LOW_PRECISION = (torch.bfloat16, torch.float16)


def require(ok: bool, name: str, value, rule: str) -> None:
    """Raise ValueError naming the argument, its value and the rule it breaks."""
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (must be {rule})")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


# The one rule for each of these values: every optimizer's constructor checks its own with
# them, and the run config checks them with the same functions for torch.optim's classes too.
def check_lr_wd(lr, weight_decay, prefix: str = "") -> None:
    """`prefix` names the keys as the caller knows them (the run config: "optim.")."""
    require(_finite(lr) and lr > 0, f"{prefix}lr", lr, "a finite number > 0")
    require(_finite(weight_decay) and weight_decay >= 0, f"{prefix}weight_decay", weight_decay,
            "a finite number >= 0")


def check_beta(name: str, beta) -> None:
    require(_finite(beta) and 0.0 <= beta < 1.0, name, beta, "a number in [0, 1)")


def check_betas(name: str, betas, length: int) -> None:
    require(isinstance(betas, (list, tuple)) and len(betas) == length, name, betas,
            f"a list of {length} numbers in [0, 1)")
    for i, beta in enumerate(betas):
        check_beta(f"{name}[{i}]", beta)


class Batch:
    """A group's parameters that have gradients, as fp32 working tensors.

    `params` are the tensors to update (fp32 copies for low-precision parameters), `grads` their
    fp32 gradients; `commit()` writes the copies back. Buffers named in `buffers` are created
    zero-filled (in the working dtype) in each parameter's state on first use.

    Parameters sharded by FSDP2 (DTensors) are worked on through this rank's shard: an
    elementwise update of the shard is the update of the whole, and the state is the shard's.
    An update that needs whole matrices (the Muon family) gathers them with `whole` and keeps
    its own rows with `own`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict, buffers=()):
        self.optimizer = optimizer
        self.group = group
        self.originals = [p for p in group["params"] if p.grad is not None]
        for p in self.originals:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
        self.low = [p.dtype in LOW_PRECISION for p in self.originals]
        self.params = [local(p.detach()).float() if low else local(p.detach())
                       for p, low in zip(self.originals, self.low)]
        self.grads = [local(p.grad).float() if low else local(p.grad)
                      for p, low in zip(self.originals, self.low)]
        self.states = [optimizer.state[p] for p in self.originals]
        for p, st in zip(self.params, self.states):
            if "step" not in st:
                st["step"] = 0
                for name in buffers:
                    st[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["step"] += 1
        self.buffers = {name: [st[name] for st in self.states] for name in buffers}

    def __len__(self):
        return len(self.params)

    def scalar(self, key, value, dtype=torch.float32) -> torch.Tensor:
        """`value` as a 0-d tensor on the parameters' device, in the slot `key` of this group
        (optim/_fused.py DeviceScalars: refilled in place, no host synchronization)."""
        slots = self.optimizer.__dict__.setdefault("device_scalars", DeviceScalars())
        return slots.get((id(self.group), key), value, self.params[0], dtype)

    def scratch(self, slot: int = 0) -> list[torch.Tensor]:
        """Temporary tensors shaped like the working params, for in-place foreach math.

        On CPU they persist in the optimizer (not in its state_dict): freshly allocated
        parameter-sized tensors cost a page fault per 4 KiB there, which made out-of-place
        foreach updates ~5x slower than in-place ones. On accelerators the caching allocator
        makes fresh tensors free, so nothing extra is kept.
        """
        cache = self.optimizer.scratch_buffers
        out = []
        for orig, work in zip(self.originals, self.params):
            if work.device.type != "cpu":
                out.append(torch.empty_like(work))
                continue
            buffers = cache.setdefault(orig, [])
            while len(buffers) <= slot:
                buffers.append(torch.empty_like(work))
            out.append(buffers[slot])
        return out

    def copy_into(self, slot: int, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """scratch(slot) filled with a copy of `tensors`."""
        out = self.scratch(slot)
        torch._foreach_copy_(out, tensors)
        return out

    def decay(self, lr: float, weight_decay: float) -> None:
        """Decoupled weight decay: θ ← θ·(1 − lr·λ)."""
        if weight_decay and self.params:
            torch._foreach_mul_(self.params, 1.0 - lr * weight_decay)

    def commit(self) -> None:
        for orig, work, low in zip(self.originals, self.params, self.low):
            if low:
                local(orig.detach()).copy_(work)

    def whole(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-parameter tensors (shards, when the parameters are sharded) as whole tensors:
        gathered from every rank, as torchtitan's and Moonlight's Muon do."""
        return [whole_of(t, p) if isinstance(p, DTensor) else t
                for p, t in zip(self.originals, tensors)]

    def own(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's shard of whole per-parameter tensors (the inverse of `whole`; every rank
        holds the same whole tensor, so nothing is communicated)."""
        return [shard_of(t, p).to_local() if isinstance(p, DTensor) else t
                for p, t in zip(self.originals, tensors)]


def closure_loss(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# ---------------------------------------------------------------- auxiliary AdamW

AUX_DEFAULTS = {"aux_lr": 3e-4, "aux_betas": (0.9, 0.95), "aux_eps": 1e-10,
                "aux_weight_decay": 0.0}


def split_matrix_groups(params, aux: dict) -> list[dict]:
    """Turn params / param groups into matrix groups and aux groups (`use_matrix`).

    Groups that say `use_matrix` (as optim.param_groups makes them) keep it; others are split:
    tensors of two or more dimensions are matrices, the rest go to the aux AdamW. Aux groups get
    the aux hyperparameters unless they set their own lr/betas/eps/weight_decay.
    """
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    out = []
    for group in groups:
        group = dict(group)
        group["params"] = list(group["params"])
        if "use_matrix" not in group:
            matrices = [p for p in group["params"] if p.ndim >= 2]
            others = [p for p in group["params"] if p.ndim < 2]
            if matrices:
                out.append({**group, "params": matrices, "use_matrix": True})
            if others:
                out.append({**group, "params": others, "use_matrix": False})
            continue
        out.append(group)
    for group in out:
        if not group["use_matrix"]:
            group.setdefault("lr", aux["aux_lr"])
            group.setdefault("betas", tuple(aux["aux_betas"]))
            group.setdefault("eps", aux["aux_eps"])
            group.setdefault("weight_decay", aux["aux_weight_decay"])
        else:
            for p in group["params"]:
                require(p.ndim >= 2, "params", tuple(p.shape),
                        "matrices (ndim >= 2) in a use_matrix group")
    return out


def check_aux(aux: dict) -> None:
    require(aux["aux_lr"] >= 0, "aux_lr", aux["aux_lr"], ">= 0")
    for i, b in enumerate(aux["aux_betas"]):
        check_beta(f"aux_betas[{i}]", b)
    require(aux["aux_eps"] >= 0, "aux_eps", aux["aux_eps"], ">= 0")
    require(aux["aux_weight_decay"] >= 0, "aux_weight_decay", aux["aux_weight_decay"], ">= 0")


def aux_adamw_step(optimizer: torch.optim.Optimizer, group: dict) -> None:
    """torch's own AdamW math (foreach) on an aux group, on fp32 working tensors."""
    b = Batch(optimizer, group, buffers=("exp_avg", "exp_avg_sq"))
    if not len(b):
        return
    for st in b.states:  # torch's step counters live on the host by design (no sync)
        if "aux_step" not in st:
            st["aux_step"] = torch.tensor(0.0)
    steps = [st["aux_step"] for st in b.states]
    beta1, beta2 = group["betas"]
    torch_adam(b.params, b.grads, b.buffers["exp_avg"], b.buffers["exp_avg_sq"], [], steps,
               foreach=None, decoupled_weight_decay=True, amsgrad=False, beta1=beta1,
               beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
               eps=group["eps"], maximize=False)
    b.commit()


def muon_scale(shape) -> float:
    """Muon's rectangular correction sqrt(max(1, rows/cols)) of the flattened 2-D shape."""
    rows = shape[0]
    cols = math.prod(shape[1:])
    return math.sqrt(max(1.0, rows / cols))


class ElementwiseOptimizer(torch.optim.Optimizer):
    """The step every elementwise optimizer here shares. A subclass names its state buffers and
    writes `_kernel_step(group, batch)`, which calls `run_kernel` with its `Kernel`: the update
    of one tensor, the optimizer's one definition of its equations (optim/_fused.py):

        kernel(param, grad, *buffers, lr, ...)    θ ← θ·(1 − lr·λ) − lr·d, state updated

    `fused=True` in a group runs the kernel compiled, otherwise eagerly. A subclass may also
    write `_direction(group, batch)` (foreach ops returning d) where a benchmark shows the eager
    kernel too slow; `fused=False` then takes that path, and tests hold it equal to the kernel.
    `reference = True` (tests) runs the eager kernel even there.
    """

    buffers: tuple[str, ...] = ()
    reference = False
    # FSDP2 may shard its parameters: an elementwise update of a shard is that of the whole
    # (a subclass with statistics pooled over whole tensors or element positions says False)
    shardable = True

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self.scratch_buffers: dict = {}  # Batch.scratch's CPU work tensors, per parameter

    def _buffers(self, group: dict) -> tuple[str, ...]:
        return self.buffers

    @classmethod
    def has_foreach_path(cls) -> bool:
        return cls._direction is not ElementwiseOptimizer._direction or \
            cls._foreach_update is not ElementwiseOptimizer._foreach_update

    def _direction(self, group: dict, b: Batch) -> list[torch.Tensor]:
        raise NotImplementedError

    def _kernel_step(self, group: dict, b: Batch) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            b = Batch(self, group, buffers=self._buffers(group))
            if not len(b):
                continue
            if group.get("fused") or self.reference or not self.has_foreach_path():
                self._kernel_step(group, b)
            else:
                self._foreach_update(group, b)
            b.commit()
        return loss

    def _foreach_update(self, group: dict, b: Batch) -> None:
        direction = self._direction(group, b)
        b.decay(group["lr"], group["weight_decay"])
        torch._foreach_add_(b.params, direction, alpha=-group["lr"])

    @staticmethod
    def run_kernel(kernel: Kernel, group: dict, b: Batch, buffers: tuple[str, ...], scalars=(),
                   per_tensor=None, **static) -> None:
        """kernel(param, grad, *buffers, lr, *scalars, *per_tensor(i), weight_decay=…,
        **static) on every tensor of the batch, compiled if the group says `fused`; lr and
        `scalars` are 0-d tensors shared by all tensors."""
        fused = bool(group.get("fused"))
        run = kernel.compiled() if fused else kernel
        shared = [b.scalar("lr", group["lr"]), *scalars]
        with recompile_limit() if fused else contextlib.nullcontext():
            for i, (param, grad) in enumerate(zip(b.params, b.grads)):
                tensors = [flat(param), flat(grad), *(flat(b.buffers[n][i]) for n in buffers)]
                extra = per_tensor(i) if per_tensor is not None else ()
                run(*tensors, *shared, *extra, weight_decay=group["weight_decay"], **static)


def per_step_scalars(b: Batch, values: Callable[[int], list[float]]) -> Callable:
    """A run_kernel `per_tensor`: 0-d tensors of values(step) for each tensor's own step (bias
    corrections and the like), made once per distinct step (usually one)."""
    cache = {}

    def per_tensor(i: int) -> list[torch.Tensor]:
        step = b.states[i]["step"]
        if step not in cache:  # the k-th distinct step of this call fills slots (k, j)
            cache[step] = [b.scalar(("per_step", len(cache), j), v)
                           for j, v in enumerate(values(step))]
        return cache[step]

    return per_tensor
