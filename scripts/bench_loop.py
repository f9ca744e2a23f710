"""Training throughput of the harness against a plain hand-written PyTorch loop, same model,
same batch size, same optimizer, measured in the same process.

    python scripts/bench_loop.py [--steps 20] [--warmup 3] [--out results/bench] OVERRIDE...
    e.g.  python scripts/bench_loop.py task=cifar_tiny
          python scripts/bench_loop.py task=cifar10_resnet18 --steps 10   (needs the data)

The harness side is the real loop's step (`Trainer.train_step`: data sampling and on-device
augmentation, forward/backward, grad-norm clipping, optimizer and LR schedule). The plain side
trains a copy of the same model on one fixed, already-prepared batch: zero_grad, forward,
backward, step — nothing else. The ratio is harness / plain throughput (target ≥ 0.95).
For GPT tasks it also reports model FLOPs utilisation: nanoGPT's FLOPs-per-token estimate ×
throughput, over the FLOP/s of a large matmul in the run's compute dtype measured in this run.
"""

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.compose import Composer  # noqa: E402
from tasks.train.assemble import build_run  # noqa: E402
from tasks.train.environment import cpu_name, git_commit  # noqa: E402


def timed_pair(fns, steps: int, warmup: int, device) -> list[list[float]]:
    """Seconds per call of each fn, the fns interleaved step by step so that a slow spell of
    the machine hits both sides alike."""
    for i in range(warmup):
        for fn in fns:
            fn(i)
    times = [[] for _ in fns]
    for i in range(warmup, warmup + steps):
        for fn, out in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return times


def gpt_flops_per_token(model) -> float | None:
    """nanoGPT's estimate: 6·N for the matmuls (N without the position table) plus attention."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layer"):
        return None
    n = sum(p.numel() for p in model.parameters())
    if getattr(model, "wpe", None) is not None:
        n -= model.wpe.weight.numel()
    head = cfg.n_embd // cfg.n_head
    return 6 * n + 12 * cfg.n_layer * cfg.n_head * head * cfg.block_size


def matmul_peak(device, dtype) -> float:
    """FLOP/s of a large matmul in the run's compute dtype, measured here: the MFU reference."""
    n = 4096 if device.type == "cuda" else 1536
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = timed_pair([lambda _: a @ b], 5, 2, device)[0]
    return 2 * n**3 / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = Composer().compose(args.overrides)
    task, trainer, device = build_run(cfg)
    task.model.train()
    # the plain loop: the same run assembled again (same seed: same weights), stepped by hand
    plain_task, plain_trainer, _ = build_run(cfg)
    plain_model, plain_opt = plain_task.model, plain_trainer.optimizer
    batch = task.train_batch(0, 0)  # prepared once: the plain loop does no data work
    plain_model.train()
    autocast = trainer.precision.autocast

    def plain_step(_):
        plain_opt.zero_grad(set_to_none=True)
        with autocast:
            loss = task.loss(plain_model, batch)
        loss.backward()
        plain_opt.step()

    harness, plain = timed_pair([trainer.train_step, plain_step], args.steps, args.warmup,
                                device)
    per_step = task.tokens_per_batch * cfg.grad_accum
    h, p = statistics.median(harness), statistics.median(plain)
    unit = "images" if "cifar" in cfg.task.name else "tokens"
    flops_per_token = gpt_flops_per_token(task.model)
    mfu = {}
    if flops_per_token is not None:
        dtype = torch.float32 if cfg.precision.name == "fp32" else torch.bfloat16
        peak = matmul_peak(device, dtype)
        mfu = {"model_flops_per_token": flops_per_token, "matmul_peak_flops": peak,
               "mfu_harness": flops_per_token * per_step / h / peak,
               "mfu_plain": flops_per_token * per_step / p / peak}
    result = {
        **mfu,
        "task": cfg.task.name, "optim": cfg.optim.name, "precision": cfg.precision.name,
        "batch": per_step, "unit": unit, "harness_per_s": per_step / h,
        "plain_per_s": per_step / p, "ratio": p / h,
        "params": sum(q.numel() for q in task.model.parameters()),
        "command": "python " + " ".join(sys.argv),
        "commit": git_commit(),
        "device": (torch.cuda.get_device_name() if device.type == "cuda"
                   else f"{cpu_name()}, {torch.get_num_threads()} threads"),
        "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(),
        "steps_timed": args.steps,
    }
    print(f"{cfg.task.name} × {cfg.optim.name}: harness {result['harness_per_s']:.1f} {unit}/s, "
          f"plain loop {result['plain_per_s']:.1f} {unit}/s, ratio {result['ratio']:.3f}"
          + (f"; MFU {mfu['mfu_harness']:.3f} of a measured {dtype} matmul "
             f"({mfu['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)" if mfu else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"loop_{cfg.task.name}_{cfg.precision.name}_{device.type}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
