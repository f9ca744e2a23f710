"""Write a collected table: results/<table>/<scale>/table.{md,csv,tex} and figures, each with a
provenance header (command, commit, scale, machine, date). Our numbers and the paper's stand in
separate columns, never mixed."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sweeps import edges, figures, sources
from sweeps.collect import Row, ratio_columns
from sweeps.spec import Table, is_paper_scale
from sweeps.verdict import Verdict, average_ranks
from tasks.train import store
from tasks.train.environment import environment_label, git_commit

ROOT = Path(__file__).resolve().parent.parent


def provenance(command: str, table: Table) -> dict:
    """Who rendered the table, where and when; stored with its run records, so that a
    re-render from them prints the same header."""
    return {"command": command, "commit": git_commit(), "scale": table.scale,
            "scale_label": table.scale_label,
            "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def run_environments(rows) -> str:
    """The distinct environments (commit, library versions, device) the table's runs came
    from: one entry when they agree, each with its number of runs otherwise."""
    labels = [environment_label(record.get("environment"))
              for r in rows for record in r.best_runs]
    counts = {label: labels.count(label) for label in dict.fromkeys(labels)}
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"[{n} runs] {label}" for label, n in counts.items())


def _fmt(x, digits=4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return "diverged"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def table_rows(table: Table, rows: list[Row], best: set[str],
               grids: dict) -> tuple[list[str], list[list[str]]]:
    ratios = ratio_columns(table, rows)
    failures = any(r.failed for r in rows)  # a column only where a run failed
    header = ["row", "best lr", f"{table.metric.name} (mean ± std)", "seeds", "diverged runs",
              *(["failed runs"] if failures else []), *table.report, *ratios, "paper"]
    body = []
    for r in rows:
        if r.failed_everywhere:
            mean = "failed at every lr"
        elif r.mean is None:
            mean = "diverged at every lr"
        elif r.n == 1:
            mean = f"{_fmt(r.mean)} (one seed)"
        else:
            mean = f"{_fmt(r.mean)} ± {_fmt(r.std, 2)}"
        label = f"**{r.label}**" if r.label in best else r.label
        paper = table.paper.get(r.key.base)
        best_lr = _fmt(r.best_lr) + "".join(f", {k}={v}" for k, v in r.best_tuned)
        side = edges.edge(r, grids[r.label]) if r.label in grids else None
        if side is not None:
            best_lr += f" (on the {side} edge)"
        body.append([label, best_lr, mean, str(r.n), str(r.diverged),
                     *([str(r.failed)] if failures else []),
                     *[_fmt(r.extra.get(c)) for c in table.report],
                     *[_fmt(values[r.label], 3) for values in ratios.values()],
                     _fmt(paper) if paper is not None else "–"])
    return header, body


@dataclass(frozen=True)
class Rendered:
    """A table ready to write: what every format shows, decided and laid out once."""

    table: Table
    rows: list[Row]
    rankings: list  # (best label, lead) per set of comparable rows (collect.ranking)
    verdict: Verdict
    provenance: dict  # provenance() + the runs' code versions, commits, environments, compute
    grids: dict  # each tuned row's final lr grid
    spec_grids: dict  # ... and the grid the spec declared
    ablation: tuple[str, ...]
    rules: tuple[str, ...]  # the fair-settings lines (sweeps/fairness.py describe)
    header: list[str]  # the table's columns ...
    body: list[list[str]]  # ... and cells, the best row of each set bold (markdown)


def rendered(table: Table, rows: list[Row], rankings, verdict: Verdict, prov: dict,
             grids: dict | None = None, spec_grids: dict | None = None,
             ablation=(), rules=()) -> Rendered:
    """The table laid out for its writers: the provenance completed from the runs (commits,
    environments, compute) and the rows as cells."""
    grids, spec_grids = grids or {}, spec_grids or {}
    prov = dict(prov)
    run_commits = sorted({str(record.get("git_commit")) for r in rows for record in r.best_runs})
    # a run made from a tree with uncommitted changes keeps its "-dirty" mark
    prov["runs_made_at_commits"] = ", ".join(
        dict.fromkeys(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in run_commits))
    prov["run_environments"] = run_environments(rows)
    prov["compute"] = compute(rows)
    best = {label for label, _ in rankings if label is not None}
    header, body = table_rows(table, rows, best, grids)
    return Rendered(table, rows, rankings, verdict, prov, grids, spec_grids, tuple(ablation),
                    tuple(rules), header, body)


def write_markdown(r: Rendered, out: Path) -> None:
    """table.md: the claim, the verdict and how it was decided, the settings' rules and
    sources, the provenance, the table, the rankings and every setting's metric."""
    table, rows, prov = r.table, r.rows, r.provenance
    md = [f"# {table.title}", ""]
    if not table.is_paper:
        md += ["> **Miniature.** " + prov["scale_label"] + ": not the paper's scale; it checks "
               "the pipeline and the direction of the claim, not the paper's numbers.", ""]
    if r.ablation:
        md += [f"Ablation: `{' '.join(r.ablation)}` on top of the table's spec.", ""]
    md += [f"Claim tested: {table.claim}", "", f"**{r.verdict.line}**", ""]
    if table.untested:
        md += [f"Not tested here: {table.untested}", ""]
    if r.verdict.details:
        md += ["How the verdict was decided (sweeps/verdict.py: each comparison's 95% t "
               "interval of the difference d, positive in the claimed direction; Holm-adjusted "
               "over the comparisons of a claim):", "",
               *[f"- {line}" for line in r.verdict.details], ""]
    if table.regime:
        md += [f"Why this setting can show the claim: {table.regime}", ""]
    if r.rules:
        md += ["Settings the rows do not own, by one rule for every row:", "",
               *[f"- {line}" for line in r.rules], ""]
    md += [*[f"- {k}: `{v}`" for k, v in prov.items()], "",
           "| " + " | ".join(r.header) + " |", "|" + "---|" * len(r.header)]
    md += ["| " + " | ".join(row) + " |" for row in r.body]
    failed = [row for row in rows if row.failed]
    if failed:
        md += ["", "Failed runs (they raised: an error, not a result; a setting with one has no "
               "mean, and a row that failed at every setting is no row of the verdict):", ""]
        md += [f"- {row.label}: {row.failed} run(s); first error: {row.first_error}"
               for row in failed]
    if not table.is_paper and table.paper:
        md += ["", "The 'paper' column is the paper's own setting, not this miniature's: the two "
               "are not comparable number for number, only in which row wins."]
    md += ["", "Best of each set of comparable rows (bold; rows compare only with rows of the "
           "same variant, lr multiple and ablation):", ""]
    md += [f"- {label} — {lead}" for label, lead in r.rankings]
    if table.average_rank:
        ranked = average_ranks(rows, table.metric.mode)
        md += ["", "Average rank over the variants (1 = best in a variant; ties share):", ""]
        md += [f"- {optim}: {rank:.3g}" for optim, rank in sorted(ranked.items(),
                                                                  key=lambda kv: kv[1])]
    md += ["", f"Each optimizer's setting was chosen from its own search space (all of equal "
           f"size before edge extensions) by the mean {table.metric.key} over seeds; "
           f"'paper' is the paper's reported number where public, never ours.", "",
           *search_space(table, r.grids, r.spec_grids), "",
           "Metric by setting (mean over seeds; – = a seed diverged), with the seeds that "
           "diverged and the loss-spike events summed over seeds:", ""]
    for row in rows:
        md.append(f"- {row.label}: " + ", ".join(
            f"{_setting(cell.lr, cell.tuned)} → {_fmt(cell.mean)}"
            + (f" [diverged {cell.diverged}]" if cell.diverged else "")
            + (f" [failed {cell.failed}]" if cell.failed else "")
            + (f" [spikes {cell.spikes}]" if cell.spikes else "")
            for cell in row.cells.values()))
    md += ["", *paper_settings(table)]
    store.write_text(out / "table.md", "\n".join(md) + "\n")


