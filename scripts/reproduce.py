"""Reproduce a paper table with one command.

    python scripts/reproduce.py TABLE [scale=tiny|paper] [launcher=slurm|local|debug]
                                [--wait] [OVERRIDE ...]
    python scripts/reproduce.py TABLE scale=paper --plan [--gpu h100] [--mfu 0.4]
    python scripts/reproduce.py TABLE --contender NAME=module.Class [--results DIR]

Expands conf/table/TABLE.yaml at the scale (tiny by default), skips runs that already finished,
submits the rest as ONE job array, and, once every run has finished, writes
results/TABLE/SCALE/table.{md,csv,tex} and figures. Run it again to pick up finished runs (it
submits nothing new) and render. Overrides ablate: `optim.p=2` applies to the optimizers that
have `p`; `optim=softsignum optim.sign_fraction=0.5` keeps only that optimizer's rows.
At tiny scale the default launcher is `debug` (the runs go one after another in this process and
the table is written at the end); at paper scale it is `launcher=slurm` with one GPU per task.
With `launcher=slurm` or `launcher=local` the command returns once the array is submitted, and
`--wait` blocks until the runs end.

A row whose best lr is on an edge of its grid gets the next lr beyond it, up to the spec's
`extend_edges` times (sweeps/edges.py). The table prints a verdict on the paper's claim
(sweeps/verdict.py) and is written with its run records (records.json.gz); `--render-only`
renders it again from them, on any machine, without the runs. Runs made by different optimizer
or task code are not rendered together unless `--allow-mixed` is given.

`--certify`: a committed table whose run keys changed through the code version only (edits that
may change no number) gets one run of each changed (task, optimizer) again; if each equals its
record bit for bit, the records and the header carry the certificate (sweeps/freshness.py says
which tables are fresh, certified or stale: `python scripts/freshness.py`).

`--decide [--budget-min M]`: a committed table whose comparisons stage 1 (its seeds) left
undecided gets stage 2 of a two-stage design with stated error (sweeps/sequential.py): the seeds
80% power needs at the stage-1 spread, added to the compared rows at their chosen settings within
M minutes of run time (default 30), then the table is rendered with the design's verdict.

`--confirm [--budget-min M]`: a committed table gets a confirmatory experiment
(sweeps/confirm.py): fresh seeds for the rows its claim compares, at their chosen settings, as
many as give each comparison 90% power at Holm's strictest level from the table's spread, run
within M minutes (default 30) or not at all; the table's verdict is then the experiment's,
decided on those seeds alone, and the header counts every look the claim has had.

`--plan` composes and validates every run and trains nothing: per run its key, status, the data
it needs (and the command that prepares what is missing), memory per GPU and GPU-hours, then
totals. It exits 2 if any run is invalid.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps import spec  # noqa: E402
from sweeps.contender import parse as parse_contender  # noqa: E402
from sweeps.plan import DEFAULT_GPU, GPUS, Hardware  # noqa: E402
from sweeps.reproduce import confirm_more, decide_more, reproduce  # noqa: E402
from tasks.train.errors import ConfigError, Preempted  # noqa: E402
from tasks.train.lease import LeaseHeld  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help=f"one of {spec.available()}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--plan", action="store_true",
                        help="validate every run and estimate its cost; train nothing")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"--plan: one of {sorted(GPUS)}")
    parser.add_argument("--mfu", type=float, default=None,
                        help="--plan: one model FLOPs utilization for every run (default: each "
                             "task's own range, or what gpu_check measured)")
    parser.add_argument("--render-only", action="store_true",
                        help="render results/TABLE/SCALE again from its committed run records")
    parser.add_argument("--certify", action="store_true",
                        help="run one run of each (task, optimizer) whose keys changed with the "
                             "code again, and certify the committed table if each matches its "
                             "record bit for bit (sweeps/certify.py)")
    parser.add_argument("--decide", action="store_true",
                        help="add seeds to the committed table's undecided comparisons by a "
                             "two-stage design with stated error (sweeps/sequential.py)")
    parser.add_argument("--confirm", action="store_true",
                        help="a confirmatory experiment on fresh seeds for the committed "
                             "table's compared rows, decided on its own (sweeps/confirm.py)")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="--decide or --confirm: the minutes of run time it may take "
                             "(default 30)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="render runs made by different optimizer/task code together "
                             "(the table lists the versions)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="--plan: the GPU's peak instead of the --gpu table's")
    parser.add_argument("--contender", default=None, metavar="NAME=SPEC",
                        help="your optimizer as one more row: NAME=module.Class or "
                             "NAME=path/to/optim.yaml (sweeps/contender.py)")
    parser.add_argument("--results", default=None,
                        help="with --contender: where its tables go (default: contenders/)")
    args = parser.parse_intermixed_args()  # flags anywhere among the overrides
    command = "python scripts/reproduce.py " + " ".join([args.table, *args.overrides])
    try:
        hardware = Hardware(args.gpu, args.mfu, args.peak_tflops * 1e12
                            if args.peak_tflops else None) if args.plan else None
        contender = parse_contender(args.contender) if args.contender else None
        where = ({"results": Path(args.results or "contenders").expanduser().absolute()}
                 if contender else {})
        if args.results and not contender:
            parser.error("--results goes with --contender (tables are written to results/)")
        if contender:
            command += f" --contender {args.contender}"
        if args.budget_min is not None and not (args.decide or args.confirm):
            parser.error("--budget-min goes with --decide or --confirm")
        if args.decide or args.confirm:
            flag = "--decide" if args.decide else "--confirm"
            if contender or args.plan or args.render_only or args.certify or \
                    (args.decide and args.confirm):
                parser.error(f"{flag} runs alone: not with --contender, --plan, "
                             f"--render-only, --certify" + (" or --confirm" if args.decide
                                                            else " or --decide"))
            budget = 30.0 if args.budget_min is None else args.budget_min
            run_more = decide_more if args.decide else confirm_more
            return run_more(args.table, args.overrides,
                            f"{command} {flag} --budget-min {budget:g}", budget,
                            poll_s=args.poll)
        return reproduce(args.table, args.overrides, command, wait=args.wait,
                         poll_s=args.poll, plan=hardware, render_only=args.render_only,
                         allow_mixed=args.allow_mixed, contender=contender,
                         certify=args.certify, **where)
    except (ConfigError, ValueError, LeaseHeld) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # SIGTERM or Ctrl-C: the running run checkpointed, nothing is lost
        print(f"[optbench] {e}; run the same command again to go on", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # between runs: nothing was running
        print("[optbench] interrupted; run the same command again to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
