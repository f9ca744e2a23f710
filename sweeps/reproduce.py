"""One paper table end to end: expand its spec at a scale, plan or launch the runs that are
missing, wait for them if asked, widen a grid whose best lr sits on its edge (sweeps/edges.py),
and once every run has ended render the table with its verdict and commit-ready run records
(sweeps/records.py). `render_only` renders the committed table again from those records."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sweeps import edges, index, records, table
from sweeps.launch import launch
from sweeps.plan import Hardware, plan_table
from sweeps.render import ROOT, check_code_versions, provenance, render
from sweeps.status import RunState, wait_for_sweep
from sweeps.verdict import decide

RESULTS = ROOT / "results"


def _scale(overrides: list[str]) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("scale=")), "tiny")


def reproduce(table_name: str, overrides: list[str], command: str, wait: bool = False,
              poll_s: float = 5.0, plan: Hardware | None = None, render_only: bool = False,
              allow_mixed: bool = False, results: Path = RESULTS) -> int:
    """Exit code: 0 rendered, planned or submitted; 1 a run failed; 2 bad input (raised as
    ConfigError / ValueError before anything is submitted)."""
    scale = _scale(overrides)
    extra, notes = table.launcher_overrides(
        scale, [o for o in overrides if not o.startswith("scale=")])
    spec = table.load_spec(table_name)
    if render_only:
        return render_from_records(spec, scale, extra, results)
    for note in notes:
        print(note)
    runs = table.expand(spec, scale, extra)
    name, ablation = table.sweep_name(spec, scale, extra)
    if plan is not None:
        text, invalid = plan_table(name, scale, runs, plan)
        print(text)
        return 2 if invalid else 0
    from sweeps.compose import compose_runs

    launcher = compose_runs([r.overrides for r in runs[:1]], validate_runs=False)[0][1]["launcher"]
    for warning in table.launcher_warnings(scale, launcher):
        print(warning, file=sys.stderr)
    scaled = table.for_scale(spec, scale)
    spec_grids = edges.spec_grids(spec, scale, runs)
    grids, limit = spec_grids, edges.limit(spec, scale)
    for round_ in range(limit + 1):
        runs = table.expand(spec, scale, extra, grids)
        result = launch(name, runs=[r.overrides for r in runs])
        print(f"{name}: {len(runs)} runs; submitted {len(result.submitted)}"
              + (f" as job array {result.job_ids[0].split('_')[0]}" if result.job_ids else ""))
        runs_root = Path(result.runs[0][1]["runs_root"])
        rows = wait_for_sweep(runs_root, name, poll_s, until_done=wait, progress=False)
        states = [r.state.name for r in rows]
        pending = sum(s not in (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)
                      for s in states)
        if pending:
            print(f"{pending} runs not finished yet; run the same command again (or --wait) "
                  f"to render. Status: python scripts/sweep.py status {name}")
            return 0
        dirs = {i: Path(r.run_dir) for i, r in enumerate(rows)}
        collected = table.collect(scaled, runs, dirs)
        wider = edges.extend(collected, grids)
        if wider == grids or round_ == limit:
            break
        print("edge rule: " + "; ".join(
            f"{label} +{edges.added(grids[label], grid)}" for label, grid in wider.items()
            if grid != grids[label]))
        grids = wider
    prov = provenance(command, scale, spec)
    out = _render(scaled, scale, collected, dirs, prov, grids, spec_grids, allow_mixed,
                  _suffix(spec, scale, name), ablation, results)
    records.write(out, records.build(runs, dirs, prov, extra, grids, allow_mixed))
    index.write(results)
    print(f"wrote {out}/table.md (+ .csv, .tex, figures, {records.RECORDS_FILE}); "
          f"index {results}/README.md")
    return 1 if RunState.FAILED in states else 0


def _suffix(spec: dict, scale: str, sweep: str) -> str:
    """The ablation hash that names the results folder (`tiny-<hash>`), or ""."""
    return sweep.removeprefix(f"table-{spec['name']}-{scale}").lstrip("-")


def _render(scaled: dict, scale: str, collected, dirs, prov: dict, grids, spec_grids,
            allow_mixed: bool, suffix: str, ablation, results: Path) -> Path:
    """Render collected rows (table.collect over `dirs`, every run of the table)."""
    versions = check_code_versions(dirs.values(), allow_mixed)
    return render(scaled, scale, collected, table.ranking(scaled, collected),
                  decide(scaled, scale, collected), {**prov, "code_versions": versions},
                  grids, spec_grids, out_root=results, variant=suffix, ablation=ablation)


def render_from_records(spec: dict, scale: str, extra: list[str], results: Path) -> int:
    """Render results/<table>/<scale>/ again from its committed run records, as it was."""
    name, ablation = table.sweep_name(spec, scale, extra)
    suffix = _suffix(spec, scale, name)
    out = results / spec["name"] / (scale + (f"-{suffix}" if suffix else ""))
    data = records.read(out)
    runs = table.expand(spec, scale, data["extra"], data["grids"])
    recorded = [entry["overrides"] for entry in data["runs"]]
    if [r.overrides for r in runs] != recorded:
        raise ValueError(f"{out}/{records.RECORDS_FILE} was made from another version of "
                         f"conf/table/{spec['name']}.yaml (its runs differ from the spec's); "
                         f"re-run the table to render it")
    scaled = table.for_scale(spec, scale)
    for i, entry in enumerate(data["runs"]):  # named here, not at a temporary run dir
        table.completed_metric(entry["summary"] or {}, scaled["metric"]["key"],
                               f"{out / records.RECORDS_FILE}: run {i} ({entry['row']}, "
                               + " ".join(o for o in entry["overrides"]
                                          if o.startswith(("optim.lr=", "seed="))) + ")")
    with tempfile.TemporaryDirectory(prefix="optbench-records-") as tmp:
        dirs = records.materialize(data, Path(tmp))
        _render(scaled, scale, table.collect(scaled, runs, dirs), dirs, data["provenance"],
                data["grids"], edges.spec_grids(spec, scale, runs), data["allow_mixed"],
                suffix, ablation, results)
    print(f"re-rendered {out} from {records.RECORDS_FILE}")
    return 0
