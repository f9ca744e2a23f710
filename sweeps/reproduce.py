"""One paper table end to end: load its spec at a scale, plan or launch the runs that are
missing, wait for them if asked, widen a grid whose best lr sits on its edge (sweeps/edges.py),
and once every run has ended read their records (the one read of the run dirs), then collect,
decide and render from the records, and write them beside the table. `render_only` renders the
committed table again from those records alone.

    spec.load → Table.expand → launch → records.from_run_dirs → collect → decide → render
                                                    records.read ↗ (--render-only)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from sweeps import confirm, edges, fairness, index, leaderboard, records, reuse, sequential, spec
from sweeps.certify import certify as certify_table
from sweeps.collect import code_versions, collect, ranking
from sweeps.compose import compose_runs
from sweeps.contender import Contender, with_contender
from sweeps.launch import launch
from sweeps.plan import Hardware, plan_table
from sweeps.render import ROOT, provenance, render, rendered
from sweeps.status import RunState, wait_for_sweep
from sweeps.verdict import decide
from tasks.train import identity

RESULTS = ROOT / "results"


def _scale(overrides: list[str]) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("scale=")), "tiny")


def reproduce(table_name: str, overrides: list[str], command: str, wait: bool = False,
              poll_s: float = 5.0, plan: Hardware | None = None, render_only: bool = False,
              allow_mixed: bool = False, results: Path = RESULTS,
              contender: Contender | None = None, certify: bool = False,
              tables: Path = spec.TABLE_DIR, committed: Path | None = None) -> int:
    """Exit code: 0 rendered, planned or submitted; 1 a run failed; 2 bad input (raised as
    ConfigError / ValueError before anything is submitted). With a `contender` the table gets
    its row (sweeps/contender.py) and is written under `results`, the contender results root.
    `tables`: where the table specs are (conf/table/). `committed`: the results root holding
    the table's own records (`results`, or results/ for a contender), whose fresh and
    certified runs are taken instead of run again (sweeps/reuse.py)."""
    scale = _scale(overrides)
    extra, notes = spec.launcher_overrides(
        scale, [o for o in overrides if not o.startswith("scale=")])
    table = spec.load(table_name, tables).at(scale)
    folder = table.folder(extra)
    if contender is not None:
        table, folder = _enter(table, contender, extra, results), f"{folder}-{contender.name}"
    if render_only:
        return render_from_records(table, results / table.name / folder)
    if certify:  # the records' own overrides, and where this machine keeps runs and data
        where = [o for o in overrides if o.split("=", 1)[0].lstrip("+").split(".")[0]
                 in ("runs_root", "data_root", "launcher")]
        return certify_table(results / table.name / folder, results, where, poll_s,
                             render=lambda out: render_from_records(table, out), tables=tables)
    for note in notes:
        print(note)
    runs = table.expand(extra, aux=table.placeholder_aux())  # the tie: the plan's cost only
    name, ablation = table.sweep_name(extra)
    if contender is not None:  # its own manifest: the table's own launches stay as they were
        name = f"{name}-with-{contender.name}"
    if plan is not None:
        text, invalid = plan_table(name, scale, runs, plan, table.extra_conf)
        print(text)
        if _ties(table, extra):
            print(f"aux lr rule: the Muon-family rows' auxiliary Adam follows the "
                  f"{fairness.REFERENCE} row's chosen lr, known once it has run: their keys and "
                  f"status here are a placeholder's (aux_lr 0); their cost is not")
        return 2 if invalid else 0
    launcher = compose_runs([list(runs[0].overrides)], validate_runs=False,
                            extra_conf=table.extra_conf)[0][1]["launcher"]
    for warning in spec.launcher_warnings(scale, launcher):
        print(warning, file=sys.stderr)
    spec_grids = table.spec_grids(runs)
    grids, aux = spec_grids, None
    if committed is None:
        committed = RESULTS if contender is not None else results
    pool = reuse.Pool.committed(committed / table.name / table.folder(extra), tables)
    if pool.source is not None:
        print(f"reusing the runs of {pool.source} whose keys this tree gives "
              f"({len(pool.by_key)} fresh or certified): only the others run")
    if _ties(table, extra):  # the adamw row first: the Muon rows' aux Adam follows its lr
        tuned = _tune(table, name, _reference_extra(extra), grids, None, wait, poll_s,
                      pool=pool)
        if tuned is None:
            return 0
        aux = fairness.tied_lrs(tuned.rows, table.variants)
        grids = {**grids, **tuned.grids}
        print(f"aux lr rule: the Muon-family rows' auxiliary Adam runs at the "
              f"{fairness.REFERENCE} row's chosen lr: {fairness.shown_tied(aux)}")
        frozen = frozenset(r.label for r in tuned.rows)
    else:
        frozen = frozenset()
    tuned = _tune(table, name, extra, grids, aux, wait, poll_s, frozen, pool)
    if tuned is None:
        return 0
    runs, recorded, grids, states = tuned.runs, tuned.recorded, tuned.grids, tuned.states
    tabled = records.TableRecords(provenance(command, table), tuple(extra), grids, allow_mixed,
                                  tuple(recorded), aux or {},
                                  pool.certificates_for(tuned.taken))
    out, verdict = _render(table, runs, tabled, spec_grids, ablation,
                           results / table.name / folder)
    records.write(out, tabled)
    index.write(results, tables)
    if contender is None:  # the leaderboard follows every table (contenders: --contenders)
        leaderboard.write(results, results, tables=tables)
    print(f"wrote {out}/table.md (+ .csv, .tex, figures, {records.RECORDS_FILE}); "
          f"index {results}/README.md" + ("" if contender else ", leaderboard.md"))
    if contender is not None:
        print(f"your optimizer ({contender.name} = {contender.source}) in {table.name}: "
              f"{verdict.line}")
    return 1 if any(s.state.name == RunState.FAILED for s in states) else 0


@dataclass
class Tuned:
    """A set of rows run to the end of the edge rule: their runs, records and final grids."""

    runs: list
    recorded: list
    grids: dict
    states: list
    rows: list
    taken: list  # the records taken from the pool instead of run


def _tune(table: spec.Table, name: str, extra: list[str], grids: dict, aux: dict | None,
          wait: bool, poll_s: float, frozen: frozenset = frozenset(),
          pool: reuse.Pool = reuse.Pool.empty()) -> Tuned | None:
    """Launch the runs the pool does not hold, wait, widen grids whose best lr is on an edge
    and run again, at most `extend_edges` times; None while runs are still pending (the command
    is re-run to go on)."""
    for round_ in range(table.extend_edges + 1):
        runs = table.expand(extra, grids, aux)
        composed = compose_runs([list(r.overrides) for r in runs], validate_runs=False,
                                extra_conf=table.extra_conf)
        # a taken record carries this expansion's overrides: the same key, so they differ
        # only in what no number depends on (where runs and data live)
        held = {i: replace(pool.by_key[identity.run_key(cfg)],
                                       overrides=tuple(runs[i].overrides))
                for i, (_, cfg) in enumerate(composed) if identity.run_key(cfg) in pool.by_key}
        todo = [i for i in range(len(runs)) if i not in held]
        states, made = [], {}
        if todo:
            result = launch(name, runs=[list(runs[i].overrides) for i in todo],
                            extra_conf=table.extra_conf)
            print(f"{name}: {len(runs)} runs, {len(held)} taken from the records; submitted "
                  f"{len(result.submitted)}"
                  + (f" as job array {result.job_ids[0].split('_')[0]}" if result.job_ids
                     else ""))
            runs_root = Path(result.runs[0][1]["runs_root"])
            states = wait_for_sweep(runs_root, name, poll_s, until_done=wait, progress=False)
            pending = sum(s.state.name not in (RunState.COMPLETED, RunState.DIVERGED,
                                               RunState.FAILED) for s in states)
            if pending:
                print(f"{pending} runs not finished yet; run the same command again (or --wait) "
                      f"to render. Status: python scripts/sweep.py status {name}")
                return None
            made = dict(zip(todo, records.from_run_dirs(
                [runs[i] for i in todo], {j: Path(s.run_dir) for j, s in enumerate(states)})))
        else:
            print(f"{name}: {len(runs)} runs, every one taken from the records")
        recorded = [held[i] if i in held else made[i] for i in range(len(runs))]
        rows = collect(table, runs, recorded)
        # a frozen row (the tie's reference, already tuned) keeps its grid and its chosen lr
        wider = {**grids, **edges.extend([r for r in rows if r.label not in frozen], grids)}
        wider.update({label: grids[label] for label in frozen if label in grids})
        if wider == grids or round_ == table.extend_edges:
            return Tuned(runs, recorded, grids, states, rows, list(held.values()))
        print("edge rule: " + "; ".join(
            f"{label} +{edges.added(grids[label], grid)}" for label, grid in wider.items()
            if grid != grids[label]))
        grids = wider
    raise AssertionError("unreachable")


def _ties(table: spec.Table, extra: list[str]) -> bool:
    """Whether runs of this table need the adamw row's chosen lr (a tied aux lr)."""
    return table.tied and any(
        fairness.is_muon_family(r.optim, table.extra_conf)
        for r in table.expand(extra, aux=table.placeholder_aux()))


