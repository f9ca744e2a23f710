"""Time one optimizer step of every optimizer against references measured in the same run.

    python scripts/bench_optim.py [--device cpu|cuda] [--blocks 12] [--width 768]
                                  [--muon-width W] [--matrix-blocks B] [--select-every 100]
                                  [--reps 5] [--rounds 1] [--out results/bench] [--name N]
                                  [--skip-matrix] [--only s3_fused,smuon,smuon_exact,...]

Elementwise optimizers run on GPT-2-small-shaped parameters (12 blocks of width 768, ~85M
parameters) and are reported as
- `vs_fused_adamw`: step time / torch's fused AdamW step time, the two timed alternately
  (the `adamw_fused` row, a second fused AdamW against the reference, shows the noise);
- `vs_bound`: step time / (bytes the update must read and write / measured bandwidth), the
  bandwidth being that of a large in-place tensor add timed in the same run.
Each of our elementwise optimizers is timed on each path: the default (`fused=False`), its eager
kernel where the default is a foreach path (`<name>_kernel`: these rows decide whether a foreach
path is worth keeping), and `fused=True` (the kernel compiled, one pass per tensor; compilation
happens in the warm-up calls, outside the timing).
Matrix optimizers (Muon family), on the same block shapes:
- against torch.optim.Muon at `--muon-width` (default: the full width on CUDA; 128 on CPU, where
  torch.optim.Muon's bf16 Newton–Schulz takes ~25 s a step at width 256);
- against our Muon and the SMuon authors' Muon (`muon_pe`) at the full width
  (`--matrix-blocks` blocks: default 2 on CPU, all on CUDA; per-matrix costs, so the ratios do
  not depend on the block count): MuAdam, SoftMuon and SMuon, whose p-selection step (with an
  input Gram of 512 tokens per matrix) is amortized over `--select-every` steps. Each row's
  steps alternate with the authors' Muon's; its ratio is the median over `--rounds` passes,
  with the range.
- SMuon's default map (the authors') against the exact map (fp64) and against itself with bf16
  iterations (the authors' GPU runs), on the full-width block matrices with Gaussian spectra
  and condition numbers 10 and 100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optim  # noqa: E402
from tasks.train.environment import cpu_name, git_commit  # noqa: E402


def bytes_per_element(opt, param) -> int:
    """fp32 bytes each update must move per parameter element at the least: read and write the
    parameter and every state buffer of its shape, read its gradient."""
    buffers = sum(torch.is_tensor(v) and v.shape == param.shape
                  for v in opt.state[param].values())
    return 4 * (3 + 2 * buffers)


def block_shapes(blocks: int, width: int) -> list[tuple[int, ...]]:
    shapes = []
    for _ in range(blocks):
        shapes += [(width,), (width,), (3 * width, width), (width, width),
                   (width,), (width,), (4 * width, width), (width, 4 * width)]
    return shapes


def make_params(shapes, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=g).mul_(0.02).to(device))
        p.grad = torch.randn(shape, generator=g).to(device)
        params.append(p)
    return params


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fastest(steps, device, reps: int, warmup: int = 2) -> list[float]:
    """Seconds of the fastest of `reps` calls of each of `steps`, called in turn after `warmup`
    rounds, so that all of them see the same state of the machine. The fastest, because on a
    shared machine the slower calls time the neighbours, not the code (timeit's reasoning)."""
    for _ in range(warmup):
        for step in steps:
            step()
    sync(device)
    times = [[] for _ in steps]
    for _ in range(reps):
        for step, out in zip(steps, times):
            t0 = time.perf_counter()
            step()
            sync(device)
            out.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def bandwidth(device, reps: int) -> float:
    """Bytes/s of a += b on 64M floats: 12 bytes per element, in place as an optimizer's update
    (an out-of-place add also pays to read its output's cache lines before writing them)."""
    n = 64 * 2**20
    a, b = torch.randn(n, device=device), torch.randn(n, device=device)
    (t,) = fastest([lambda: a.add_(b)], device, reps)
    return 12 * n / t


def elementwise_cases(total_steps_for_soft: int):
    """The elementwise rows, from the registry (optim.REGISTRY): torch's AdamW (fused and
    foreach, the references), then each of our fused-capable optimizers at its example
    arguments; an optimizer whose update switches phase (its example has `total_steps`) gets a
    row for each phase, `<name>_sign_phase` and `<name>_soft_phase` (past the switch)."""
    cases = {
        "adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "adamw_foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
    }
    for spec in optim.ours():
        if not spec.fused:
            continue
        if "total_steps" in spec.example:
            kwargs = {**spec.example, "total_steps": total_steps_for_soft, "sign_fraction": 0.5}
            for phase in ("sign_phase", "soft_phase"):
                cases[f"{spec.name}_{phase}"] = lambda ps, spec=spec, kw=kwargs: spec.cls(ps, **kw)
        else:
            cases[spec.name] = lambda ps, spec=spec: spec.cls(ps, **spec.example)
    return cases


def with_paths(cases: dict) -> dict:
    """Each of our optimizers on each of its paths, in a row each: `<name>` the default
    (fused=False: foreach where the class keeps a foreach path, else its eager kernel),
    `<name>_kernel` its eager kernel where that is not the default, `<name>_fused` the kernel
    compiled (fused=True)."""
    out = {}
    for name, build in cases.items():
        out[name] = build
        if name.startswith("adamw"):
            continue
        if type(build([torch.nn.Parameter(torch.zeros(1))])).has_foreach_path():
            out[f"{name}_kernel"] = lambda ps, build=build: _on_path(build(ps), reference=True)
        out[f"{name}_fused"] = lambda ps, build=build: _on_path(build(ps), fused=True)
    return out


def _on_path(opt, reference=False, fused=False):
    opt.reference = reference
    for group in opt.param_groups:
        group["fused"] = fused
    return opt


DEFAULT_TARGET = 1.5  # a default (uncompiled) path: at most this × torch's foreach AdamW
FUSED_TARGET = 2.0  # a compiled path (`_fused`): at most this × torch's fused AdamW


def path_of(name: str) -> str:
    """"reference" (torch's AdamW), "fused", "kernel" (the eager reference kernel) or
    "default" (what `fused=False` runs: what users get)."""
    if name.startswith("adamw"):
        return "reference"
    return name.rsplit("_", 1)[1] if name.endswith(("_fused", "_kernel")) else "default"


def bench_elementwise(args, device, bw):
    """Every case timed alternately with torch's fused AdamW and its foreach AdamW, each on its
    own copy of the parameters, in `--rounds` passes over all cases. A row's `vs_fused_adamw`
    and `vs_foreach_adamw` are the medians over the rounds of (its fastest step / the
    reference's fastest step in the same pairing), with their ranges; `ms` is its fastest step
    over all rounds. A default path is held to DEFAULT_TARGET × foreach AdamW (what torch users
    get without asking), a compiled one to FUSED_TARGET × fused AdamW."""
    shapes = block_shapes(args.blocks, args.width)
    n = sum(torch.Size(s).numel() for s in shapes)
    fused_ref = torch.optim.AdamW(make_params(shapes, device, seed=1), lr=1e-3, fused=True)
    foreach_ref = torch.optim.AdamW(make_params(shapes, device, seed=2), lr=1e-3, foreach=True)
    times, ratios, moved = {}, {"fused": {}, "foreach": {}}, {}
    soft_steps = 1000
    cases = {name: build for name, build in with_paths(elementwise_cases(soft_steps)).items()
             if not args.only or name in args.only}
    for round_ in range(args.rounds):
        print(f" round {round_ + 1}/{args.rounds}", flush=True)
        for name, build in cases.items():
            params = make_params(shapes, device)
            opt = build(params)
            if name.endswith("_soft_phase"):  # past the switch (the schedule fit included)
                for group in opt.param_groups:
                    group["step"] = soft_steps // 2
                opt.step()
            fused, foreach, t = fastest([fused_ref.step, foreach_ref.step, opt.step], device,
                                        args.reps)
            moved[name] = bytes_per_element(opt, params[2])
            times.setdefault(name, []).append(t)
            ratios["fused"].setdefault(name, []).append(t / fused)
            ratios["foreach"].setdefault(name, []).append(t / foreach)
            del opt, params
            print(f"  {name:28s} {t * 1e3:9.2f} ms  x{t / fused:.2f} fused AdamW  "
                  f"x{t / foreach:.2f} foreach AdamW", flush=True)
    results = {}
    for name in cases:
        t = min(times[name])
        row = {"ms": t * 1e3, "path": path_of(name), "bytes_per_element": moved[name],
               "vs_bound": t / (moved[name] * n / bw)}
        for ref in ("fused", "foreach"):
            row[f"vs_{ref}_adamw"] = statistics.median(ratios[ref][name])
            row[f"vs_{ref}_adamw_range"] = [min(ratios[ref][name]), max(ratios[ref][name])]
        if row["path"] == "default":
            row["target"] = {"versus": "foreach AdamW", "at_most": DEFAULT_TARGET,
                             "met": row["vs_foreach_adamw"] <= DEFAULT_TARGET}
        elif row["path"] == "fused":
            row["target"] = {"versus": "fused AdamW", "at_most": FUSED_TARGET,
                             "met": row["vs_fused_adamw"] <= FUSED_TARGET}
        results[name] = row
    return {"params": n, "rounds": args.rounds, "results": results}


def _time_optimizers(cases: dict, shapes, device, reps) -> dict:
    rows = {}
    for name, build in cases.items():
        opt = build(make_params(shapes, device))
        (rows[name],) = fastest([opt.step], device, reps)
        print(f"  {name:24s} {rows[name] * 1e3:9.2f} ms", flush=True)
        del opt
    return rows


def bench_vs_torch_muon(args, device):
    """Our Muon against torch.optim.Muon (same bf16 Newton–Schulz; and our CPU default)."""
    width = args.muon_width or (args.width if device.type == "cuda" else 128)
    shapes = [s for s in block_shapes(args.blocks, width) if len(s) == 2]
    rows = _time_optimizers({
        "torch_muon": lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0),
        "muon_bf16": lambda ps: optim.Muon(ps, ns_dtype="bf16"),
        "muon_auto": lambda ps: optim.Muon(ps, ns_dtype="auto"),
    }, shapes, device, args.reps)
    return {"width": width, "params": sum(torch.Size(s).numel() for s in shapes),
            "results": {name: {"ms": t * 1e3, "vs_torch_muon": t / rows["torch_muon"]}
                        for name, t in rows.items()}}


