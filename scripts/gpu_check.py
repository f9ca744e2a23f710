"""What only a GPU can show, in one short run that fits its time budget (`--budget-s`, 8
minutes by default, so a short device window still yields numbers):

    python scripts/gpu_check.py [--out results/bench] [--steps 200] [--budget-s 480]
    python scripts/gpu_check.py --device cpu --quick      (the same code on toy sizes: a test)

0. `smoke` (about a minute): the device, a bf16 matmul's FLOP/s, and one step of every
   optimizer in the registry on a small model: what a device window of any length shows.
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

Writes <out>/gpu_check_<device>.json (command, commit, device, torch) after every section,
so what was measured survives a budget that ends or a job that is killed: `complete` says
whether every section ran, `budget` what was cut and why. A section runs only while the budget
lasts, and one that overruns it is stopped there (its finished items are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


class BudgetOver(Exception):
    """The check's time budget ended inside a section."""


class Budget:
    """The seconds the check may take; a section is cut where they end (SIGALRM), so the
    report holds every item finished before."""

    def __init__(self, seconds: float, sections: tuple[str, ...]):
        self.deadline = time.monotonic() + seconds
        self.sections = sections  # every section this check means to run
        self.cut: dict[str, str] = {}  # section → why it did not finish

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise BudgetOver(f"the budget ended before {what}")

    def run(self, name: str, section, report: dict, path: Path) -> None:
        """report[name] = section(partial) (a dict it fills item by item), cut at the
        deadline; the report is written after it whatever happened."""
        partial: dict = {}
        report[name] = partial
        try:
            if self.left() <= 1:
                raise BudgetOver("the budget ended before the section")
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(max(int(self.left()), 1))
            try:
                section(partial)
            finally:
                signal.alarm(0)
        except BudgetOver as e:
            self.cut[name] = str(e)
            print(f"  {name}: cut, {e}", flush=True)
        write_report(report, self, path)


def _alarm(signum, frame):
    raise BudgetOver("the budget ended during the section")


def write_report(report: dict, budget: Budget, path: Path) -> None:
    report["complete"] = not budget.cut and all(name in report for name in budget.sections)
    report["budget"] = {"cut": dict(budget.cut),
                        "not_reached": [n for n in budget.sections if n not in report]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)  # a reader never sees half a report


def multi_gpu() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def smoke(device: torch.device, quick: bool, out: dict, budget: Budget) -> None:
    """The device, a bf16 matmul's FLOP/s and one step of every registered optimizer."""
    import optim

    out["device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                     else "cpu")
    n = 512 if quick else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b  # warm-up: library load, autotuning
    _sync(device)
    t0 = time.perf_counter()
    reps = 3 if quick else 20
    for _ in range(reps):
        a @ b
    _sync(device)
    out["bf16_matmul_tflops"] = float(f"{2 * n**3 * reps / (time.perf_counter() - t0) / 1e12:.4g}")
    print(f"  {out['device']}: bf16 matmul {out['bf16_matmul_tflops']} TFLOP/s", flush=True)
    steps = out.setdefault("optimizer_step", {})
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32), torch.nn.Linear(32, 32),
                                torch.nn.Linear(32, 64)).to(device)
    idx = torch.randint(0, 64, (16,), device=device)
    for spec in optim.REGISTRY:
        budget.check(f"the step of {spec.name}")
        try:
            opt = spec.cls(optim.param_groups(model, optim.is_matrix_optimizer(spec.cls)),
                           **spec.example)
            if hasattr(opt, "attach"):
                opt.attach(model)
            loss = torch.nn.functional.cross_entropy(model[2](model[1](model[0](idx))), idx)
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            _sync(device)
            steps[spec.name] = {"ok": True, "s": round(time.perf_counter() - t0, 4)}
        except Exception as e:  # the smoke reports every optimizer, whichever fails
            steps[spec.name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        model.zero_grad(set_to_none=True)
    failed = [k for k, v in steps.items() if not v["ok"]]
    print(f"  one step of each of {len(steps)} optimizers: "
          + (f"FAILED {failed}" if failed else "all ran"), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fused_optimizers() -> list[str]:
    """Every optimizer with a compiled kernel, from the registry (optim.REGISTRY)."""
    from optim import REGISTRY

    return [spec.name for spec in REGISTRY if spec.fused]


# (table, preset, optimizer, corpus) of the paper-preset cells
CELLS = {"s3_spikes": ("gpt2_124m", "s3", "openwebtext"),
         "smuon_gpt": ("gpt2_modded", "smuon", "fineweb")}


def fused_agreement(device: torch.device, quick: bool, out: dict, budget: Budget,
                    steps: int = 5) -> None:
    """max |θ_fused − θ_default| / max |θ| after `steps` steps, per optimizer, bf16 weights."""
    from optim import BY_NAME

    shapes = block_shapes(1, 64) if quick else block_shapes(12, 768)
    for spec in (BY_NAME[name] for name in fused_optimizers()):
        budget.check(f"the fused kernel of {spec.name}")
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


def optimizer_steps(device: torch.device, quick: bool, out: Path, into: dict,
                    budget: Budget) -> None:
    """scripts/bench_optim.py on this device; its report lands beside this one."""
    size = ["--blocks", "1", "--width", "64", "--reps", "2", "--only", "s3,s3_fused,muon"] \
        if quick else ["--rounds", "2"]
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_optim.py"), "--device", device.type,
           "--out", str(out), "--name", "gpu_check_optim", *size]
    try:
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=max(budget.left(), 1))
    except subprocess.TimeoutExpired as e:
        raise BudgetOver("the budget ended during scripts/bench_optim.py") from e
    into.update(json.loads((out / f"gpu_check_optim_{device.type}.json").read_text()))


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
              # the plan's MFU for runs of this task on this GPU (sweeps/plan.py measured_mfu)
              "task_target": str(cfg.task["_target_"]),
              "wall_s": round(time.perf_counter() - t0, 1),
              "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": flops_per_token,
              "mfu_vs_measured_matmul": round(achieved / measured_peak, 4),
              "mfu_vs_vendor_bf16_peak": round(achieved / vendor, 4) if vendor else None,
              "optimizer_step_s": summary.get("optimizer_step_s")}
    print(f"  {name}: {tokens_per_s:,.0f} tokens/s, MFU {result['mfu_vs_measured_matmul']:.1%} "
          f"of a measured matmul", flush=True)
    return result


