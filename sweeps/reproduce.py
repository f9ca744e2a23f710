"""One paper table end to end: expand its spec at a scale, plan or launch the runs that are
missing, wait for them if asked, and render the table once every run has ended."""

from __future__ import annotations

import sys
from pathlib import Path

from sweeps import table
from sweeps.compose import compose_runs
from sweeps.launch import launch
from sweeps.plan import Hardware, plan_table
from sweeps.render import render
from sweeps.status import RunState, wait_for_sweep


def reproduce(table_name: str, overrides: list[str], command: str, wait: bool = False,
              poll_s: float = 5.0, plan: Hardware | None = None) -> int:
    """Exit code: 0 rendered, planned or submitted; 1 a run failed; 2 bad input (raised as
    ConfigError / ValueError before anything is submitted)."""
    scale = next((o.split("=", 1)[1] for o in overrides if o.startswith("scale=")), "tiny")
    extra, notes = table.launcher_overrides(
        scale, [o for o in overrides if not o.startswith("scale=")])
    for note in notes:
        print(note)
    spec = table.load_spec(table_name)
    runs = table.expand(spec, scale, extra)
    spec = table.for_scale(spec, scale)
    name, ablation = table.sweep_name(spec, scale, extra)
    if plan is not None:
        text, invalid = plan_table(name, scale, runs, plan)
        print(text)
        return 2 if invalid else 0
    launcher = compose_runs([r.overrides for r in runs[:1]], validate_runs=False)[0][1]["launcher"]
    for warning in table.launcher_warnings(scale, launcher):
        print(warning, file=sys.stderr)
    result = launch(name, runs=[r.overrides for r in runs])
    print(f"{name}: {len(runs)} runs; submitted {len(result.submitted)}"
          + (f" as job array {result.job_ids[0].split('_')[0]}" if result.job_ids else ""))
    runs_root = Path(result.runs[0][1]["runs_root"])
    rows = wait_for_sweep(runs_root, name, poll_s, until_done=wait, progress=False)
    states = [r.state.name for r in rows]
    pending = sum(s not in (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)
                  for s in states)
    if pending:
        print(f"{pending} runs not finished yet; run the same command again (or --wait) to "
              f"render. Status: python scripts/sweep.py status {name}")
        return 0
    dirs = {i: Path(r.run_dir) for i, r in enumerate(rows)}
    collected = table.collect(spec, runs, dirs)
    best, verdict = table.ranking(spec, collected)
    suffix = name.removeprefix(f"table-{spec['name']}-{scale}")
    out = render(spec, scale, collected, best, verdict, command, variant=suffix.lstrip("-"),
                 ablation=ablation)
    print(f"wrote {out}/table.md (+ .csv, .tex, loss_curves.png, metric_vs_lr.png)")
    return 1 if RunState.FAILED in states else 0
