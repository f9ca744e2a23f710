"""Write a collected table: results/<table>/<scale>/table.{md,csv,tex} and figures, each with a
provenance header (command, commit, scale, machine, date). Our numbers and the paper's stand in
separate columns, never mixed."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from sweeps import edges, sources
from sweeps.table import budget, is_paper_scale, ratio_columns
from tasks.train import store
from tasks.train.environment import environment_label, git_commit

ROOT = Path(__file__).resolve().parent.parent


def provenance(command: str, scale: str, spec: dict) -> dict:
    """Who rendered the table, where and when; stored with its run records, so that a
    re-render from them prints the same header."""
    return {"command": command, "commit": git_commit(), "scale": scale,
            "scale_label": spec["scales"][scale]["label"],
            "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def code_versions(run_dirs) -> dict[str, int]:
    """{optimizer and task code version: number of runs} over the given run dirs."""
    versions = [str((store.read_summary(d) or {}).get("code_version")) for d in run_dirs]
    return {v: versions.count(v) for v in sorted(set(versions))}


def check_code_versions(run_dirs, allow_mixed: bool) -> str:
    """The table's code version(s) as one line; an error when runs of several versions would
    be mixed without `allow_mixed`."""
    versions = code_versions(run_dirs)
    line = ", ".join(f"{v} ({n} runs)" for v, n in versions.items())
    if len(versions) > 1 and not allow_mixed:
        raise ValueError(f"the table's runs were made by different optimizer/task code: {line}. "
                         f"Re-run the stale ones (their keys changed with the code), or pass "
                         f"--allow-mixed to render them together, said so in the table")
    return line


def run_environments(rows) -> str:
    """The distinct environments (commit, library versions, device) the table's runs came
    from: one entry when they agree, each with its number of runs otherwise."""
    labels = [environment_label((store.read_summary(d) or {}).get("environment"))
              for r in rows for d in r.best_runs]
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


def table_rows(spec: dict, rows, best: set[str], grids: dict) -> tuple[list[str],
                                                                      list[list[str]]]:
    metric = spec["metric"].get("label", spec["metric"]["key"])
    ratios = ratio_columns(spec, rows)
    header = ["row", "best lr", f"{metric} (mean ± std)", "seeds", "diverged runs",
              *spec.get("report", []), *ratios, "paper"]
    body = []
    for r in rows:
        if r.mean is None:
            mean = "diverged at every lr"
        elif r.n == 1:
            mean = f"{_fmt(r.mean)} (one seed)"
        else:
            mean = f"{_fmt(r.mean)} ± {_fmt(r.std, 2)}"
        label = f"**{r.label}**" if r.label in best else r.label
        paper = (spec.get("paper") or {}).get(r.key.base)
        best_lr = _fmt(r.best_lr) + "".join(f", {k}={v}" for k, v in r.best_tuned)
        side = edges.edge(r, grids[r.label]) if r.label in grids else None
        if side is not None:
            best_lr += f" (on the {side} edge)"
        body.append([label, best_lr, mean, str(r.n), str(r.diverged),
                     *[_fmt(r.extra.get(c)) for c in spec.get("report", [])],
                     *[_fmt(values[r.label], 3) for values in ratios.values()],
                     _fmt(paper) if paper is not None else "–"])
    return header, body


def render(spec: dict, scale: str, rows, rankings, verdict, prov: dict,
           grids: dict | None = None, spec_grids: dict | None = None,
           out_root: Path = ROOT / "results", variant: str = "",
           ablation: list[str] = ()) -> Path:
    """Write table.{md,csv,tex} and the figures. `rankings`: (best label, lead) per set of
    comparable rows (table.ranking); `verdict`: verdict.Verdict; `prov`: provenance() plus the
    runs' code versions; `grids`/`spec_grids`: each tuned row's final and declared lr grid."""
    grids, spec_grids = grids or {}, spec_grids or {}
    out = out_root / spec["name"] / (scale + (f"-{variant}" if variant else ""))
    out.mkdir(parents=True, exist_ok=True)
    prov = dict(prov)
    run_commits = sorted({str((store.read_summary(d) or {}).get("git_commit"))
                          for r in rows for d in r.best_runs})
    # a run made from a tree with uncommitted changes keeps its "-dirty" mark
    prov["runs_made_at_commits"] = ", ".join(
        dict.fromkeys(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in run_commits))
    prov["run_environments"] = run_environments(rows)
    best = {label for label, _ in rankings if label is not None}
    header, body = table_rows(spec, rows, best, grids)
    md = [f"# {spec['title']}", ""]
    if not is_paper_scale(scale):
        md += ["> **Miniature.** " + prov["scale_label"] + ": not the paper's scale; it checks "
               "the pipeline and the direction of the claim, not the paper's numbers.", ""]
    if ablation:
        md += [f"Ablation: `{' '.join(ablation)}` on top of the table's spec.", ""]
    md += [f"Claim tested: {spec['claim']}", "", f"**{verdict.line}**", ""]
    regime = spec["scales"][scale].get("regime")
    if regime:
        md += [f"Why this setting can show the claim: {regime}", ""]
    md += [*[f"- {k}: `{v}`" for k, v in prov.items()], "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    if not is_paper_scale(scale) and spec.get("paper"):
        md += ["", "The 'paper' column is the paper's own setting, not this miniature's: the two "
               "are not comparable number for number, only in which row wins."]
    md += ["", "Best of each set of comparable rows (bold; rows compare only with rows of the "
           "same variant, lr multiple and ablation):", ""]
    md += [f"- {label} — {lead}" for label, lead in rankings]
    if spec.get("average_rank"):
        from sweeps.verdict import average_ranks

        ranked = average_ranks(rows, spec["metric"].get("mode", "min"))
        md += ["", "Average rank over the variants (1 = best in a variant; ties share):", ""]
        md += [f"- {optim}: {rank:.3g}" for optim, rank in sorted(ranked.items(),
                                                                  key=lambda kv: kv[1])]
    md += ["", f"Each optimizer's setting was chosen from its own search space (all of equal "
           f"size before edge extensions) by the mean {spec['metric']['key']} over seeds; "
           f"'paper' is the paper's reported number where public, never ours.", "",
           *search_space(spec, grids, spec_grids), "",
           "Metric by setting (mean over seeds; – = a seed diverged), with the seeds that "
           "diverged and the loss-spike events summed over seeds:", ""]
    for r in rows:
        md.append(f"- {r.label}: " + ", ".join(
            f"{_setting(lr, tuned)} → {_fmt(v)}"
            + (f" [diverged {r.diverged_at[(lr, tuned)]}]" if r.diverged_at and
               r.diverged_at.get((lr, tuned)) else "")
            + (f" [spikes {r.spikes_at[(lr, tuned)]}]" if r.spikes_at and
               r.spikes_at.get((lr, tuned)) else "")
            for (lr, tuned), v in
            (r.per_setting or {(lr, ()): v for lr, v in r.per_lr.items()}).items()))
    md += ["", *paper_settings(spec, scale)]
    (out / "table.md").write_text("\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([[c.replace("**", "") for c in row] for row in body])
    (out / "table.csv").write_text(buf.getvalue())
    tex = ["% " + json.dumps(prov), "% " + verdict.line,
           "\\begin{tabular}{" + "l" * len(header) + "}", "\\hline",
           " & ".join(header).replace("±", "$\\pm$").replace("_", "\\_") + " \\\\ \\hline"]
    for row in body:
        cells = [c.replace("**", "").replace("±", "$\\pm$").replace("_", "\\_") for c in row]
        if row[0].startswith("**"):
            cells[0] = "\\textbf{" + cells[0] + "}"
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\hline", "\\end{tabular}"]
    (out / "table.tex").write_text("\n".join(tex) + "\n")
    figures(spec, rows, out)
    return out


def _setting(lr: float, tuned: tuple) -> str:
    return f"{lr:g}" + "".join(f", {k}={v}" for k, v in tuned)


def search_space(spec: dict, grids: dict | None = None,
                 spec_grids: dict | None = None) -> list[str]:
    """What was tuned for each optimizer, the budget every one of them got, and the lrs the
    edge rule added to each row's grid after seeing its results."""
    entries = spec["optimizers"]
    n = budget(next(iter(entries.values())))
    lines = [f"Tuned, per optimizer ({n} configuration(s) each, the same budget for all):"]
    for optim, entry in entries.items():
        grids_of = {"lr": entry["lr"], **(entry.get("tune") or {})}
        lines.append(f"- {optim}: " + " × ".join(
            f"{k} {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
            for k, vs in grids_of.items()))
    if spec.get("lr_multipliers"):
        lines.append(f"- rows at {spec['lr_multipliers']} × each optimizer's first lr, untuned")
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


