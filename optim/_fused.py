"""Elementwise kernels: each optimizer's update of one tensor, written once, eager or compiled.

An elementwise optimizer defines its update as a per-tensor function of plain tensor ops (a
`Kernel`). Called eagerly it is the reference; with `fused=True` the same function goes through
torch.compile and becomes ONE pass over memory per tensor, where eager or foreach ops make one
pass per operation (8-15 for S3, Adan or StoSignSGD: 6-12x torch's fused AdamW on this
project's CPU). Values that change from step to step (lr, bias corrections, the temperature,
noise keys) go in as 0-d tensors, never as Python numbers, so they never trigger a recompile;
hyperparameters fixed for a group (betas, eps, p, flags) are Python constants the kernel is
specialized on.

Where the eager kernel is much slower than foreach ops (results/bench/elementwise_paths_cpu.md),
an optimizer also keeps a foreach path for `fused=False`, tested equal to its kernel.

Two helpers keep expensive functions cheap inside a fused pass (both tested against exact math):
- `root(x, p)`: x^(1/p) without `pow` for S3's usual p (1, 2, 4 exactly; 3 by a division-free
  third-order iteration to fp32 rounding); other p through `pow`.
- `hash_uniform(shape, key)`: uniform noise as a counter-based hash of (element index, key),
  integer ops only, so eager, foreach and compiled paths draw the same noise
  (`hash_uniform_into`: the same numbers, in place, for the foreach paths).
"""

from __future__ import annotations

import torch

FLT_MIN = 1.17549435e-38  # smallest normal float32: the bit-level guess below needs normals
# variants of one kernel a process may compile (one per set of fixed hyperparameters); dynamo's
# default of 8 per function is too few for a sweep over p, betas or bases in one process
RECOMPILE_LIMIT = 64


class Kernel:
    """One tensor's update, written once in plain tensor ops. Called as is, it is the eager
    reference; `compiled()` is the same function through torch.compile (inductor: C++/OpenMP on
    CPU, Triton on GPU), which fuses it into one loop. Compiled once per process, on first use,
    with dynamic shapes, so one compiled kernel serves every tensor size."""

    def __init__(self, fn):
        self.fn = fn
        self._compiled = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def compiled(self):
        if self._compiled is None:
            # dynamic_threads: the C++ kernel picks its thread count per call; otherwise inductor
            # fixes it from the first call's size, and a small first tensor (a bias) made every
            # later call single-threaded
            # floating-point contraction: a·b + c as one FMA, as Triton does on GPU; inductor's
            # C++ default keeps them apart, and these kernels are bound by arithmetic on a CPU
            self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True, options={
                "cpp.dynamic_threads": True, "cpp.enable_floating_point_contract_flag": "fast"})
        return self._compiled


def recompile_limit():
    """A context in which dynamo may compile RECOMPILE_LIMIT variants per kernel (scoped, so
    the process-wide setting is left as it is)."""
    config = torch._dynamo.config
    return config.patch(recompile_limit=max(config.recompile_limit, RECOMPILE_LIMIT))


def flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view where the memory allows (one compiled variant for every size)."""
    return t.view(-1) if t.is_contiguous() else t


def apply_update(param, direction, lr, weight_decay: float) -> None:
    """θ ← θ·(1 − lr·λ) − lr·d inside a kernel (decoupled weight decay, as the foreach path)."""
    param.mul_(1.0 - lr * weight_decay).add_(direction * -lr)


class DeviceScalars:
    """Per-step values (lr, bias corrections, τ, noise keys) as 0-d tensors that live on the
    parameters' device and are refilled in place each step, so the compiled kernels see the same
    tensor every step (no recompiles) and no step waits on the host.

    `torch.tensor(value, device="cuda")` copies from pageable host memory: a blocking copy, a
    stream synchronization per value per step. `fill_(value)` is a kernel launch with the value
    as its argument; fills and the kernels that read them are ordered on one stream, so a later
    refill never changes what an earlier kernel reads.
    """

    def __init__(self):
        self._slots: dict = {}

    def get(self, key, value, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        slot = self._slots.get((key, like.device, dtype))
        if slot is None:
            slot = self._slots[(key, like.device, dtype)] = torch.zeros(
                (), dtype=dtype, device=like.device)
        return slot.fill_(value)


# ---------------------------------------------------------------- roots


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    """x^(1/3) for x ≥ 0: y ≈ x^(−1/3) from the float's bits (exponent · (−1/3), within 4.2%),
    then two third-order steps y ← y·(1 − e/3 + 2e²/9) with e = x·y³ − 1 (the series of
    (1 + e)^(−1/3); multiplications only, the error cubes each step: 4e-2 → 1e-3 → fp32
    rounding, 2.6e-7 relative), and x^(1/3) = x·y². Exact zeros stay zero (x·y² with a finite
    y); inputs under the smallest normal float32 (|g| < 5e-13 when x = |g|³) come out under
    its cube root, 2.3e-13, four orders of magnitude under any eps in use. Two cubic steps do
    the work of three Newton steps in fewer operations; on a 2-core CPU S3's step is bound by
    arithmetic, not memory, so every operation counts."""
    xf = x.float()
    bits = xf.clamp(min=FLT_MIN).view(torch.int32).to(torch.float32)
    y = (1420000908 - (bits * (1.0 / 3.0)).to(torch.int32)).view(torch.float32)
    for _ in range(2):
        e = (xf * y) * (y * y) - 1.0
        y = y + y * (e * (e * (2.0 / 9.0) - (1.0 / 3.0)))
    return (xf * y * y).to(x.dtype)


def root(x: torch.Tensor, p: float) -> torch.Tensor:
    """x^(1/p) for x ≥ 0 (p a Python constant)."""
    if p == 1:
        return x
    if p == 2:
        return x.sqrt()
    if p == 4:
        return x.sqrt().sqrt()
    if p == 3 and x.dtype != torch.float64:
        return _cbrt(x)
    return x.pow(1.0 / p)


def abs_pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """|x|^p (p a Python constant), by multiplication for small integer p."""
    a = x.abs()
    if p == 1:
        return a
    if p == 2:
        return a * a
    if p == 3:
        return a * a * a
    if p == 4:
        a2 = a * a
        return a2 * a2
    return a.pow(p)


# ---------------------------------------------------------------- noise


def _mix32(x: int) -> int:
    """A 32-bit integer hash (lowbias32, C. Wellons) on Python ints, for keys."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def noise_keys(seed: int, step: int, slot: int) -> tuple[int, int]:
    """Two 31-bit keys for tensor `slot` at `step`: every (seed, step, slot) its own stream."""
    k = _mix32(_mix32(_mix32(seed) ^ step) ^ (slot * 0x9E3779B1))
    return k & 0x7FFFFFFF, _mix32(k) & 0x7FFFFFFF


