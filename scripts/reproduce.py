"""Reproduce a paper table with one command.

    python scripts/reproduce.py TABLE [scale=tiny|paper] [launcher=slurm|local|debug]
                                [--wait] [OVERRIDE ...]
    python scripts/reproduce.py TABLE scale=paper --plan [--gpu h100] [--mfu 0.4]

Expands conf/table/TABLE.yaml at the scale (tiny by default), skips runs that already finished,
submits the rest as ONE job array, and, once every run has finished, writes
results/TABLE/SCALE/table.{md,csv,tex} and figures. Run it again to pick up finished runs (it
submits nothing new) and render. Overrides ablate: `optim.p=2` applies to the optimizers that
have `p`; `optim=softsignum optim.sign_fraction=0.5` keeps only that optimizer's rows.
At tiny scale the default launcher is `debug` (the runs go one after another in this process and
the table is written at the end); at paper scale it is `launcher=slurm` with one GPU per task.
With `launcher=slurm` or `launcher=local` the command returns once the array is submitted, and
`--wait` blocks until the runs end.

`--plan` composes and validates every run and trains nothing: per run its key, status, the data
it needs (and the command that prepares what is missing), memory per GPU and GPU-hours, then
totals. It exits 2 if any run is invalid.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps import table  # noqa: E402
from sweeps.compose import compose_runs  # noqa: E402
from sweeps.launch import launch  # noqa: E402
from sweeps.plan import DEFAULT_GPU, DEFAULT_MFU, GPUS, Hardware, plan_table  # noqa: E402
from sweeps.render import render  # noqa: E402
from sweeps.status import RunState, run_state  # noqa: E402
from tasks import store  # noqa: E402
from tasks.errors import ConfigError  # noqa: E402
from tasks.lease import LeaseHeld  # noqa: E402

DONE = (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help=f"one of {table.available()}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--plan", action="store_true",
                        help="validate every run and estimate its cost; train nothing")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"--plan: one of {sorted(GPUS)}")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                        help="--plan: assumed model FLOPs utilization")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="--plan: the GPU's peak instead of the --gpu table's")
    args = parser.parse_intermixed_args()  # flags anywhere among the overrides
    scale = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("scale=")), "tiny")
    extra, notes = table.launcher_overrides(
        scale, [o for o in args.overrides if not o.startswith("scale=")])
    for note in notes:
        print(note)
    try:
        spec = table.load_spec(args.table)
        runs = table.expand(spec, scale, extra)
        spec = table.for_scale(spec, scale)
        name, ablation = table.sweep_name(spec, scale, extra)
        suffix = name.removeprefix(f"table-{spec['name']}-{scale}")
        if args.plan:
            hardware = Hardware(args.gpu, args.mfu,
                                args.peak_tflops * 1e12 if args.peak_tflops else None)
            text, invalid = plan_table(name, scale, runs, hardware)
            print(text)
            return 2 if invalid else 0
        composed = compose_runs([r.overrides for r in runs[:1]], validate_runs=False)
        for warning in table.launcher_warnings(scale, composed[0][1]["launcher"]):
            print(warning, file=sys.stderr)
        result = launch(name, runs=[r.overrides for r in runs])
    except (ConfigError, ValueError, LeaseHeld) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dirs = {i: store.run_dir(cfg) for i, (_, cfg) in enumerate(result.runs)}
    print(f"{name}: {len(runs)} runs; submitted {len(result.submitted)}"
          + (f" as job array {result.job_ids[0].split('_')[0]}" if result.job_ids else ""))
    while True:
        states = [run_state(d).name for d in dirs.values()]
        if all(s in DONE for s in states) or not args.wait:
            break
        time.sleep(args.poll)
    pending = sum(s not in DONE for s in states)
    if pending:
        print(f"{pending} runs not finished yet; run the same command again (or --wait) to "
              f"render. Status: python scripts/sweep.py status {name}")
        return 0
    rows = table.collect(spec, runs, dirs)
    best, verdict = table.ranking(spec, rows)
    out = render(spec, scale, rows, best, verdict,
                 "python scripts/reproduce.py " + " ".join([args.table, *args.overrides]),
                 variant=suffix.lstrip("-"), ablation=ablation)
    print(f"wrote {out}/table.md (+ .csv, .tex, loss_curves.png, metric_vs_lr.png)")
    failed = sum(s == RunState.FAILED for s in states)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