MUON_FAMILY_ROWS = ("muon", "muon_pe", "muadam", "softmuon", "softmuon_exact", "smuon",
                    "smuon_exact")


def _soft_phase(opt):
    for group in opt.param_groups:
        if group["use_matrix"]:
            group["step"] = 900
    return opt


class _Selecting:
    """An SMuon whose every step chooses p: before each step, each matrix's input Gram (of
    512 random tokens) is handed over as the hooks would record it."""

    def __init__(self, opt, grams):
        self.opt, self.grams = opt, grams

    def step(self):
        for group in self.opt.param_groups:
            for p in group["params"]:
                if group["use_matrix"]:
                    self.opt.record_input_gram(p, self.grams[p.shape[1]])
        self.opt.step()


def muon_family_cases() -> dict:
    """Rows timed against our Muon and the authors' Muon. SMuon's plain steps use a fixed
    p = 3 (the series path); its p-selection steps are timed apart (`<row>_select`), to be
    amortized."""
    def soft(exact):
        return lambda ps: _soft_phase(optim.SoftMuon(ps, total_steps=1000, exact=exact))

    def smuon(exact, select):
        def build(ps):
            opt = optim.SMuon(ps, exact=exact, first_select=0, select_every=1 if select
                              else 10**9)
            for group in opt.param_groups:  # p fixed at 3 until a selection replaces it
                for p in group["params"]:
                    opt.state[p]["p"] = 3.0
            if not select:
                return opt
            g = torch.Generator(device="cpu").manual_seed(1)
            grams = {}
            for p in ps:
                x = torch.randn(512, p.shape[1], generator=g).to(p.device)
                grams.setdefault(p.shape[1], x.T @ x)
            return _Selecting(opt, grams)
        return build

    return {"muon": lambda ps: optim.Muon(ps), "muon_pe": lambda ps: optim.MuonPE(ps),
            "muadam": lambda ps: optim.MuAdam(ps),
            "softmuon": soft(False), "softmuon_exact": soft(True),
            "smuon": smuon(False, False), "smuon_select": smuon(False, True),
            "smuon_exact": smuon(True, False), "smuon_exact_select": smuon(True, True)}


