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

from sweeps import sources
from sweeps.table import budget, is_paper_scale, ratio_columns
from tasks.train import store
from tasks.train.environment import environment_label, git_commit

ROOT = Path(__file__).resolve().parent.parent


def provenance(command: str, scale: str, spec: dict) -> dict:
    return {"command": command, "commit": git_commit(), "scale": scale,
            "scale_label": spec["scales"][scale]["label"],
            "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


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


def table_rows(spec: dict, rows, best: str | None) -> tuple[list[str], list[list[str]]]:
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
        label = f"**{r.label}**" if r.label == best else r.label
        paper = (spec.get("paper") or {}).get(r.key.base)
        best_lr = _fmt(r.best_lr) + "".join(f", {k}={v}" for k, v in r.best_tuned)
        body.append([label, best_lr, mean, str(r.n), str(r.diverged),
                     *[_fmt(r.extra.get(c)) for c in spec.get("report", [])],
                     *[_fmt(values[r.label], 3) for values in ratios.values()],
                     _fmt(paper) if paper is not None else "–"])
    return header, body


def render(spec: dict, scale: str, rows, best: str | None, verdict: str, command: str,
           out_root: Path = ROOT / "results", variant: str = "",
           ablation: list[str] = ()) -> Path:
    out = out_root / spec["name"] / (scale + (f"-{variant}" if variant else ""))
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(command, scale, spec)
    run_commits = sorted({str((store.read_summary(d) or {}).get("git_commit"))
                          for r in rows for d in r.best_runs})
    # a run made from a tree with uncommitted changes keeps its "-dirty" mark
    prov["runs_made_at_commits"] = ", ".join(
        dict.fromkeys(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in run_commits))
    prov["run_environments"] = run_environments(rows)
    header, body = table_rows(spec, rows, best)
    md = [f"# {spec['title']}", ""]
    if not is_paper_scale(scale):
        md += ["> **Miniature.** " + prov["scale_label"] + ": not the paper's scale; it checks "
               "the pipeline and the direction of the claim, not the paper's numbers.", ""]
    if ablation:
        md += [f"Ablation: `{' '.join(ablation)}` on top of the table's spec.", ""]
    md += [f"Claim tested: {spec['claim']}", "",
           *[f"- {k}: `{v}`" for k, v in prov.items()], "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    if not is_paper_scale(scale) and spec.get("paper"):
        md += ["", "The 'paper' column is the paper's own setting, not this miniature's: the two "
               "are not comparable number for number, only in which row wins."]
    md += ["", f"Best row (bold): {best} — {verdict}. Each optimizer's setting was chosen from "
           f"its own search space (all of equal size) by the mean {spec['metric']['key']} over "
           f"seeds; 'paper' is the paper's reported number where public, never ours.", "",
           *search_space(spec), "",
           "Metric by setting (mean over seeds; – = a seed diverged):", ""]
    for r in rows:
        md.append(f"- {r.label}: " + ", ".join(
            f"{_setting(lr, tuned)} → {_fmt(v)}" for (lr, tuned), v in
            (r.per_setting or {(lr, ()): v for lr, v in r.per_lr.items()}).items()))
    md += ["", *paper_settings(spec, scale)]
    (out / "table.md").write_text("\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([[c.replace("**", "") for c in row] for row in body])
    (out / "table.csv").write_text(buf.getvalue())
    tex = ["% " + json.dumps(prov), "\\begin{tabular}{" + "l" * len(header) + "}", "\\hline",
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


def search_space(spec: dict) -> list[str]:
    """What was tuned for each optimizer, and the budget every one of them got."""
    entries = spec["optimizers"]
    n = budget(next(iter(entries.values())))
    lines = [f"Tuned, per optimizer ({n} configuration(s) each, the same budget for all):"]
    for optim, entry in entries.items():
        grids = {"lr": entry["lr"], **(entry.get("tune") or {})}
        lines.append(f"- {optim}: " + " × ".join(
            f"{k} {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
            for k, vs in grids.items()))
    if spec.get("lr_multipliers"):
        lines.append(f"- rows at {spec['lr_multipliers']} × each optimizer's first lr, untuned")
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


def figures(spec: dict, rows, out: Path) -> None:
    """Loss curves (seed 0 at the chosen lr) with spikes marked; final metric vs lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.train.metrics import SpikeConfig, ema_spike_steps

    colors = plt.cm.tab20.colors
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, r in enumerate(rows):
        if not r.best_runs:
            continue
        log = store.MetricsLog(Path(r.best_runs[0]) / "metrics.jsonl").read()
        steps = [x["step"] for x in log if "loss" in x]
        losses = [x["loss"] for x in log if "loss" in x]
        if not losses:
            continue
        (line,) = ax.plot(steps, losses, label=f"{r.label} (lr {r.best_lr:g})",
                          color=colors[k % len(colors)])
        # spikes on the logged curve (one point per log step)
        marks = ema_spike_steps(losses, SpikeConfig(warmup=min(5, len(losses) - 1)))
        ax.scatter([steps[i] for i in marks], [losses[i] for i in marks], marker="x",
                   color=line.get_color(), zorder=3)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_yscale("log")
    ax.set_title(f"{spec['name']}: loss at each row's chosen lr (x = spike)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, r in enumerate(rows):
        pts = [(lr, v) for lr, v in r.per_lr.items() if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=r.label, color=colors[k % len(colors)])
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
    from tasks.train.metrics import SpikeConfig, ema_spike_steps

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
        marks = ema_spike_steps(losses, SpikeConfig(warmup=min(5, len(losses) - 1)))
        bottom.scatter([steps[i] for i in marks], [losses[i] for i in marks], marker="x",
                       color=color, zorder=3)
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