def _reference_extra(extra: list[str]) -> list[str]:
    """The overrides that run only the reference row: the same ablation where it has the key."""
    return [*(o for o in extra if not o.startswith(("optim=", "optim."))
              or (o.startswith("optim.") and spec.has_key(fairness.REFERENCE, o))),
            f"optim={fairness.REFERENCE}"]


def _enter(table: spec.Table, contender: Contender, extra: list[str],
           results: Path) -> spec.Table:
    """The table with the contender's row; its optimizer config where runs compose it."""
    chosen = [o for o in extra if o.startswith(("optim=", "optim."))]
    if chosen:
        raise spec.SpecError(f"--contender runs the whole table under its own rules; give no "
                             f"optimizer overrides ({chosen})")
    conf_dir = results / "conf"
    contender.write_config(conf_dir)
    return replace(with_contender(table, contender), extra_conf=(conf_dir,))


def _render(table: spec.Table, runs: list[spec.Run], tabled: records.TableRecords,
            spec_grids: dict, ablation: list[str], out: Path):
    """Collect, decide and render the table from its records: (its folder, its verdict)."""
    rows = collect(table, runs, list(tabled.runs))
    versions = code_versions(list(tabled.runs), tabled.allow_mixed, tabled.certificates)
    added = sequential.read(out)
    verdict = (sequential.decide(table, rows, added, tabled.grids) if added is not None
               else decide(table, rows, tabled.grids))
    confirmation = confirm.read(out)
    if confirmation is not None:  # the pilot's reading is superseded by the experiment's
        verdict = confirm.decide(table, rows, confirmation, tabled.grids, verdict, added)
    rules = fairness.describe(table, runs, tabled.aux or {})
    prov = {**tabled.provenance, "code_versions": versions}
    if tabled.certificates:
        prov["certified"] = "; ".join(
            f"{c.task}/{c.optim} {c.made_at} → {c.now} (run {c.run_key} bit-identical to "
            f"{c.basis or 'its record'}, commit {c.commit[:12]}, {c.date})"
            for c in tabled.certificates)
    result = rendered(table, rows, ranking(table, rows), verdict, prov, tabled.grids,
                      spec_grids, ablation=ablation, rules=rules)
    return render(result, out), verdict