def paper_settings(spec: dict, scale: str) -> list[str]:
    """The sources block: at a paper scale, its own; under a miniature, every paper scale's,
    so the reader sees what the miniature stands in for."""
    if is_paper_scale(scale):
        return ["## Where this scale's settings come from", "", *sources.markdown(spec, [scale])]
    paper = [s for s in spec["scales"] if is_paper_scale(s)]
    return ["## The paper-scale settings this miniature stands in for, and their sources", "",
            "The miniature runs none of them at size; they are what `scale=paper` (and any "
            "`paper_*` scale) runs.", "", *sources.markdown(spec, paper)]


def smoothed(values: list[float], span: int) -> list[float]:
    """An exponential moving average over `span` points (≈ the window), NaN passed through."""
    alpha, out, ema = 2.0 / (span + 1.0), [], None
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(float("nan"))
            continue
        ema = v if ema is None else ema + alpha * (v - ema)
        out.append(ema)
    return out


def spike_marks(run_dir: Path, steps: list[int], losses: list[float]) -> tuple[list, list]:
    """Where the run's spike events began (the tracker's steps, the rule the table counts
    with), placed on the logged curve at the nearest logged step."""
    starts = ((store.read_summary(run_dir) or {}).get("spikes") or {}).get(
        "spike_event_starts") or []
    xs, ys = [], []
    for t in starts:
        i = min(range(len(steps)), key=lambda j: abs(steps[j] - t))
        xs.append(t)
        ys.append(losses[i])
    return xs, ys