def smuon_map_errors(args, device) -> dict:
    """Relative Frobenius error of SMuon's default map (optim/spectral.py
    schatten_power_authors, iterations in the device's default dtype) against the exact map
    (fp64 eigendecomposition) and against the same map with bf16 iterations (as the authors
    ran it on GPUs), per block matrix shape, spectrum and p."""
    from optim.spectral import ns_dtype_for, schatten_power, schatten_power_authors

    dtype = ns_dtype_for(device, "auto")
    shapes = sorted({s for s in block_shapes(1, args.width) if len(s) == 2})
    rows = []
    for shape in shapes:
        for condition in (None, 10, 100):
            g = torch.Generator(device="cpu").manual_seed(0)
            if condition is None:
                x = torch.randn(shape, generator=g)
            else:
                r = min(shape)
                u, _ = torch.linalg.qr(torch.randn(shape[0], r, generator=g, dtype=torch.float64))
                v, _ = torch.linalg.qr(torch.randn(shape[1], r, generator=g, dtype=torch.float64))
                spectrum = torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), r,
                                          dtype=torch.float64)
                x = ((u * spectrum) @ v.T).float()
            x = x.to(device)
            for p in (1.5, 3.0, 6.0, 9.8):
                got = schatten_power_authors(x[None], [p], 1.01 / 10, False, dtype)[0].double()
                exact = schatten_power(x, p).double()
                bf16 = schatten_power_authors(x[None], [p], 1.01 / 10, False,
                                              torch.bfloat16)[0].double()
                rows.append({"shape": list(shape), "condition": condition or "gaussian", "p": p,
                             "vs_exact": ((got - exact).norm() / exact.norm()).item(),
                             "vs_bf16_iterations": ((got - bf16).norm() / bf16.norm()).item()})
    return {"width": args.width, "iterations": str(dtype).removeprefix("torch."), "rows": rows}