def render_from_records(table: spec.Table, out: Path) -> int:
    """Render the table in `out` again from its committed run records, as it was."""
    tabled = records.read(out)
    runs = table.expand(list(tabled.extra), tabled.grids, tabled.aux or None)
    if [tuple(r.overrides) for r in runs] != [r.overrides for r in tabled.runs]:
        raise ValueError(f"{out}/{records.RECORDS_FILE} was made from another version of "
                         f"conf/table/{table.name}.yaml (its runs differ from the spec's); "
                         f"re-run the table to render it")
    _, ablation = table.sweep_name(list(tabled.extra))
    _render(table, runs, tabled, table.spec_grids(runs), ablation, out)
    print(f"re-rendered {out} from {records.RECORDS_FILE}")
    return 0


def _committed(table_name: str, overrides: list[str], flag: str, budget_min: float,
               results: Path, tables: Path):
    """(table, launcher overrides, results folder, records) of the committed table that
    `flag` (--decide, --confirm) adds runs to, checked before anything runs."""
    if not budget_min > 0:
        raise ValueError(f"--budget-min must be a number of minutes > 0, got {budget_min!r}")
    scale = _scale(overrides)
    extra, _ = spec.launcher_overrides(scale, [o for o in overrides if not o.startswith("scale=")])
    table = spec.load(table_name, tables).at(scale)
    if not table.claim_parts:
        raise spec.SpecError(f"table {table.name} states no claim: {flag} has nothing to decide")
    out = results / table.name / table.folder(extra)
    return table, extra, out, records.read(out)


