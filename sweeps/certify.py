"""`reproduce.py TABLE --certify`: a committed table whose run keys changed only through the code
version (edits that may have changed no number) is certified by running one run of each
changed (task, optimizer) again at the current code and finding it equal to its record, bit for
bit (sweeps/freshness.py `differences`). The certificates go into the table's records and its
header; a run that differs leaves the table stale, with the first difference and the command
that re-runs it, and the pairs that matched keep their certificates, so that re-run runs only
the pairs that differ.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sweeps import freshness, index, records, spec
from sweeps.launch import launch
from sweeps.status import RunState, wait_for_sweep
from tasks.train import store
from tasks.train.environment import git_commit


def certify(folder: Path, results: Path, runs_root_overrides: list[str], poll_s: float = 5.0,
            render=None, tables: Path = spec.TABLE_DIR) -> int:
    """Certify the table in `folder`; `render(folder)` re-renders it from its records. Exit
    code: 0 fresh or certified, 1 a re-run differed (stale), 2 not certifiable (a config
    changed: it must be re-run)."""
    state = freshness.check(folder, tables=tables)
    print(state.describe())
    if state.state != freshness.STALE:
        return 0
    if state.problem or any(r.state == freshness.CONFIG_CHANGED for r in state.runs):
        print(f"not certifiable: runs whose config changed compute something else now; "
              f"re-run the table: {state.command.split('  #')[0]}")
        return 2
    tabled = records.read(folder)
    chosen = {}  # (task, optim) → one of its runs: the first that completed, else the first
    for (task, optim), runs in state.stale_pairs().items():
        done = [r for r in runs if tabled.runs[r.index].status == "completed"]
        chosen[(task, optim)] = (done or runs)[0]
    name = f"certify-{state.table}-{folder.name}"
    overrides = [[*tabled.runs[r.index].overrides, *runs_root_overrides]
                 for r in chosen.values()]
    result = launch(name, runs=overrides)
    print(f"{name}: {len(overrides)} run(s), one per changed (task, optimizer); submitted "
          f"{len(result.submitted)}")
    runs_root = Path(result.runs[0][1]["runs_root"])
    states = wait_for_sweep(runs_root, name, poll_s, until_done=True, progress=False)
    failed = []
    certificates = {(c.task, c.optim): c for c in tabled.certificates}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for (pair, run), status in zip(chosen.items(), states, strict=True):
        rdir, record = Path(status.run_dir), tabled.runs[run.index]
        where = (f"{pair[0]}/{pair[1]} ({record.row}, "
                 + " ".join(o for o in record.overrides if o.startswith(("optim.lr", "seed")))
                 + ")")
        if status.state.name not in (RunState.COMPLETED, RunState.DIVERGED):
            why = status.error or status.state.detail
            failed.append(f"{where}: the re-run {status.state.name} ({why}) at {rdir}")
            continue
        why = freshness.differences(record, store.read_summary(rdir),
                                    store.MetricsLog(rdir / "metrics.jsonl").read())
        if why:
            failed.append(f"{where}: {why}")
            continue
        certificates[pair] = records.Certificate(
            pair[0], pair[1], run.made_at, run.now, record.row, record.overrides,
            status.run_key, git_commit(), date)
    # the pairs that matched keep their certificates even where others differ: a re-run of
    # the table then runs only the pairs that differ (sweeps/reuse.py takes the certified)
    records.write(folder, records.TableRecords(
        tabled.provenance, tabled.extra, tabled.grids, tabled.allow_mixed, tabled.runs,
        tabled.aux, tuple(certificates[k] for k in sorted(certificates))))
    if failed:
        print("NOT certified: the current code computes other numbers than the records:\n  "
              + "\n  ".join(failed) + f"\nthe table is stale; re-run it (its "
              f"{len(chosen) - len(failed)} certified (task, optimizer) pair(s) are taken, not "
              f"run again): python scripts/reproduce.py {state.table}"
              + ("" if state.scale == "tiny" else f" scale={state.scale}"))
        return 1
    if render is not None:
        render(folder)
    index.write(results, tables)
    print(freshness.check(folder, tables=tables).describe())
    return 0