GOLDEN = -0x61C8864F  # 0x9E3779B1 (2^32 / the golden ratio, odd) as a signed 32-bit number


def _mix32_tensor(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors: multiplications wrap mod 2^32, shifts made logical by masks."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * -0x7B935975  # 0x846CA68B as a signed 32-bit number
    return x ^ ((x >> 16) & 0xFFFF)


def _mix32_(x: torch.Tensor, t: torch.Tensor) -> None:
    """`_mix32_tensor` in place: the same integer operations, in x, with t as scratch."""
    torch.bitwise_right_shift(x, 16, out=t)
    x.bitwise_xor_(t.bitwise_and_(0xFFFF))
    x.mul_(0x7FEB352D)
    torch.bitwise_right_shift(x, 15, out=t)
    x.bitwise_xor_(t.bitwise_and_(0x1FFFF))
    x.mul_(-0x7B935975)
    torch.bitwise_right_shift(x, 16, out=t)
    x.bitwise_xor_(t.bitwise_and_(0xFFFF))


HASH_CHUNK = 1 << 20  # elements per pass on the CPU: two int32 scratch chunks of 4 MiB


def hash_uniform_into(out: torch.Tensor, key1: int, key2: int,
                      scratch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """`hash_uniform(out, key1, key2)` written into the contiguous float32 `out`, bit for bit
    the same numbers, with no allocation: element positions are hashed a chunk at a time in
    the two int32 `scratch` tensors (of HASH_CHUNK elements on the CPU, where a fresh
    parameter-sized tensor costs a page fault per 4 KiB and the 27 integer passes stay in
    cache; as large as `out` on a GPU). The foreach paths of the stochastic sign methods use
    it; the kernels call `hash_uniform`."""
    flat = out.view(-1)
    x_all, t_all = scratch
    chunk = x_all.numel()
    for start in range(0, flat.numel(), chunk):
        n = min(chunk, flat.numel() - start)
        x, t = x_all[:n], t_all[:n]
        torch.arange(start, start + n, dtype=torch.int32, device=out.device, out=x)
        _mix32_(x.bitwise_xor_(key1), t)
        x.bitwise_xor_(key2).mul_(GOLDEN)
        torch.bitwise_right_shift(x, 8, out=t)
        piece = flat[start:start + n]
        piece.copy_(t.bitwise_and_(0xFFFFFF))
        piece.mul_(2.0 / 16777216.0).add_(1.0 / 16777216.0 - 1.0)
    return out


def hash_uniform(like: torch.Tensor, key1: torch.Tensor | int, key2: torch.Tensor | int):
    """u ~ U[−1, 1] shaped like `like`, in its dtype: the centred 24-bit grid ±(2k+1)/2^24 (as
    fine as torch.rand's fp32, and symmetric, so E[sign(d + D·u)] = d/D exactly on the grid),
    from an integer hash of (element index, keys): a round of lowbias32 on index ⊕ key1, then
    ⊕ key2 and a multiplication by an odd constant whose high 24 bits are kept (every step a
    bijection of the 32-bit index, so a stream is exactly uniform over 2^32 elements; 17
    integer operations an element, where a second lowbias32 round made 27: the noise is most
    of a compiled step's work on a CPU)."""
    index = torch.arange(like.numel(), dtype=torch.int32, device=like.device).view(like.shape)
    x = (_mix32_tensor(index ^ key1) ^ key2) * GOLDEN
    bits = ((x >> 8) & 0xFFFFFF).to(torch.float32)
    return (bits * (2.0 / 16777216.0) + (1.0 / 16777216.0 - 1.0)).to(like.dtype)