def decide_more(table_name: str, overrides: list[str], command: str, budget_min: float,
                poll_s: float = 5.0, results: Path = RESULTS,
                tables: Path = spec.TABLE_DIR) -> int:
    """`reproduce.py TABLE --decide`: stage 2 of the two-stage design (sweeps/sequential.py)
    on the committed table: plan the seeds its undecided comparisons need within
    `budget_min` minutes of run time, run them at each row's chosen setting, wait, and render
    the table with the design's verdict. Exit 0 decided or rendered, 1 a run failed."""
    table, extra, out, tabled = _committed(table_name, overrides, "--decide", budget_min,
                                           results, tables)
    if confirm.read(out) is not None:
        raise ValueError(f"{out} has a confirmatory experiment ({confirm.CONFIRM_FILE}) and its "
                         f"verdict is final: a stage 2 now would be one more look at the claim")
    before = sequential.read(out)
    runs = table.expand(list(tabled.extra), tabled.grids, tabled.aux or None)
    rows = collect(table, runs, list(tabled.runs))
    planned = sequential.plan(table, rows, budget_min,
                              done=frozenset(before.seeds) if before else frozenset())
    for line in planned.lines:
        print(f"stage 1: {line}")
    if before is not None and not planned.seeds:
        print(f"{out} already has its stage 2 ({sequential.ADDED_FILE}) for every comparison "
              f"the budget can fund: the design has two stages, and its verdict is final")
        return render_from_records(table, out)
    if not planned.eligible:
        raise ValueError(f"table {table.name}: no comparison of its claim has a difference to "
                         f"test (a row did not finish): --decide has nothing to add seeds to")
    made, failed = [], False
    if planned.seeds:
        stage2 = _seed_runs(tabled, rows, planned.seeds, planned.grid, extra)
        rows_added = ", ".join(f"{k} +{len(v)}" for k, v in planned.seeds.items())
        print(f"stage 2: {len(stage2)} runs ({rows_added}), about {planned.minutes:.1f} min "
              f"of run time")
        made, failed = _run_and_wait(table, stage2, extra, "decide", poll_s)
    elif planned.asked:
        print(f"stage 2: the budget covers no row's {sequential.MIN_ADDED} seeds; nothing ran "
              f"and nothing was written (give a larger --budget-min)")
        return 2
    else:
        print("stage 2: nothing to add: every comparison was decided at stage 1")
    if before is None:
        added = sequential.Added(planned.seeds, tuple(made), budget_min, command,
                                 grid=planned.grid)
    else:  # the comparisons that had no stage 2 get theirs beside the others'
        added = sequential.Added({**before.seeds, **planned.seeds}, (*before.runs, *made),
                                 before.budget_min + budget_min, f"{before.command}; {command}",
                                 before.design, (*before.grid, *planned.grid))
    sequential.write(out, added)
    render_from_records(table, out)
    index.write(results, tables)
    print(f"wrote {out}/table.md with the two-stage verdict and {sequential.ADDED_FILE}")
    return 1 if failed else 0


