"""A leaderboard across the tables, from their run records alone (`scripts/leaderboard.py`).

A *problem* is one table at one scale and one variant (its own task, or model size, or
dataset). In each, every optimizer enters with its best row: its tuned setting, chosen by the
table's own rule (sweeps/collect.py), never re-tuned here; rows at fixed lr multiples and
ablations are not entries.

- `ratio`: the row's metric against the problem's best, ≥ 1 and 1 for the best (best/value for
  a metric to maximize, value/best to minimize; a problem whose best value is not > 0 gives no
  ratios, being unfit for one).
- performance profile (Dolan & Moré 2002): ρ(τ) = the share of problems where the optimizer's
  ratio is ≤ τ; its score the area under ρ on [1, τ_max] over (τ_max − 1), AlgoPerf's
  construction, with τ_max = 4 as there. AlgoPerf counts a workload a submission did not run
  as failed; here most optimizers enter only their own papers' tables, so the score is given
  over the problems entered and, beside it, over all problems (unentered = failed).
- steps to target against AdamW (modded-nanogpt's measure): where the problem has an AdamW row
  and both reached the table's target, the mean over seeds of steps(optimizer) / steps(AdamW).
- spikes: the mean spike count over seeds at the chosen setting.

Every number comes from records.json.gz files; the leaderboard renders byte for byte again from
them (its markdown and its figure), on any machine.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from sweeps import figures, records, spec
from sweeps.collect import Row, collect
from sweeps.contender import Contender, with_contender
from tasks.train import store

TAU_MAX = 4.0  # AlgoPerf's largest ratio in its performance profiles
REFERENCE = "adamw"  # the steps-to-target baseline


@dataclass(frozen=True)
class Entry:
    """One optimizer's best row in one problem."""

    problem: str  # table/scale[/variant]
    optim: str
    value: float
    ratio: float | None  # to the problem's best; None where the problem allows no ratio
    steps_vs_adamw: float | None
    spikes: float | None
    contender: bool = False


def table_folders(results: Path) -> list[Path]:
    """results/<table>/<folder>/ with run records, in order."""
    return sorted(p.parent for p in results.glob("*/*/" + records.RECORDS_FILE))


