"""Does the soft phase act? Train one run of a committed table again with the soft-phase probe
on (optim/soft_phase.py) and say, per soft step, how much of SoftSignum's or SoftMuon's step is
not the sign phase's.

    python scripts/soft_phase.py TABLE ROW [--scale tiny] [--seed S] [--out FILE]

ROW is a row label of the table (its `| row |` column: `softsignum`, `softsignum k=10`...). The
run is the row's run at its chosen setting with seed S (the table's first seed by default),
trained in a temporary runs root, so nothing of the table's runs is touched; the probe changes
nothing the run computes, and the script says whether the run ends where its record does. It
prints the unsaturated share (entries whose soft sign is below 1 − ε), the linear share (below
0.1: there the step is momentum SGD at lr·τ) and the distance from the sign step, over the soft
phase, and writes them as JSON (default results/TABLE/SCALE/soft_phase-ROW.json).
"""

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from omegaconf import OmegaConf  # noqa: E402

from sweeps import records, spec  # noqa: E402
from sweeps.collect import collect  # noqa: E402
from sweeps.compose import compose_runs  # noqa: E402
from sweeps.render import ROOT, provenance  # noqa: E402


def the_run(table_name: str, row_label: str, scale: str, seed: int | None):
    """(table, its results folder, the run record of ROW at its chosen setting and seed)."""
    table = spec.load(table_name).at(scale)
    out = ROOT / "results" / table.name / table.folder([])
    tabled = records.read(out)
    rows = collect(table, table.expand(list(tabled.extra), tabled.grids, tabled.aux or None),
                   list(tabled.runs))
    by_label = {r.label: r for r in rows}
    if row_label not in by_label:
        raise ValueError(f"table {table.name} has no row {row_label!r}; its rows: "
                         f"{', '.join(sorted(by_label))}")
    row = by_label[row_label]
    if not row.key.optim.startswith("soft"):
        raise ValueError(f"row {row_label!r} runs {row.key.optim}, not SoftSignum or "
                         f"SoftMuon: it has no soft phase")
    if row.chosen is None:
        raise ValueError(f"row {row_label!r} diverged at every setting: no chosen run")
    cell = row.chosen
    seed = cell.seeds[0] if seed is None else seed
    if seed not in cell.seeds:
        raise ValueError(f"seed {seed} is not among the chosen setting's seeds "
                         f"{cell.seeds}")
    return table, out, cell.runs[cell.seeds.index(seed)], seed


def file_name(row: str) -> str:
    """A row label as a plain file name: `softsignum α=0.9` → `softsignum_alpha0.9`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", row.replace("α=", "alpha").replace("=", ""))


def made_at(record) -> str:
    env = (record.summary or {}).get("environment", {})
    threads = f", {env['cpu_threads']} CPU thread(s)" if "cpu_threads" in env else ""
    return f"commit {str(env.get('git_commit', '?'))[:12]} on {env.get('host', '?')}{threads}"


def summarize(steps, first_of: int = 5) -> dict:
    """Means over the soft phase, and over its first and last `first_of` steps, per group."""
    out = {}
    for group in sorted({s.group for s in steps}):
        mine = [s for s in steps if s.group == group]

        def mean(part, key):
            return sum(getattr(s, key) for s in part) / len(part)

        parts = {"all": mine, "first": mine[:first_of], "last": mine[-first_of:]}
        out[f"group{group}"] = {
            "soft_steps": len(mine), "tau_first": mine[0].tau, "tau_last": mine[-1].tau,
            **{f"{key}_{name}": mean(part, key) for name, part in parts.items()
               for key in ("unsaturated", "linear", "from_sign")},
            **({"from_newton_schulz_all": mean(mine, "from_newton_schulz")}
               if mine[0].from_newton_schulz is not None else {})}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("row")
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        table, folder, record, seed = the_run(args.table, args.row, args.scale, args.seed)
    except (spec.SpecError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from optim.soft_phase import Probe
    from tasks import run

    with tempfile.TemporaryDirectory() as runs_root:
        [(_, cfg)] = compose_runs([[*record.overrides, f"runs_root={runs_root}",
                                    "progress=false"]])
        with Probe().installed() as probe:
            summary = run(OmegaConf.create(cfg))
    if not probe.steps:
        print(f"error: the run took no soft step (status {summary['status']})", file=sys.stderr)
        return 1
    key = table.metric.key
    now, then = records.summary_value(summary, key), records.summary_value(record.summary, key)
    command = " ".join(["python", "scripts/soft_phase.py", *sys.argv[1:]])
    result = {"table": table.name, "scale": args.scale, "row": args.row, "seed": seed,
              "overrides": list(record.overrides), "provenance": provenance(command, table),
              "metric": {"key": key, "this_run": now, "record": then},
              "soft_phase": summarize(probe.steps),
              "steps": [vars(s) for s in probe.steps]}
    out = args.out or folder / f"soft_phase-{file_name(args.row)}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    # the probe changes nothing; a record made on another machine (or at another thread
    # count) rounds differently, and training carries that rounding on
    print(f"{table.name}/{args.scale} {args.row} (seed {seed}): {key} {now} "
          f"({'as its record' if now == then else f'its record, made at {made_at(record)}: '}"
          f"{'' if now == then else then})")
    for group, s in result["soft_phase"].items():
        print(f"  {group}: {s['soft_steps']} soft steps, τ {s['tau_first']:.4g} → "
              f"{s['tau_last']:.4g}; unsaturated {s['unsaturated_all']:.1%} (first "
              f"{s['unsaturated_first']:.1%}, last {s['unsaturated_last']:.1%}), linear "
              f"{s['linear_all']:.1%}, distance from the sign step {s['from_sign_all']:.3f}"
              + (f", from Muon's Newton-Schulz step {s['from_newton_schulz_all']:.3f}"
                 if "from_newton_schulz_all" in s else ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
