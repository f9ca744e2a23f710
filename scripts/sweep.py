"""Sweeps: many runs as one job array, resumable, with a status table.

    python scripts/sweep.py launch NAME [--wait] [--dry-run] [--plan] OVERRIDE...   (flags anywhere)
    python scripts/sweep.py status NAME [runs_root=...]

OVERRIDEs use Hydra's syntax; comma lists, range() and choice() are swept, e.g.
    python scripts/sweep.py launch lr-s3 optim=s3 'optim.lr=1e-4,3e-4,1e-3' seed=0,1 \\
        launcher=slurm launcher.partition=gpu launcher.gpus_per_node=1
Launching again skips completed, diverged, running and queued runs, re-runs failed ones and
resumes interrupted ones from their checkpoints. Exit codes: 0 ok, 1 a run failed (--wait),
2 bad input or the sweep is being launched by another process (nothing submitted).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402

from sweeps.compose import CONF_DIR  # noqa: E402
from sweeps.launch import launch  # noqa: E402
from sweeps.plan import DEFAULT_GPU, GPUS, Hardware, plan_sweep  # noqa: E402
from sweeps.status import (  # noqa: E402
    ENDED,
    RunState,
    counts,
    format_table,
    sweep_status,
    wait_for_sweep,
)
from tasks.train.errors import ConfigError, Preempted  # noqa: E402
from tasks.train.lease import LeaseHeld  # noqa: E402


def runs_root_of(overrides) -> Path:
    """runs_root as a run would resolve it (the override, or train.yaml's default with its
    environment variable), without composing a whole config."""
    picked = [o.split("=", 1)[1] for o in overrides if o.startswith("runs_root=")]
    root = picked[-1] if picked else OmegaConf.load(CONF_DIR / "train.yaml").runs_root
    return Path(root).expanduser().absolute()


def wait(runs_root: Path, name: str, poll_s: float) -> int:
    rows = wait_for_sweep(runs_root, name, poll_s)
    print(format_table(name, rows))
    c = counts(rows)
    return 1 if c[RunState.FAILED] or sum(c[s] for s in ENDED) < len(rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_launch = sub.add_parser("launch", help="submit a sweep (non-blocking unless --wait)")
    p_launch.add_argument("name")
    p_launch.add_argument("overrides", nargs="*")
    p_launch.add_argument("--wait", action="store_true", help="block until every run ends")
    p_launch.add_argument("--dry-run", action="store_true", help="compose and check only")
    p_launch.add_argument("--plan", action="store_true",
                          help="per run: memory per GPU, GPU-hours, time limit and data; "
                               "submits nothing")
    p_launch.add_argument("--gpu", default=DEFAULT_GPU, help=f"--plan: one of {sorted(GPUS)}")
    p_launch.add_argument("--mfu", type=float, default=None,
                          help="--plan: one model FLOPs utilization for every run (default: "
                               "each task's own range, or what gpu_check measured)")
    p_launch.add_argument("--poll", type=float, default=5.0, help="seconds between checks")
    p_status = sub.add_parser("status", help="counts and a table of a sweep's runs")
    p_status.add_argument("name")
    p_status.add_argument("overrides", nargs="*", help="runs_root=... if not the default")
    # flags may come anywhere on the line, also after the overrides
    args, rest = parser.parse_known_args()
    unknown = [a for a in rest if a.startswith("-")]  # an override never starts with "-"
    if unknown:
        parser.error(f"unrecognized flags {unknown}; {args.command} takes "
                     + ("--wait, --dry-run, --plan, --gpu G, --mfu X, --poll S"
                        if args.command == "launch" else "none"))
    args.overrides = [*args.overrides, *rest]

    try:
        runs_root = runs_root_of(args.overrides)
        if args.command == "status":
            print(format_table(args.name, sweep_status(runs_root, args.name)))
            return 0
        if args.plan:
            text, invalid = plan_sweep(args.name, args.overrides, Hardware(args.gpu, args.mfu))
            print(text)
            return 2 if invalid else 0
        t0 = time.perf_counter()
        result = launch(args.name, args.overrides, dry_run=args.dry_run)
    except (ConfigError, ValueError, FileNotFoundError, LeaseHeld) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # launcher=debug: the running run checkpointed, nothing is lost
        print(f"[optbench] {e}; launch the same sweep again to go on", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("[optbench] interrupted; launch the same sweep again to go on", file=sys.stderr)
        return 130
    skipped = {}
    for state in result.skipped.values():
        skipped[state] = skipped.get(state, 0) + 1
    elapsed = time.perf_counter() - t0
    what = ", ".join(f"{v} {k}" for k, v in skipped.items()) or "none"
    if args.dry_run:
        print(f"sweep {args.name}: {len(result.runs)} runs valid; would submit "
              f"{len(result.submitted)} (skipping: {what}) — checked in {elapsed:.2f}s")
        return 0
    if result.submitted:
        array = result.job_ids[0].split("_")[0]
        print(f"sweep {args.name}: submitted {len(result.submitted)} of {len(result.runs)} runs "
              f"as job array {array} in {elapsed:.2f}s (skipped: {what})")
        print(f"watch it: python scripts/sweep.py status {args.name}"
              + (f"   or   squeue -j {array}"
                 if result.runs[0][1]["launcher"]["name"] == "slurm" else ""))
    else:
        print(f"sweep {args.name}: nothing to submit, all {len(result.runs)} runs skipped "
              f"({what}); checked in {elapsed:.2f}s")
    if args.wait and (result.submitted or skipped.get(RunState.RUNNING)
                      or skipped.get(RunState.PENDING) or skipped.get(RunState.UNKNOWN)):
        return wait(runs_root, args.name, args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
