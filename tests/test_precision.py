"""Emulated FP8 (StoSignSGD's setting) for any optimizer, and the claim it is about: AdamW's
second moment underflows in FP8 while a max-based state survives."""

import math

import pytest
import torch

import optim
from tasks import run
from tasks.train import checkpoint
from tasks.train.precision import (
    E2M1_GRID,
    Precision,
    round_mxfp4,
    round_state_e4m3,
    round_through,
)
from tests.conftest import TINY, compose_cfg


def representable(t, dtype, scale=1.0):
    return torch.equal(t, (t / scale).to(dtype).to(t.dtype) * scale)


def test_rounding_lands_on_fp8_values():
    t = torch.randn(1000) * 3
    round_through(t, torch.float8_e5m2)
    assert representable(t, torch.float8_e5m2)
    s = torch.randn(1000) * 1e-3
    round_state_e4m3(s)
    assert s.abs().max() > 0
    assert representable(s, torch.float8_e4m3fn, s.abs().max() / 448)


def heavy_range_grads(n=2000, step=0):
    """Each coordinate keeps its own gradient scale, the scales spread over four decades (as
    across a network's coordinates); signs change from step to step."""
    magnitude = 10 ** (-4 * torch.rand(n, generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1 + step)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return magnitude * sign


@pytest.mark.parametrize("make,state_key,underflows", [
    (lambda ps: torch.optim.AdamW(ps, lr=1e-3), "exp_avg_sq", True),
    (lambda ps: optim.StoSignSGD(ps, lr=1e-3), "envelope", False),
])
def test_second_moment_underflows_in_fp8_but_the_max_envelope_survives(make, state_key,
                                                                       underflows):
    p = torch.nn.Parameter(torch.zeros(2000, dtype=torch.bfloat16))
    opt = make([p])
    fp8 = Precision("fp8_emulated", torch.device("cpu"))
    for step in range(3):
        p.grad = heavy_range_grads(step=step).to(torch.bfloat16)
        fp8.after_backward([p])
        opt.step()
        fp8.after_step(opt)
    zero_share = (opt.state[p][state_key] == 0).float().mean().item()
    if underflows:
        assert zero_share > 0.3  # a third of the coordinates lost their second moment
    else:
        assert zero_share == 0.0


def test_fp8_emulated_run_keeps_bf16_master_weights_and_fp8_state(tmp_path):
    cfg = compose_cfg([*TINY, "precision=fp8_emulated", "optim=stosignsgd", "steps=10",
                       "eval_every=10"], runs_root=tmp_path)
    summary = run(cfg)
    assert summary["status"] in ("completed", "diverged")
    ckpt = checkpoint.load(next(tmp_path.glob("*/*/*/ckpt.pt")))
    assert all(v.dtype == torch.bfloat16 for v in ckpt["model"].values()
               if v.is_floating_point())
    envelope = [s["envelope"] for s in ckpt["optimizer"]["state"].values() if "envelope" in s]
    assert envelope and all(representable(e, torch.float8_e4m3fn, e.abs().max() / 448)
                            for e in envelope if e.abs().max() > 0)


def test_fp32_compute_keeps_master_weights_on_bf16_values(tmp_path):
    """precision.compute=fp32 (CPUs without bf16 units): fp32 storage, but every weight is a bf16
    value after every step, and the state is still FP8."""
    cfg = compose_cfg([*TINY, "precision=fp8_emulated", "precision.compute=fp32",
                       "optim=adamw", "steps=6", "eval_every=6"], runs_root=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "completed"
    ckpt = checkpoint.load(next(tmp_path.glob("*/*/*/ckpt.pt")))
    weights = [v for v in ckpt["model"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 for v in weights)
    assert all(representable(v, torch.bfloat16) for v in weights)
    second = [s["exp_avg_sq"] for s in ckpt["optimizer"]["state"].values()]
    assert second and all(representable(e, torch.float8_e4m3fn, e.abs().max() / 448)
                          for e in second if e.abs().max() > 0)


def test_unknown_compute_dtype_is_rejected_naming_the_choices():
    with pytest.raises(ValueError, match=r"precision.compute must be one of \['bf16', 'fp32'\], "
                                         r"got 'fp16'"):
        Precision("fp8_emulated", torch.device("cpu"), compute="fp16")


def on_mxfp4_grid(t: torch.Tensor) -> bool:
    """Every block of 32 is a power of two times E2M1 values, and the block's largest value/scale
    lies in [4, 6] (its scale from the block's amax)."""
    grid = torch.tensor(E2M1_GRID)
    for block in t.reshape(-1).float().split(32):
        amax = block.abs().max()
        if amax == 0:
            continue
        scale = 2.0 ** (torch.floor(torch.log2(amax)) - 2)
        if not torch.isin((block.abs() / scale), grid).all():
            return False
    return True


def test_mxfp4_rounding_is_the_nearest_e2m1_value_of_each_block():
    """Hand-worked: block amax 5.0 → scale 2^(2−2) = 1; 2.6 → 3, 2.4 → 2, 0.2 → 0, 0.3 → 0.5,
    5.0 → 4 (ties 5 between 4 and 6 go up: 6), 7 → 6 (clamped); a second block of tiny values
    gets its own scale."""
    block = torch.zeros(32)
    block[:6] = torch.tensor([2.6, -2.4, 0.2, 0.3, 4.9, -1.3])
    block[6] = 5.0
    small = torch.full((32,), 1e-3)
    small[0] = -3e-3
    t = torch.cat([block, small])
    round_mxfp4(t)
    assert t[:7].tolist() == [3.0, -2.0, 0.0, 0.5, 4.0, -1.5, 6.0]
    scale = 2.0 ** (math.floor(math.log2(3e-3)) - 2)  # 2^-11: 3e-3 / scale ≈ 6.1 → 6
    assert t[32] == pytest.approx(-6 * scale) and t[33] == pytest.approx(2 * scale)
    assert on_mxfp4_grid(t)


def test_fp4_emulated_run_keeps_bf16_master_weights_and_fp4_state(tmp_path):
    cfg = compose_cfg([*TINY, "precision=fp4_emulated", "precision.compute=fp32",
                       "optim=stosignsgd", "steps=6", "eval_every=6"], runs_root=tmp_path)
    summary = run(cfg)
    assert summary["status"] in ("completed", "diverged")
    ckpt = checkpoint.load(next(tmp_path.glob("*/*/*/ckpt.pt")))
    weights = [v for v in ckpt["model"].values() if v.is_floating_point()]
    assert all(representable(w, torch.bfloat16) for w in weights)
    states = [v for s in ckpt["optimizer"]["state"].values() for v in s.values()
              if torch.is_tensor(v) and v.is_floating_point() and v.numel() > 1]
    assert states and all(on_mxfp4_grid(v) for v in states)