def _loss_log(run_dir: Path) -> tuple[list[int], list[float]]:
    log = store.MetricsLog(Path(run_dir) / "metrics.jsonl").read()
    rows = [x for x in log if "loss" in x]
    return [x["step"] for x in rows], [x["loss"] for x in rows]


def figures(spec: dict, rows, out: Path) -> None:
    """loss_curves.png: one panel per row, seed 0's train loss at every lr the row ran (its
    chosen `tune` setting), smoothed over the raw curve, spike events marked (x) as the table
    counts them, the chosen lr drawn thick; metric_vs_lr.png: the final metric against the lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in rows if r.dirs_at]
    if panels:
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(5 * ncols, 7), 3.4 * nrows + 0.6),
                                 squeeze=False, sharey=True)
        for ax, r in zip(axes.flat, panels):
            settings = [s for s in r.dirs_at if s[1] == r.best_tuned]
            colors = plt.cm.viridis([i / max(1, len(settings) - 1) for i in range(len(settings))])
            for color, setting in zip(colors, settings):
                steps, losses = _loss_log(r.dirs_at[setting][0])
                if not losses:
                    continue
                chosen = setting[0] == r.best_lr
                ax.plot(steps, losses, color=color, alpha=0.2, linewidth=0.6)
                ax.plot(steps, smoothed(losses, max(1, len(losses) // 50)), color=color,
                        linewidth=2.2 if chosen else 1.0,
                        label=f"lr {setting[0]:g}" + (" (chosen)" if chosen else ""))
                xs, ys = spike_marks(r.dirs_at[setting][0], steps, losses)
                ax.scatter(xs, ys, marker="x", color=color, zorder=3, s=18)
            ax.set_title(r.label, fontsize=9)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        axes[0][0].set_ylabel("train loss")
        fig.suptitle(f"{spec['name']}: train loss, seed 0\n(smoothed over the faint raw "
                     f"curve; x = a spike event, as the table counts them)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "loss_curves.png", dpi=110)
        plt.close(fig)

    colors = plt.cm.tab20.colors
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, r in enumerate(rows):
        pts = [(lr, v) for lr, v in r.per_lr.items() if v is not None]
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o", label=r.label, color=colors[k % len(colors)])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(spec["metric"].get("label", spec["metric"]["key"]))
    ax.set_title(f"{spec['name']}: final metric vs lr (missing points diverged)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "metric_vs_lr.png", dpi=120)
    plt.close(fig)
    for name in spec.get("figures", []):  # the table's own figures (table.FIGURES)
        FIGURES[name](rows, out, plt)


def p_per_layer_figure(rows, out: Path, plt) -> None:
    """SMuon's chosen Schatten p per layer over training (the `p/<layer>` columns its runs log),
    seed 0 at the chosen lr of each row that has them."""
    logs = []
    for r in rows:
        if r.best_runs:
            log = store.MetricsLog(Path(r.best_runs[0]) / "metrics.jsonl").read()
            if any(k.startswith("p/") for x in log for k in x):
                logs.append((r, log))
    if not logs:
        return
    fig, axes = plt.subplots(1, len(logs), figsize=(9 * len(logs), 4.5), squeeze=False)
    for ax, (r, log) in zip(axes[0], logs):
        layers = sorted({k for x in log for k in x if k.startswith("p/")})
        for k, layer in enumerate(layers):
            pts = [(x["step"], x[layer]) for x in log if layer in x]
            ax.plot(*zip(*pts), label=layer[2:], color=plt.cm.tab20.colors[k % 20])
        ax.set_xlabel("step")
        ax.set_ylabel("chosen Schatten p")
        ax.set_yscale("log")
        ax.set_title(f"{r.label} (lr {r.best_lr:g}): p per layer")
        ax.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2)
    fig.tight_layout()
    fig.savefig(out / "p_per_layer.png", dpi=120)
    plt.close(fig)


def update_vs_spikes_figure(rows, out: Path, plt) -> None:
    """The largest coordinate update over the lr, max|Δθ|/lr (the `update_max` and `lr` each log
    step records), above the loss with its spikes marked, step for step: S3's update is bounded
    by its lr (ratio ≤ 1 but for weight decay), Adam's and the NAG baselines' are not."""
    logs = [(r, store.MetricsLog(Path(r.best_runs[0]) / "metrics.jsonl").read())
            for r in rows if r.best_runs]
    logs = [(r, [x for x in log if "update_max" in x and x.get("lr")]) for r, log in logs]
    logs = [(r, log) for r, log in logs if log]
    if not logs:
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for k, (r, log) in enumerate(logs):
        color = plt.cm.tab20.colors[k % 20]
        steps = [x["step"] for x in log]
        top.plot(steps, [x["update_max"] / x["lr"] for x in log], color=color,
                 label=f"{r.label} (lr {r.best_lr:g})")
        losses = [x["loss"] for x in log]
        bottom.plot(steps, losses, color=color)
        xs, ys = spike_marks(r.best_runs[0], steps, losses)
        bottom.scatter(xs, ys, marker="x", color=color, zorder=3)
    top.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    top.set_yscale("log")
    top.set_ylabel("max |Δθ| / lr")
    top.set_title("largest coordinate update over the lr (dashed: S3's bound) and the loss "
                  "(x = spike)")
    top.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("train loss")
    fig.tight_layout()
    fig.savefig(out / "update_vs_spikes.png", dpi=120)
    plt.close(fig)


# Figures a table spec may ask for with `figures: [name, ...]`, beyond the two every table has.
FIGURES = {"p_per_layer": p_per_layer_figure, "update_vs_spikes": update_vs_spikes_figure}