def _seed_runs(tabled: records.TableRecords, rows: list, seeds: dict, grid: tuple[str, ...],
               extra: list[str]) -> list[spec.Run]:
    """The runs of `seeds` (row label → seeds) at each row's chosen setting (at every lr for
    the rows in `grid`)."""
    by_label = {r.label: r for r in rows}
    return [spec.Run(by_label[label].key, cell.lr, seed,
                     (*[o for o in cell.runs[0].overrides
                        if o not in tabled.extra and not o.startswith("seed=")],
                      f"seed={seed}", *extra), cell.tuned)
            for label, row_seeds in seeds.items()
            for cell in sequential.cells_read(by_label[label], label in grid)
            for seed in row_seeds]


def _run_and_wait(table: spec.Table, runs: list[spec.Run], extra: list[str], suffix: str,
                  poll_s: float):
    """`runs` as one job array, waited for: (their records, whether any failed)."""
    name = f"{table.sweep_name(extra)[0]}-{suffix}"
    result = launch(name, runs=[list(r.overrides) for r in runs], extra_conf=table.extra_conf)
    runs_root = Path(result.runs[0][1]["runs_root"])
    states = wait_for_sweep(runs_root, name, poll_s, until_done=True, progress=False)
    made = records.from_run_dirs(runs, {j: Path(st.run_dir) for j, st in enumerate(states)})
    return made, any(st.state.name == RunState.FAILED for st in states)


def confirm_more(table_name: str, overrides: list[str], command: str, budget_min: float,
                 poll_s: float = 5.0, results: Path = RESULTS,
                 tables: Path = spec.TABLE_DIR) -> int:
    """`reproduce.py TABLE --confirm`: the confirmatory experiment of a committed table
    (sweeps/confirm.py): fresh seeds for its compared rows at their chosen settings, sized for
    90% power from the table's spread, run within `budget_min` minutes or not at all; the
    table is rendered with the experiment's verdict. Exit 0 rendered, 1 a run failed."""
    table, extra, out, tabled = _committed(table_name, overrides, "--confirm", budget_min,
                                           results, tables)
    if confirm.read(out) is not None:
        print(f"{out} already has its confirmation ({confirm.CONFIRM_FILE}): its verdict is "
              f"final; another would be one more look at the claim")
        return render_from_records(table, out)
    added = sequential.read(out)
    runs = table.expand(list(tabled.extra), tabled.grids, tabled.aux or None)
    rows = collect(table, runs, list(tabled.runs))
    planned = confirm.plan(table, confirm.pilot(table, rows, added),
                           confirm.used_seeds(tabled, added), budget_min)
    for line in planned.sizing:
        print(f"confirm: {line}")
    fresh = _seed_runs(tabled, rows, planned.seeds, (), extra)
    print(f"confirm: {len(fresh)} runs, about {planned.minutes:.1f} min of run time")
    made, failed = _run_and_wait(table, fresh, extra, "confirm", poll_s)
    confirm.write(out, confirm.Confirmation(planned.seeds, tuple(made), budget_min, command,
                                            tuple(planned.sizing)))
    render_from_records(table, out)
    index.write(results, tables)
    print(f"wrote {out}/table.md with the confirmation's verdict and {confirm.CONFIRM_FILE}")
    return 1 if failed else 0
