"""Reproduce a paper table with one command.

    python scripts/reproduce.py TABLE [scale=tiny|paper] [launcher=slurm|local|debug]
                                [--wait] [OVERRIDE ...]

Expands conf/table/TABLE.yaml at the scale (tiny by default), skips runs that already finished,
submits the rest as ONE job array, and, once every run has finished, writes
results/TABLE/SCALE/table.{md,csv,tex} and figures. Run it again to pick up finished runs (it
submits nothing new) and render. Overrides ablate: `optim.p=2` applies to the optimizers that
have `p`; `optim=softsignum optim.sign_fraction=0.5` keeps only that optimizer's rows.
The default launcher is `debug` (the runs go one after another in this process and the table
is written at the end); with `launcher=slurm` or `launcher=local` the command returns once the
array is submitted, and `--wait` blocks until the runs end.
"""

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps import table  # noqa: E402
from sweeps.launch import launch  # noqa: E402
from sweeps.render import render  # noqa: E402
from sweeps.status import RunState, run_state  # noqa: E402
from tasks import store  # noqa: E402
from tasks.errors import ConfigError  # noqa: E402

DONE = (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help=f"one of {table.available()}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--poll", type=float, default=5.0)
    args = parser.parse_args()
    scale = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("scale=")), "tiny")
    extra = [o for o in args.overrides if not o.startswith("scale=")]
    if not any(o.startswith("launcher=") for o in extra):
        extra.append("launcher=debug")  # in this process, blocking: one command, one table
    try:
        spec = table.load_spec(args.table)
        runs = table.expand(spec, scale, extra)
        spec = table.for_scale(spec, scale)
        # an ablation (extra overrides) gets its own sweep name and results folder
        ablation = sorted(o for o in extra if not o.startswith("launcher"))
        suffix = ("-" + hashlib.sha1(" ".join(ablation).encode()).hexdigest()[:6]
                  if ablation else "")
        name = f"table-{spec['name']}-{scale}{suffix}"
        result = launch(name, runs=[r.overrides for r in runs])
    except (ConfigError, ValueError) as e:
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