def write_csv(r: Rendered, out: Path) -> None:
    """table.csv: the table's cells, without markdown's bold."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(r.header)
    writer.writerows([[c.replace("**", "") for c in row] for row in r.body])
    store.write_text(out / "table.csv", buf.getvalue())


def write_tex(r: Rendered, out: Path) -> None:
    """table.tex: a tabular, with the provenance and the verdict as comments."""
    tex = ["% " + json.dumps(r.provenance), "% " + r.verdict.line,
           "\\begin{tabular}{" + "l" * len(r.header) + "}", "\\hline",
           " & ".join(r.header).replace("±", "$\\pm$").replace("_", "\\_") + " \\\\ \\hline"]
    for row in r.body:
        cells = [c.replace("**", "").replace("±", "$\\pm$").replace("_", "\\_") for c in row]
        if row[0].startswith("**"):
            cells[0] = "\\textbf{" + cells[0] + "}"
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\hline", "\\end{tabular}"]
    store.write_text(out / "table.tex", "\n".join(tex) + "\n")


def write_figures(r: Rendered, out: Path) -> None:
    figures.draw(r.table, r.rows, out)


WRITERS = (write_markdown, write_csv, write_tex, write_figures)  # one per format


def render(result: Rendered, out: Path) -> Path:
    """Write the table in every format into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for write in WRITERS:
        write(result, out)
    return out