def ddp_cell(steps: int, data_root: Path, runs_root: Path, budget: Budget) -> dict:
    gpus = torch.cuda.device_count()
    preset, optimizer, _ = CELLS["s3_spikes"]
    overrides = [*cell_overrides(preset, optimizer, steps, False), f"grad_accum={4 * gpus}",
                 f"data_root={data_root}", f"runs_root={runs_root}"]
    cmd = ["torchrun", f"--nproc-per-node={gpus}", str(ROOT / "scripts" / "train.py"),
           *overrides]
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=max(budget.left(), 1))
    except subprocess.TimeoutExpired as e:
        raise BudgetOver("the budget ended during the torchrun cell") from e
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
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="seconds the whole check may take; sections past it are cut and "
                             "the report says so (default 480)")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available here (use --device cpu --quick "
                     "to check the script itself)")
    if args.steps < 20:
        parser.error(f"--steps must be >= 20 (tokens/s are read from the second half), got "
                     f"{args.steps}")
    if not args.budget_s > 0:
        parser.error(f"--budget-s must be > 0 seconds, got {args.budget_s}")
    budget = Budget(args.budget_s, ("smoke", "fused", "optimizer_steps", "cells")
                    + (("ddp",) if device.type == "cuda" and multi_gpu() else ()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.name = "gpu_check"
    path = out / f"gpu_check_{device.type}.json"
    report = {"provenance": provenance(args), "budget_s": args.budget_s}
    print("0. smoke: the device, a bf16 matmul, one step of every optimizer:", flush=True)
    budget.run("smoke", lambda into: smoke(device, args.quick, into, budget), report, path)
    print("1. fused kernels against the default path (bf16):", flush=True)
    budget.run("fused", lambda into: fused_agreement(device, args.quick, into, budget),
               report, path)
    print("2. optimizer steps (scripts/bench_optim.py):", flush=True)
    budget.run("optimizer_steps", lambda into: optimizer_steps(device, args.quick, out, into,
                                                               budget), report, path)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"

        def cells(into: dict) -> None:
            for _, _, corpus in CELLS.values():
                synthetic_corpus(data_root, corpus,
                                 tokens=2_000_000 if args.quick else 50_000_000)
            for name in CELLS:
                budget.check(f"the {name} cell")
                into[name] = paper_cell(name, args.steps, args.quick, device, data_root,
                                        Path(tmp) / "runs" / name)

        print("3. paper-preset cells (synthetic tokens):", flush=True)
        budget.run("cells", cells, report, path)
        if device.type == "cuda" and multi_gpu():
            print("4. data-parallel cell (torchrun):", flush=True)
            budget.run("ddp", lambda into: into.update(
                ddp_cell(args.steps, data_root, Path(tmp) / "runs-ddp", budget)), report, path)
    print(json.dumps({k: report[k] for k in ("complete", "budget")}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
