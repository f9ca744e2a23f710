"""What only a GPU can show, in one short run (under 10 minutes on one H100-class GPU):

    python scripts/gpu_check.py [--out results/bench] [--steps 200]
    python scripts/gpu_check.py --device cpu --quick      (the same code on toy sizes: a test)

1. `fused`: every optimizer with a compiled kernel, on bf16 GPT-2-small-shaped parameters, run
   for a few steps with fused=True and with its default path from the same state: the share of
   weights that differ beyond bf16 rounding, and the largest difference (the kernels must agree
   on the device, in bf16, up to rounding).
2. `optimizer_steps`: scripts/bench_optim.py on the device (elementwise optimizers against fused
   AdamW, the Muon family and SMuon's selection at GPT-2-small shapes), its report beside this one.
3. `cells`: one paper-preset cell each of s3_spikes (gpt2_124m, S3) and smuon_gpt (gpt2_modded,
   SMuon) through the real harness (compiled, bf16) for `--steps` steps on a synthetic corpus
   in the prepared format (uniform random GPT-2 token ids: the throughput is the model's, the
   loss means nothing): tokens/s over the second half of the steps and MFU against the
   vendor's bf16 peak and against a large matmul measured here.
4. `ddp`: with more than one GPU, the s3_spikes cell again with torchrun on every GPU.

Writes <out>/gpu_check_<device>.json (command, commit, device, torch) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_loop import gpt_flops_per_token, matmul_peak  # noqa: E402
from scripts.bench_optim import block_shapes, make_params, provenance  # noqa: E402
from sweeps.compose import Composer  # noqa: E402
from sweeps.plan import GPUS  # noqa: E402
from tasks import run  # noqa: E402
from tasks.train import store  # noqa: E402
from tasks.train.assemble import build_run  # noqa: E402


def fused_optimizers() -> list[str]:
    """Every optimizer with a compiled kernel, from the registry (optim.REGISTRY)."""
    from optim import REGISTRY

    return [spec.name for spec in REGISTRY if spec.fused]


# (table, preset, optimizer, corpus) of the paper-preset cells
CELLS = {"s3_spikes": ("gpt2_124m", "s3", "openwebtext"),
         "smuon_gpt": ("gpt2_modded", "smuon", "fineweb")}


def fused_agreement(device: torch.device, quick: bool, steps: int = 5) -> dict:
    """max |θ_fused − θ_default| / max |θ| after `steps` steps, per optimizer, bf16 weights."""
    from optim import BY_NAME

    shapes = block_shapes(1, 64) if quick else block_shapes(12, 768)
    out = {}
    for spec in (BY_NAME[name] for name in fused_optimizers()):
        finals = []
        for fused in (False, True):
            params = [torch.nn.Parameter(p.detach().to(torch.bfloat16))
                      for p in make_params(shapes, device)]
            opt = spec.cls(params, **{**spec.example, "fused": fused})
            for step in range(steps):
                gen = torch.Generator(device=device).manual_seed(step)
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen, device=device).to(p.dtype)
                opt.step()
            finals.append(torch.cat([p.detach().float().reshape(-1) for p in params]))
        diff = (finals[1] - finals[0]).abs()
        # a sign method turns a rounding difference in a near-zero momentum into a whole step
        # of lr, in that element only: the share of elements beyond bf16 rounding says more
        # than the largest difference
        beyond = diff > finals[0].abs() * 2.0**-7 + 1e-12
        out[spec.name] = {"max_diff_over_max_weight": float(diff.max()
                                                            / finals[0].abs().max()),
                          "elements_beyond_bf16_rounding": float(beyond.float().mean())}
        print(f"  {spec.name:16s} fused vs default, bf16: "
              f"{out[spec.name]['elements_beyond_bf16_rounding']:.2e} of the elements differ "
              f"beyond rounding (largest: {out[spec.name]['max_diff_over_max_weight']:.2e} "
              f"of max |θ|)", flush=True)
    return out


def optimizer_steps(device: torch.device, quick: bool, out: Path) -> dict:
    """scripts/bench_optim.py on this device; its report lands beside this one."""
    size = ["--blocks", "1", "--width", "64", "--reps", "2", "--only", "s3,s3_fused,muon"] \
        if quick else ["--rounds", "2"]
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_optim.py"), "--device", device.type,
           "--out", str(out), "--name", "gpu_check_optim", *size]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / f"gpu_check_optim_{device.type}.json").read_text())


def synthetic_corpus(root: Path, corpus: str, tokens: int, vocab: int = 50257) -> None:
    """Random token ids in the prepared format (train.bin, val.bin, meta.json)."""
    folder = root / corpus
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", tokens), ("val", max(tokens // 10, 4096))):
        rng.integers(0, vocab, n, dtype=np.uint16).tofile(folder / f"{split}.bin")
    store.write_json(folder / "meta.json", {"corpus": corpus, "tokenizer": "synthetic",
                                            "vocab_size": vocab})


def cell_overrides(preset: str, optimizer: str, steps: int, quick: bool) -> list[str]:
    common = [f"task={preset}", f"optim={optimizer}", f"steps={steps}", "log_every=10",
              f"eval_every={steps}", "checkpoint_every=0", "progress=false", "task.eval_batches=2"]
    if quick:  # a toy GPT of the same code path, eager and fp32 on the CPU
        return [*common, "task.model.n_layer=1", "task.model.n_embd=64", "task.model.n_head=2",
                "task.model.block_size=64", "task.batch_size=2", "task.compile=false",
                "precision=fp32", "grad_accum=1", "device=cpu"]
    return [*common, "precision=bf16", "grad_accum=4", "device=cuda"]


def paper_cell(name: str, steps: int, quick: bool, device: torch.device, data_root: Path,
               runs_root: Path) -> dict:
    preset, optimizer, corpus = CELLS[name]
    overrides = [*cell_overrides(preset, optimizer, steps, quick), f"data_root={data_root}",
                 f"runs_root={runs_root}"]
    cfg = OmegaConf.create(Composer().resolve(overrides))
    t0 = time.perf_counter()
    summary = run(cfg)
    rows = [r for r in store.MetricsLog(Path(summary["run_dir"]) / "metrics.jsonl").read()
            if "tokens_per_s" in r]
    later = [r["tokens_per_s"] for r in rows[len(rows) // 2:]]  # compile and warm-up excluded
    tokens_per_s = float(np.median(later))
    task = build_run(cfg)[0]
    flops_per_token = gpt_flops_per_token(task.model)
    achieved = tokens_per_s * flops_per_token
    measured_peak = matmul_peak(device, torch.bfloat16 if not quick else torch.float32)
    vendor = next((peaks[0] for gpu, peaks in GPUS.items()
                   if device.type == "cuda" and gpu.replace("-", " ") in
                   torch.cuda.get_device_name().lower()), None)
    result = {"overrides": overrides[:-2], "status": summary["status"],
              "wall_s": round(time.perf_counter() - t0, 1),
              "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": flops_per_token,
              "mfu_vs_measured_matmul": round(achieved / measured_peak, 4),
              "mfu_vs_vendor_bf16_peak": round(achieved / vendor, 4) if vendor else None,
              "optimizer_step_s": summary.get("optimizer_step_s")}
    print(f"  {name}: {tokens_per_s:,.0f} tokens/s, MFU {result['mfu_vs_measured_matmul']:.1%} "
          f"of a measured matmul", flush=True)
    return result


def ddp_cell(steps: int, data_root: Path, runs_root: Path) -> dict:
    gpus = torch.cuda.device_count()
    preset, optimizer, _ = CELLS["s3_spikes"]
    overrides = [*cell_overrides(preset, optimizer, steps, False), f"grad_accum={4 * gpus}",
                 f"data_root={data_root}", f"runs_root={runs_root}"]
    cmd = ["torchrun", f"--nproc-per-node={gpus}", str(ROOT / "scripts" / "train.py"),
           *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    [metrics] = list(runs_root.glob("*/*/*/metrics.jsonl"))
    rows = [r for r in store.MetricsLog(metrics).read() if "tokens_per_s" in r]
    later = [r["tokens_per_s"] for r in rows[len(rows) // 2:]]
    return {"gpus": gpus, "tokens_per_s": round(float(np.median(later)), 1),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests, CPU)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available here (use --device cpu --quick "
                     "to check the script itself)")
    if args.steps < 20:
        parser.error(f"--steps must be >= 20 (tokens/s are read from the second half), got "
                     f"{args.steps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.name = "gpu_check"
    report = {"provenance": provenance(args)}
    print("1. fused kernels against the default path (bf16):", flush=True)
    report["fused"] = fused_agreement(device, args.quick)
    print("2. optimizer steps (scripts/bench_optim.py):", flush=True)
    report["optimizer_steps"] = optimizer_steps(device, args.quick, out)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        for _, _, corpus in CELLS.values():
            synthetic_corpus(data_root, corpus, tokens=2_000_000 if args.quick else 50_000_000)
        print("3. paper-preset cells (synthetic tokens):", flush=True)
        report["cells"] = {name: paper_cell(name, args.steps, args.quick, device, data_root,
                                            Path(tmp) / "runs" / name) for name in CELLS}
        if device.type == "cuda" and torch.cuda.device_count() > 1:
            print("4. data-parallel cell (torchrun):", flush=True)
            report["ddp"] = ddp_cell(args.steps, data_root, Path(tmp) / "runs-ddp")
    path = out / f"gpu_check_{device.type}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
