"""A leaderboard across the tables, from their run records alone (`scripts/leaderboard.py`).

A *problem* is one table at one scale and one variant (its own task, or model size, or
dataset). In each, every optimizer enters with its best row: its tuned setting, chosen by the
table's own rule (sweeps/collect.py), never re-tuned here; rows at fixed lr multiples and
ablations are not entries, and a contender's results folder gives its own row only. A problem
counts only where at least two optimizers entered it: one entrant is best by construction.

- `ratio`: the row's metric against the problem's best over every entrant shown, contenders
  included (≥ 1, 1 for the best: best/value for a metric to maximize, value/best to minimize;
  a problem whose best value is not > 0 gives no ratios).
- the ranking (AlgoPerf's rule): the area under the Dolan–Moré performance profile on
  [1, τ_max] over (τ_max − 1), τ_max = 4, over EVERY counted problem, a problem the optimizer
  did not enter counting as failed. Entering few problems cannot raise a score.
- compared on: the counted problems the optimizer entered.
- P(better than AdamW): over the problems both entered, the probability that a seed of the
  optimizer beats a seed of AdamW (ties half), averaged over problems (rliable's probability
  of improvement), with a 95% stratified bootstrap interval (seeds resampled within each
  problem). rliable itself is not used: it pins arch < 8, whose 7.x does not import with
  pandas 3, a dependency of this project; the computation is a few lines here.
- steps to target against AdamW (modded-nanogpt's measure) and spikes, as before.

Colours are fixed per optimizer (the registry's order, contenders after it), so adding a
contender moves no one else's line. Every number comes from records.json.gz files; the
leaderboard renders byte for byte again from them, on any machine.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeps import figures, records, spec
from sweeps.collect import Row, collect
from sweeps.contender import Contender, with_contender
from tasks.train import store

TAU_MAX = 4.0  # AlgoPerf's largest ratio in its performance profiles
REFERENCE = "adamw"  # the steps-to-target and probability-of-improvement baseline
BOOTSTRAP_REPS = 2000


@dataclass(frozen=True)
class Entry:
    """One optimizer's best row in one problem."""

    problem: str  # table/scale[/variant]
    optim: str
    value: float
    maximize: bool  # the table's metric is better larger
    better: tuple[float, ...]  # per seed, signed so that larger is better
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
    """The entries of one rendered table (a contender's folder: its own row only)."""
    table, rows, contender = rows_of(folder, tables)
    tabled = records.read(folder)
    if tabled.extra and any(not o.startswith(("launcher", "runs_root", "data_root"))
                            for o in tabled.extra):
        return []  # an ablation's folder: its rows are not the table's
    sign = 1.0 if table.metric.mode == "max" else -1.0
    out = []
    for variant in table.variants:
        problem = f"{table.name}/{folder.name.split('-', 1)[0]}" + (f"/{variant}" if variant
                                                                    else "")
        mine = [r for r in rows if r.key.variant == variant and r.key.multiplier is None
                and not r.key.ablation and r.mean is not None and math.isfinite(r.mean)
                and (contender is None or r.key.optim == contender)]
        reference = next((r for r in rows if r.key.variant == variant
                          and r.key.optim == REFERENCE and r.key.multiplier is None
                          and not r.key.ablation), None)
        for r in mine:
            out.append(Entry(problem, r.key.optim, r.mean, sign > 0,
                             tuple(sign * v for v in r.values),
                             _steps_ratio(r, reference), _mean(r, "spikes.spike_count"),
                             r.key.optim == contender))
    return out


def _mean(row: Row, key: str) -> float | None:
    """The mean of a summary key at the row's chosen setting; None where it has none (a
    reference row that diverged at every lr: AdamW under emulated FP4)."""
    if row.chosen is None:
        return None
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
    """The area under ρ on [1, TAU_MAX], over TAU_MAX − 1 (exact: ρ is a step function); a
    problem not among `ratios` counts as failed (ratio ∞)."""
    inside = [r for r in ratios if r <= TAU_MAX]
    return sum(TAU_MAX - r for r in inside) / ((TAU_MAX - 1) * problems)


