"""`reproduce.py TABLE --certify`: a committed table whose run keys changed only through the code
version (edits that may have changed no number) is certified by running one run of each
changed (task, optimizer) again at the current code and finding it equal to its record, bit for
bit (sweeps/freshness.py `differences`). The certificates go into the table's records and its
header; a run that differs leaves the table stale, with the first difference and the command
that re-runs it, and the pairs that matched keep their certificates, so that re-run runs only
the pairs that differ.

A record made on another machine can differ from any run here at rounding (another CPU's
vector kernels), whatever the code. So a run that differs from its record is compared once
more, with a run of the records' own code made here: the commit its summary names, checked
out apart (a git worktree), run by that commit's own scripts/train.py. That run must get the
record's run key (its code version is the record's: nothing uncommitted made the record) and
equal the run at the current code bit for bit; the certificate then says so (its `basis`),
with how the record itself differs here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from sweeps import freshness, index, records, spec
from sweeps.launch import launch
from sweeps.status import RunState, wait_for_sweep
from tasks.train import identity, store
from tasks.train.environment import git_commit

OLD_RUN_TIMEOUT_S = 6 * 3600


def certify(folder: Path, results: Path, runs_root_overrides: list[str], poll_s: float = 5.0,
            render=None, tables: Path = spec.TABLE_DIR) -> int:
    """Certify the table in `folder`; `render(folder)` re-renders it from its records. Exit
    code: 0 fresh or certified, 1 a re-run differed (stale), 2 not certifiable (a config
    changed: it must be re-run)."""
    state = freshness.check(folder, tables=tables)
    print(state.describe())
    if state.state != freshness.STALE:
        return 0
    rerun = f"re-run the table: {state.command.split('  #')[0]}"
    if state.problem:
        print(f"not certifiable ({state.problem}); {rerun}")
        return 2
    # a pair whose config changed computes something else: only a re-run makes it; the pairs
    # whose code version alone changed are certified all the same, so that re-run runs only it
    changed_config = sorted({f"{r.task}/{r.optim}" for r in state.runs
                             if r.state == freshness.CONFIG_CHANGED})
    stale = {pair: runs for pair, runs in state.stale_pairs().items()
             if all(r.state == freshness.CODE_CHANGED for r in runs)}
    if not stale:
        print(f"not certifiable: the config of {', '.join(changed_config)} changed; {rerun}")
        return 2
    tabled = records.read(folder)
    chosen = {}  # (task, optim) → one of its runs: the first that completed, else the first
    for (task, optim), runs in stale.items():
        # the table's own runs (a two-stage table's stage 2 follows them) represent the pair:
        # its certificate then holds for the pair's stage-2 runs too
        own = [r for r in runs if r.index < len(tabled.runs)] or runs
        done = [r for r in own if tabled.runs[r.index].status == "completed"]
        chosen[(task, optim)] = (done or own)[0]
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
        summary_now = store.read_summary(rdir)
        metrics_now = store.MetricsLog(rdir / "metrics.jsonl").read()
        why = freshness.differences(record, summary_now, metrics_now)
        basis = ""
        if why:  # another machine's rounding, or the code? ask the records' own code, here
            print(f"{where}: differs from its record ({why}); running the records' own code "
                  f"here to tell", flush=True)
            again, basis = at_records_code(record, summary_now, metrics_now, runs_root,
                                           runs_root_overrides)
            if again:
                failed.append(f"{where}: {why}; {again}{threads_differ(record, summary_now)}")
                continue
            basis = f"{basis}; the record (made elsewhere) differs here: {why}"
        certificates[pair] = records.Certificate(
            pair[0], pair[1], run.made_at, run.now, record.row, record.overrides,
            status.run_key, git_commit(), date, basis)
    # only this table's checkouts: another certification may be running in one of the others
    remove_worktrees(runs_root, {_records_commit(tabled.runs[r.index]) for r in chosen.values()})
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
    if changed_config:
        print(f"certified {len(chosen)} (task, optimizer) pair(s); not certifiable: the config "
              f"of {', '.join(changed_config)} changed; {rerun} (the certified pairs are taken, "
              f"not run again)")
        return 2
    if render is not None:
        render(folder)
    index.write(results, tables)
    print(freshness.check(folder, tables=tables).describe())
    return 0


def threads_differ(record: records.RunRecord, summary_now: dict) -> str:
    """A note where the record and the re-run used other CPU thread counts: CPU kernels reduce
    in another order at another count, so the two cannot agree bit for bit whatever the code."""
    made, now = record.get("environment.cpu_threads"), records.summary_value(
        summary_now, "environment.cpu_threads")
    if made is None or now is None or made == now or record.get("environment.device_count"):
        return ""  # a GPU run's numbers are the GPU's
    return (f" (the record was made at {made} CPU thread(s), the re-run at {now}: another "
            f"reduction order; certify again with OMP_NUM_THREADS={made})")


def at_records_code(record: records.RunRecord, summary_now: dict, metrics_now: list[dict],
                    runs_root: Path, where: list[str]) -> tuple[str, str]:
    """("", basis) when a run of the record's own commit, made here, equals the run at the
    current code (`summary_now`, `metrics_now`) bit for bit; (why not, "") otherwise."""
    commit = _records_commit(record)
    key, task, optim = (str(record.get(k)) for k in ("run_key", "task", "optim"))
    if not commit:
        return "its record names no commit to run its code at", ""
    work = runs_root / "_certify" / commit[:12]
    tree = work / "tree"
    if tree.exists() and not _checked_out(tree, commit):  # a checkout cut short by a kill
        _remove_worktree(tree)
    if not tree.exists():
        made = subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit],
                              cwd=identity.PROJECT_ROOT, capture_output=True, text=True)
        if made.returncode != 0:
            return (f"the records' commit {commit[:12]} cannot be checked out here "
                    f"({made.stderr.strip()[-200:]})"), ""
    old_runs = work / "runs"
    overrides = [*(o for o in record.overrides if not o.startswith("launcher")),
                 *(o for o in where if not o.startswith(("runs_root=", "launcher"))),
                 f"runs_root={old_runs}"]
    # the commit's own packages first on the path: an older train.py may not put its tree
    # there itself, and would then import this tree's (the editable install's) modules
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
    ran = subprocess.run([sys.executable, "scripts/train.py", *overrides], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=OLD_RUN_TIMEOUT_S)
    rdir = old_runs / task / optim / key
    if not (rdir / "summary.json").exists():
        tail = (ran.stderr or ran.stdout).strip()[-300:]
        made = sorted(p.parent.name for p in old_runs.glob(f"{task}/{optim}/*/summary.json"))
        return (f"the records' code could not be run again at commit {commit[:12]}: "
                + (f"it made run {made[-1]}, not the record's {key} (the record was made by "
                   f"a tree that commit does not hold)" if made else f"exit {ran.returncode}: "
                                                                     f"{tail}")), ""
    old = records.RunRecord(record.row, record.overrides, store.read_summary(rdir),
                            tuple(store.MetricsLog(rdir / "metrics.jsonl").read()), str(rdir))
    why = freshness.differences(old, summary_now, metrics_now)
    if why:
        return f"the records' own code (commit {commit[:12]}), run here, differs too: {why}", ""
    return "", f"its records' own code (commit {commit[:12]}) run here, as run {key}"


def _records_commit(record: records.RunRecord) -> str:
    commit = str(((record.summary or {}).get("environment") or {}).get("git_commit") or "")
    # a record made from a tree with uncommitted edits names its commit "-dirty": the commit
    # is tried all the same, and the run key tells whether those edits changed the code
    return commit.removesuffix("-dirty")


def remove_worktrees(runs_root: Path, commits: set[str]) -> None:
    """The records' commits checked out for certification (git worktrees) are let go."""
    for commit in sorted(c for c in commits if c):
        tree = runs_root / "_certify" / commit[:12] / "tree"
        if tree.exists():
            _remove_worktree(tree)


def _remove_worktree(tree: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)],
                   cwd=identity.PROJECT_ROOT, capture_output=True)
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=identity.PROJECT_ROOT, capture_output=True)


def _checked_out(tree: Path, commit: str) -> bool:
    """Whether `tree` holds `commit` whole: HEAD is it and no tracked file is missing or
    changed."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0 or not head.stdout.strip().startswith(commit):
        return False
    changed = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                              "--untracked-files=no"], capture_output=True, text=True)
    return changed.returncode == 0 and not changed.stdout.strip()