def rows_of(folder: Path, tables: Path = spec.TABLE_DIR) -> tuple[spec.Table, list[Row],
                                                                  str | None]:
    """(table, rows, contender name) of a rendered table, from its records alone."""
    tabled = records.read(folder)
    table_name, scale = folder.parent.name, folder.name.split("-", 1)[0]
    table = spec.load(table_name, tables).at(scale)
    found = re.search(r"--contender ([a-z][a-z0-9_]*)=", tabled.provenance.get("command", ""))
    contender = found.group(1) if found else None
    if contender:  # its row as the table gave it: the grid its records ran
        grid = tuple(tabled.grids.get(contender) or ())
        table = with_contender(table, Contender(contender, "", {}, grid[len(grid) // 2] if grid
                                                else 1.0, grid or None, "records"))
    runs = table.expand(list(tabled.extra), tabled.grids, tabled.aux or None)
    return table, collect(table, runs, list(tabled.runs)), contender


def entries(folder: Path, tables: Path = spec.TABLE_DIR) -> list[Entry]:
    table, rows, contender = rows_of(folder, tables)
    tabled = records.read(folder)
    if tabled.extra and any(not o.startswith(("launcher", "runs_root", "data_root"))
                            for o in tabled.extra):
        return []  # an ablation's folder: its rows are not the table's
    out = []
    for variant in table.variants:
        problem = f"{table.name}/{folder.name.split('-', 1)[0]}" + (f"/{variant}" if variant
                                                                    else "")
        mine = [r for r in rows if r.key.variant == variant and r.key.multiplier is None
                and not r.key.ablation and r.mean is not None and math.isfinite(r.mean)]
        if not mine:
            continue
        sign = 1 if table.metric.mode == "min" else -1
        best = min(r.mean * sign for r in mine) * sign
        reference = next((r for r in mine if r.key.optim == REFERENCE), None)
        for r in mine:
            ratio = None
            if best > 0 and r.mean > 0:
                ratio = r.mean / best if table.metric.mode == "min" else best / r.mean
            out.append(Entry(problem, r.key.optim, r.mean, ratio,
                             _steps_ratio(r, reference), _mean(r, "spikes.spike_count"),
                             r.key.optim == contender))
    return out


def _mean(row: Row, key: str) -> float | None:
    values = [run.get(key) for run in row.chosen.runs]
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.mean(values) if values else None


def _steps_ratio(row: Row, reference: Row | None) -> float | None:
    if reference is None or reference is row:
        return None
    mine = _mean(row, "convergence.steps_to_target")
    theirs = _mean(reference, "convergence.steps_to_target")
    return mine / theirs if mine and theirs else None


def profile(ratios: list[float], problems: int, taus: list[float]) -> list[float]:
    """ρ(τ) for each τ: the share of `problems` solved within τ of the best."""
    return [sum(r <= t for r in ratios) / problems for t in taus]


def score(ratios: list[float], problems: int) -> float:
    """The area under ρ on [1, TAU_MAX], over TAU_MAX − 1 (exact: ρ is a step function)."""
    inside = [r for r in ratios if r <= TAU_MAX]
    return sum(TAU_MAX - r for r in inside) / ((TAU_MAX - 1) * problems)


def board(all_entries: list[Entry]) -> list[dict]:
    """One line per optimizer, best score (over the problems entered) first."""
    problems = sorted({e.problem for e in all_entries if e.ratio is not None})
    lines = []
    for optim in sorted({e.optim for e in all_entries}):
        mine = [e for e in all_entries if e.optim == optim]
        ratios = [e.ratio for e in mine if e.ratio is not None]
        steps = [e.steps_vs_adamw for e in mine if e.steps_vs_adamw is not None]
        spikes = [e.spikes for e in mine if e.spikes is not None]
        lines.append({
            "optim": optim, "tables": len({e.problem.split("/")[0] for e in mine}),
            "problems": len(mine), "wins": sum(r == 1.0 for r in ratios),
            "median_ratio": statistics.median(ratios) if ratios else None,
            "score_entered": score(ratios, len(ratios)) if ratios else None,
            "score_all": score(ratios, len(problems)) if problems else None,
            "steps_vs_adamw": statistics.median(steps) if steps else None,
            "spikes": statistics.mean(spikes) if spikes else None,
            "contender": any(e.contender for e in mine)})
    return sorted(lines, key=lambda line: (-(line["score_entered"] or 0), line["optim"]))


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def markdown(lines: list[dict], all_entries: list[Entry], sources: list[str]) -> str:
    problems = sorted({e.problem for e in all_entries})
    md = ["# Leaderboard across the tables", "",
          "From the run records of every rendered table (sweeps/leaderboard.py); each optimizer "
          "at its tuned setting in each problem (a table at a scale and variant), as the table "
          "chose it. Most tables are miniatures: this ranks what they measured, not the papers' "
          "scale. A ratio is a mean over the table's seeds (one to three) with no interval: a "
          "\"best in\" or a ratio near 1 may be within noise, and only a table's verdict, "
          "with its interval, says whether a difference is real. What a row does not own "
          "(weight decay, the Muon family's auxiliary Adam lr) follows one rule per table, "
          "printed in the table (sweeps/fairness.py).", "",
          f"- ratio: metric against the problem's best (1 = best); score: the area under the "
          f"Dolan–Moré performance profile on [1, {TAU_MAX:g}] (AlgoPerf's construction), over "
          f"the problems entered, and over all {len(problems)} problems with an unentered one "
          f"counted as failed", "- steps vs AdamW: median over problems of steps to the table's "
          "target ÷ AdamW's (modded-nanogpt's measure), where both reached it",
          "- spikes: mean spike count per run at the chosen setting", "",
          "| optimizer | tables | problems | best in | median ratio | score (entered) | "
          "score (all) | steps vs AdamW | spikes |", "|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        name = f"**{line['optim']}** (contender)" if line["contender"] else line["optim"]
        md.append(f"| {name} | {line['tables']} | {line['problems']} | {line['wins']} | "
                  f"{_fmt(line['median_ratio'])} | {_fmt(line['score_entered'])} | "
                  f"{_fmt(line['score_all'])} | {_fmt(line['steps_vs_adamw'])} | "
                  f"{_fmt(line['spikes'])} |")
    md += ["", "## Problems", "", "| problem | optimizer | metric | ratio |", "|---|---|---|---|"]
    for e in sorted(all_entries, key=lambda e: (e.problem, e.ratio or math.inf, e.optim)):
        md.append(f"| {e.problem} | {e.optim} | {e.value:.4g} | {_fmt(e.ratio, 4)} |")
    md += ["", "Records read: " + ", ".join(f"`{s}`" for s in sources), ""]
    return "\n".join(md)


def figure(lines: list[dict], all_entries: list[Entry], out: Path) -> None:
    """The performance profiles over the problems each optimizer entered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = [1 + i * (TAU_MAX - 1) / 300 for i in range(301)]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, line in enumerate(lines):
        ratios = [e.ratio for e in all_entries if e.optim == line["optim"] and e.ratio]
        if ratios:  # ten colours, then the next line style: every line tells apart
            ax.step(taus, profile(ratios, len(ratios), taus), where="post",
                    color=plt.cm.tab10(i % 10), linestyle=("-", "--", ":")[i // 10 % 3],
                    linewidth=2.5 if line["contender"] else 1.2,
                    label=f"{line['optim']} ({len(ratios)})")
    ax.set_xlabel("τ (ratio to the problem's best)")
    ax.set_ylabel("share of problems entered within τ")
    ax.set_title("Performance profiles (Dolan–Moré) over the problems each optimizer entered")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    figures.save(fig, out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def write(results: Path, out: Path, extra: list[Path] = (),
          tables: Path = spec.TABLE_DIR) -> tuple[Path, Path]:
    """leaderboard.md and leaderboard.png in `out`, from the records under `results` and the
    contender results roots in `extra`."""
    folders = table_folders(results)
    contender_folders = [f for root in extra for f in table_folders(root)]
    # a contender's folder also holds the table's own rows, run beside it: only its own row
    # enters (its ratio is to the best of that table, the table's rows included)
    all_entries = [e for folder in folders for e in entries(folder, tables)] + [
        e for folder in contender_folders for e in entries(folder, tables) if e.contender]
    folders += contender_folders
    lines = board(all_entries)
    sources = [str(f.relative_to(f.parents[1].parent)) for f in folders]
    out.mkdir(parents=True, exist_ok=True)
    store.write_text(out / "leaderboard.md", markdown(lines, all_entries, sources))
    figure(lines, all_entries, out / "leaderboard.png")
    return out / "leaderboard.md", out / "leaderboard.png"