def compute(rows: list[Row]) -> str:
    """The table's compute: its runs and their wall time, summed (what a miniature's budget
    counts)."""
    runs = [record for r in rows for cell in r.cells.values() for record in cell.runs]
    seconds = sum((record.get("wall_time_s") or 0.0) for record in runs)
    return f"{len(runs)} runs, {seconds / 60:.1f} min of run wall time, summed"


def _setting(lr: float, tuned: tuple) -> str:
    return f"{lr:g}" + "".join(f", {k}={v}" for k, v in tuned)


def search_space(table: Table, grids: dict | None = None,
                 spec_grids: dict | None = None) -> list[str]:
    """What was tuned for each optimizer, the budget every one of them got, and the lrs the
    edge rule added to each row's grid after seeing its results."""
    n = next(iter(table.optimizers.values())).budget
    lines = [f"Tuned, per optimizer ({n} configuration(s) each, the same budget for all):"]
    for optim, search in table.optimizers.items():
        lines.append(f"- {optim}: " + " × ".join(
            f"{k} {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
            for k, vs in search.grids().items()))
    if table.lr_multipliers:
        lines.append(f"- rows at {list(table.lr_multipliers)} × each optimizer's first lr, "
                     f"untuned")
    widened = {label: edges.added(spec_grids.get(label, grid), grid)
               for label, grid in (grids or {}).items()}
    widened = {label: lrs for label, lrs in widened.items() if lrs}
    if grids:
        lines += ["", "Grids widened after seeing results, by the edge rule (a best lr on an "
                  "edge adds the next lr beyond it, the same for every row): "
                  + ("; ".join(f"{label} +{{{', '.join(f'{x:g}' for x in lrs)}}}"
                               for label, lrs in widened.items()) if widened else "none")
                  + ". A best lr still on an edge of its final grid is flagged in the table."]
    return lines


def paper_settings(table: Table) -> list[str]:
    """The sources block: at a paper scale, its own; under a miniature, every paper scale's,
    so the reader sees what the miniature stands in for."""
    if table.is_paper:
        return ["## Where this scale's settings come from", "",
                *sources.markdown({table.scale: table.sources[table.scale]})]
    paper = {s: v for s, v in table.sources.items() if is_paper_scale(s)}
    return ["## The paper-scale settings this miniature stands in for, and their sources", "",
            "The miniature runs none of them at size; they are what `scale=paper` (and any "
            "`paper_*` scale) runs.", "", *sources.markdown(paper)]