def training_step_seconds(blocks: int, width: int, device, reps: int, tokens: int = 512):
    """Forward + backward of a GPT-2-style model of `blocks` blocks of `width` (GPT-2's 50257
    vocabulary, 1 × `tokens` tokens), fp32 on CPU, bf16 autocast on CUDA."""
    from tasks.nanogpt.model import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50257, block_size=tokens, n_layer=blocks,
                    n_head=max(1, width // 64), n_embd=width)
    model = GPT(cfg).to(device)
    idx = torch.randint(0, 50257, (1, tokens), device=device)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            logits = model(idx)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(),
                                                     idx.view(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    (t,) = fastest([step], device, reps, warmup=1)
    return t


def _time_paired_with_muon_pe(cases: dict, shapes, device, reps: int, rounds: int):
    """Each case's steps alternating with the authors' Muon's (its own parameters), in
    `rounds` passes: (fastest seconds per case over all rounds, per case the ratio to the
    authors' Muon in each round)."""
    reference = optim.MuonPE(make_params(shapes, device, seed=1))
    fastest_s, ratios = {}, {}
    for round_ in range(rounds):
        print(f" round {round_ + 1}/{rounds}", flush=True)
        for name, build in cases.items():
            opt = build(make_params(shapes, device))
            ref, t = fastest([reference.step, opt.step], device, reps)
            fastest_s[name] = min(t, fastest_s.get(name, t))
            ratios.setdefault(name, []).append(t / ref)
            print(f"  {name:24s} {t * 1e3:9.2f} ms  x{t / ref:.3f} the authors' Muon",
                  flush=True)
            del opt
    return fastest_s, ratios


def bench_muon_family(args, device):
    """Our Muon family against our Muon on the hidden matrices of `--matrix-blocks` blocks at
    full width; and each optimizer's overhead over Muon as a share of a whole training step
    (forward + backward + Muon's step) of a model of those blocks."""
    blocks = args.matrix_blocks or (args.blocks if device.type == "cuda" else 2)
    shapes = [s for s in block_shapes(blocks, args.width) if len(s) == 2]
    cases = muon_family_cases()
    if args.only_matrix:
        wanted = set(args.only_matrix) | {"muon", "muon_pe"}
        cases = {k: v for k, v in cases.items()
                 if k in wanted or k.removesuffix("_select") in wanted}
    rows, paired = _time_paired_with_muon_pe(cases, shapes, device, args.reps, args.rounds)
    k = args.select_every
    for name in ("smuon", "smuon_exact"):
        if f"{name}_select" in rows:
            rows[f"{name}_amortized"] = ((k - 1) * rows[name] + rows[f"{name}_select"]) / k
    print("  training step (forward + backward) ...", flush=True)
    fwd_bwd = training_step_seconds(blocks, args.width, device, max(2, args.reps // 2))
    whole_muon = fwd_bwd + rows["muon"]
    results = {}
    for name, t in rows.items():
        results[name] = {"ms": t * 1e3, "vs_muon": t / rows["muon"],
                         "training_step_overhead": (t - rows["muon"]) / whole_muon}
        if name in paired:
            results[name]["vs_muon_pe"] = statistics.median(paired[name])
            results[name]["vs_muon_pe_range"] = [min(paired[name]), max(paired[name])]
        else:  # amortized rows: from the fastest times
            results[name]["vs_muon_pe"] = t / rows["muon_pe"]
    return {"width": args.width, "blocks": blocks, "select_every": k, "rounds": args.rounds,
            "params": sum(torch.Size(s).numel() for s in shapes),
            "forward_backward_ms": fwd_bwd * 1e3, "results": results}


def provenance(args) -> dict:
    commit = git_commit()
    cpu = f"{cpu_name()}, {torch.get_num_threads()} threads"
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    return {"command": "python " + " ".join(sys.argv), "commit": commit, "device": device,
            "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat()}


def to_markdown(report) -> str:
    lines = ["# Optimizer step benchmark", ""]
    lines += [f"- {k}: `{v}`" for k, v in report["provenance"].items()]
    ew = report.get("elementwise", {"results": {}})
    if ew["results"]:
        lines += ["", f"## Elementwise, {ew['params'] / 1e6:.1f}M parameters "
                  "(GPT-2-small block shapes)", "",
                  f"| optimizer | path | ms/step | × fused AdamW (median of {ew['rounds']} "
                  "rounds, range) | × foreach AdamW (median, range) | target | × memory bound |",
                  "|---|---|---|---|---|---|---|"]
    for name, r in ew["results"].items():
        bound = f"{r['vs_bound']:.2f}" if "vs_bound" in r else "–"
        target = "–"
        if "target" in r:
            t = r["target"]
            target = (f"≤ {t['at_most']:g}× {t['versus']}: "
                      + ("met" if t["met"] else "**NOT MET**"))
        cells = [f"{r[f'vs_{ref}_adamw']:.2f} ({r[f'vs_{ref}_adamw_range'][0]:.2f}–"
                 f"{r[f'vs_{ref}_adamw_range'][1]:.2f})" for ref in ("fused", "foreach")]
        lines.append(f"| {name} | {r['path']} | {r['ms']:.2f} | {cells[0]} | {cells[1]} | "
                     f"{target} | {bound} |")
    if "vs_torch_muon" in report:
        tm = report["vs_torch_muon"]
        lines += ["", f"## Muon vs torch.optim.Muon, width {tm['width']} "
                  f"({tm['params'] / 1e6:.1f}M matrix parameters)", "",
                  "| optimizer | ms/step | × torch.optim.Muon |", "|---|---|---|"]
        lines += [f"| {name} | {r['ms']:.2f} | {r['vs_torch_muon']:.2f} |"
                  for name, r in tm["results"].items()]
    if "muon_family" in report:
        mf = report["muon_family"]
        lines += ["", f"## Muon family at width {mf['width']} ({mf['blocks']} blocks, "
                  f"{mf['params'] / 1e6:.1f}M matrix parameters), SMuon p re-selected every "
                  f"{mf['select_every']} steps", "",
                  f"Training step of that model (forward + backward, 1 × 512 tokens): "
                  f"{mf['forward_backward_ms']:.1f} ms.", "",
                  "| optimizer | ms/step | × our Muon | × the authors' Muon (muon_pe; paired, "
                  f"median of {mf['rounds']} rounds) | range | overhead over Muon, share of a "
                  "whole training step |", "|---|---|---|---|---|---|"]
        for name, r in mf["results"].items():  # amortized rows: from the fastest times
            spread = "–" if "vs_muon_pe_range" not in r else \
                "{:.3f}–{:.3f}".format(*r["vs_muon_pe_range"])
            lines.append(f"| {name} | {r['ms']:.2f} | {r['vs_muon']:.3f} | "
                         f"{r['vs_muon_pe']:.3f} | {spread} | "
                         f"{100 * r['training_step_overhead']:+.1f}% |")
        lines += ["", "Targets (from the SMuon paper's ~3% overhead): SMuon's plain step ≤ "
                  "1.5× the "
                  "authors' Muon; amortized selection ≤ 5% of Muon's step; whole-training-step "
                  "overhead ≤ 3%. `smuon` rows use p = 3 (the series path of the authors' map); "
                  "`_select` rows are steps that choose p (exact_momentum, each matrix with the "
                  "input Gram of 512 tokens); `_amortized` = ((k−1)·step + select)/k."]
    if "smuon_map" in report:
        sm = report["smuon_map"]
        lines += ["", f"## SMuon's default map (the authors'), block matrices of width "
                  f"{sm['width']}, iterations in {sm['iterations']}", "",
                  "| shape | spectrum | p | vs exact (fp64) | vs bf16 iterations (the authors' "
                  "GPU runs) |", "|---|---|---|---|---|"]
        lines += [f"| {tuple(r['shape'])} | {r['condition']} | {r['p']} | "
                  f"{100 * r['vs_exact']:.2f}% | {100 * r['vs_bf16_iterations']:.2f}% |"
                  for r in sm["rows"]]
        errors = [r["vs_exact"] for r in sm["rows"]]
        lines += ["", f"Against the exact map: {100 * min(errors):.1f}–{100 * max(errors):.1f}% "
                  "(the method as run: its binomial series is coarse for singular values far "
                  "below ‖X‖_S4). `exact=true` is within 1e-2 of an fp64 SVD "
                  "(tests/test_smuon_authors.py); the default equals a transcription of the "
                  "authors' map to fp32 rounding (same file)."]
    if ew["results"]:
        lines += ["", "Notes: the memory bound counts the bytes each update must move at the "
                  f"bandwidth of a large in-place tensor add ({report['bandwidth_GBps']:.1f} "
                  "GB/s, 12 bytes an element). The ratios are paired: each row's steps "
                  "alternate with torch's fused AdamW's and its foreach AdamW's steps, each on "
                  "their own parameters; the ratio of the fastest steps is taken in each round, "
                  "and the table gives the median and range over the rounds. Paths: `default` "
                  "is what `fused=False` runs (what users get), held to ≤ "
                  f"{DEFAULT_TARGET:g}× torch's foreach AdamW (torch's own default); `fused` is "
                  f"the kernel compiled (fused=True), held to ≤ {FUSED_TARGET:g}× fused AdamW; "
                  "`kernel` is the eager kernel, the reference (slow by design), where the "
                  "default is a foreach path."]
    if "vs_torch_muon" in report:
        lines += ["", "`muon_bf16` runs the same bf16 Newton–Schulz as torch.optim.Muon; "
                  "`muon_auto` (and `muon` below it) picks fp32 on CPU."]
    lines += ["", "Each time is the fastest of the reps (on a shared machine slower reps time "
              "the neighbours), from one process."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--muon-width", type=int, default=None)
    parser.add_argument("--matrix-blocks", type=int, default=None)
    parser.add_argument("--select-every", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the rows, each timed alternately with its "
                             "reference (the ratio is the median over the passes)")
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--name", default="optim_step",
                        help="file stem of the report: <out>/<name>_<device>.{json,md}")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--only", type=lambda text: text.split(","), default=None,
                        help="comma-separated rows to time, elementwise or Muon family "
                             "(default: all); a section with none of them is skipped")
    args = parser.parse_args()
    for name in ("reps", "rounds", "blocks", "width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    rows = sorted(with_paths(elementwise_cases(1)))
    unknown = set(args.only or ()) - set(rows) - set(MUON_FAMILY_ROWS)
    if unknown:
        parser.error(f"--only: unknown rows {sorted(unknown)}; choose from "
                     f"{rows + list(MUON_FAMILY_ROWS)}")
    args.only_matrix = [r for r in args.only or () if r in MUON_FAMILY_ROWS]
    elementwise_only = [r for r in args.only or () if r in rows]
    run_elementwise = not args.only or bool(elementwise_only)
    run_matrix = not args.skip_matrix and (not args.only or bool(args.only_matrix))
    args.only = elementwise_only or None
    device = torch.device(args.device)
    report = {"provenance": provenance(args)}
    if run_elementwise:
        print(f"bandwidth (tensor add) on {device} ...", flush=True)
        bw = bandwidth(device, args.reps)
        print(f"  {bw / 1e9:.1f} GB/s\nelementwise optimizers:", flush=True)
        report.update(bandwidth_GBps=bw / 1e9, elementwise=bench_elementwise(args, device, bw))
    if run_matrix:
        if not args.only_matrix:
            print("Muon vs torch.optim.Muon:", flush=True)
            report["vs_torch_muon"] = bench_vs_torch_muon(args, device)
        print("Muon family at full width:", flush=True)
        report["muon_family"] = bench_muon_family(args, device)
        if not args.only_matrix or "smuon" in args.only_matrix:
            print("SMuon's map against the exact one ...", flush=True)
            report["smuon_map"] = smuon_map_errors(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.name}_{device.type}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(to_markdown(report))
    print(f"wrote {out / stem}.json/.md")


if __name__ == "__main__":
    main()