def counted(all_entries: list[Entry]) -> dict[str, list[Entry]]:
    """problem → its entries, for the problems at least two optimizers entered."""
    by_problem: dict[str, list[Entry]] = {}
    for e in all_entries:
        by_problem.setdefault(e.problem, []).append(e)
    return {p: es for p, es in sorted(by_problem.items()) if len({e.optim for e in es}) >= 2}


def ratios(problems: dict[str, list[Entry]]) -> dict[tuple[str, str], float | None]:
    """(problem, optimizer) → its metric against the problem's best over all its entrants."""
    out = {}
    for problem, es in problems.items():
        maximize = es[0].maximize
        best = (max if maximize else min)(e.value for e in es)
        for e in es:
            if best > 0 and e.value > 0:
                out[(problem, e.optim)] = best / e.value if maximize else e.value / best
            else:
                out[(problem, e.optim)] = None
    return out


def _beats(x: np.ndarray, y: np.ndarray) -> float:
    """P(a seed of x beats a seed of y), ties half (larger is better)."""
    greater = (x[:, None] > y[None, :]).mean()
    ties = (x[:, None] == y[None, :]).mean()
    return float(greater + 0.5 * ties)


def improvement(pairs: list[tuple[tuple, tuple]], reps: int = BOOTSTRAP_REPS
                ) -> tuple[float, float, float]:
    """(probability of improvement, 95% interval) over problems: `pairs` holds each shared
    problem's per-seed values (x, y), larger better. The interval is a stratified bootstrap:
    in every replicate each problem's seeds are resampled within it (seeded: the same bytes
    every time)."""
    point = statistics.mean(_beats(np.array(x), np.array(y)) for x, y in pairs)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(reps):
        draws.append(statistics.mean(
            _beats(rng.choice(np.array(x), len(x)), rng.choice(np.array(y), len(y)))
            for x, y in pairs))
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def board(all_entries: list[Entry]) -> list[dict]:
    """One line per optimizer, by AlgoPerf's score over every counted problem first."""
    problems = counted(all_entries)
    ratio = ratios(problems)
    lines = []
    for optim in sorted({e.optim for e in all_entries}):
        mine = [e for es in problems.values() for e in es if e.optim == optim]
        theirs = {e.problem: e for es in problems.values() for e in es if e.optim == REFERENCE}
        rs = [ratio[(e.problem, optim)] for e in mine if ratio[(e.problem, optim)] is not None]
        steps = [e.steps_vs_adamw for e in mine if e.steps_vs_adamw is not None]
        spikes = [e.spikes for e in mine if e.spikes is not None]
        shared = [(e.better, theirs[e.problem].better) for e in mine
                  if e.problem in theirs and optim != REFERENCE]
        lines.append({
            "optim": optim, "tables": len({e.problem.split("/")[0] for e in mine}),
            "compared_on": len(mine), "wins": sum(r == 1.0 for r in rs),
            "median_ratio": statistics.median(rs) if rs else None,
            "score": score(rs, len(problems)) if problems else None,
            "vs_adamw": (*improvement(shared), len(shared)) if shared else None,
            "steps_vs_adamw": statistics.median(steps) if steps else None,
            "spikes": statistics.mean(spikes) if spikes else None,
            "contender": any(e.contender for e in all_entries if e.optim == optim)})
    return sorted(lines, key=lambda line: (-(line["score"] or 0), line["optim"]))


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def markdown(lines: list[dict], all_entries: list[Entry], sources: list[str]) -> str:
    problems = counted(all_entries)
    ratio = ratios(problems)
    alone = sorted({e.problem for e in all_entries} - set(problems))
    md = ["# Leaderboard across the tables", "",
          "From the run records of every rendered table (sweeps/leaderboard.py); each optimizer "
          "at its tuned setting in each problem (a table at a scale and variant), as the table "
          "chose it. Most tables are miniatures: this ranks what they measured, not the papers' "
          "scale. What a row does not own (weight decay, the Muon family's auxiliary Adam lr) "
          "follows one rule per table, printed in the table (sweeps/fairness.py). A ratio is a "
          "mean over the table's seeds with no interval; only a table's verdict says whether "
          "one difference is real.", "",
          f"- {len(problems)} problems with at least two entrants count; {len(alone)} with one "
          f"(best by construction) do not",
          f"- score: the area under the Dolan–Moré performance profile on [1, {TAU_MAX:g}] over "
          f"all {len(problems)} counted problems, a problem not entered counting as failed "
          f"(AlgoPerf's rule): the ranking. Compared on: the counted problems entered",
          "- ratio: metric against the problem's best over every entrant shown (1 = best)",
          f"- P(> AdamW): over the problems shared with AdamW, the probability that a seed beats "
          f"a seed of AdamW (ties half), averaged over problems, with its 95% stratified "
          f"bootstrap interval ({BOOTSTRAP_REPS} replicates, seeds resampled within problems); "
          f"an interval that holds 0.5 decides nothing",
          "- steps vs AdamW: median over problems of steps to the table's target ÷ AdamW's "
          "(modded-nanogpt's measure), where both reached it",
          "- spikes: mean spike count per run at the chosen setting", "",
          "| rank | optimizer | score | compared on | tables | best in | median ratio | "
          "P(> AdamW) [95% CI] (problems) | steps vs AdamW | spikes |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for k, line in enumerate(lines, 1):
        name = f"**{line['optim']}** (contender)" if line["contender"] else line["optim"]
        versus = "–"
        if line["vs_adamw"] is not None:
            p, low, high, n = line["vs_adamw"]
            versus = f"{p:.2f} [{low:.2f}, {high:.2f}] ({n})"
        md.append(f"| {k} | {name} | {_fmt(line['score'])} | {line['compared_on']} | "
                  f"{line['tables']} | {line['wins']} | {_fmt(line['median_ratio'])} | "
                  f"{versus} | {_fmt(line['steps_vs_adamw'])} | {_fmt(line['spikes'])} |")
    md += ["", "## Problems", "", "| problem | optimizer | metric | ratio |", "|---|---|---|---|"]
    for problem, es in problems.items():
        for e in sorted(es, key=lambda e: (ratio[(problem, e.optim)] or math.inf, e.optim)):
            md.append(f"| {problem} | {e.optim} | {e.value:.4g} | "
                      f"{_fmt(ratio[(problem, e.optim)], 4)} |")
    if alone:
        md += ["", "Not counted (one entrant): " + ", ".join(alone)]
    md += ["", "Records read: " + ", ".join(f"`{s}`" for s in sources), ""]
    return "\n".join(md)


def colours(names: list[str]) -> dict[str, tuple]:
    """A fixed colour and line style per optimizer: the registry's order first (so a contender
    never moves anyone's colour), then the contenders by name."""
    import matplotlib.pyplot as plt

    import optim

    order = [spec_.name for spec_ in optim.REGISTRY]
    extra = sorted(n for n in names if n not in order)
    palette = [plt.cm.tab20(j) for j in (*range(0, 20, 2), *range(1, 20, 2))]  # dark first
    out = {}
    for i, name in enumerate([*order, *extra]):
        out[name] = (palette[i % 20], ("-", "--", ":")[i // 20 % 3])
    return out


def figure(lines: list[dict], all_entries: list[Entry], out: Path) -> None:
    """The performance profiles over every counted problem (an unentered one: failed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = counted(all_entries)
    ratio = ratios(problems)
    taus = [1 + i * (TAU_MAX - 1) / 300 for i in range(301)]
    style = colours([line["optim"] for line in lines])
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for line in lines:
        rs = [r for (p, o), r in ratio.items() if o == line["optim"] and r is not None]
        if rs and problems:
            colour, dash = style[line["optim"]]
            ax.step(taus, profile(rs, len(problems), taus), where="post", color=colour,
                    linestyle=dash, linewidth=3.0 if line["contender"] else 1.4,
                    label=f"{line['optim']}{' (contender)' if line['contender'] else ''} "
                          f"({line['compared_on']}/{len(problems)})")
    ax.set_xlabel("τ (ratio to the problem's best)")
    ax.set_ylabel(f"share of all {len(problems)} counted problems within τ")
    ax.set_title("Performance profiles (Dolan–Moré; a problem not entered counts as failed)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
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
