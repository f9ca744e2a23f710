"""A rendered table's figures, drawn from its rows' run records: loss curves with the spike
events the table counts, the metric against the lr, and the figures a spec asks for."""

from __future__ import annotations

import math
from pathlib import Path

from sweeps.collect import Row
from sweeps.records import RunRecord
from sweeps.spec import Table


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


def spike_marks(record: RunRecord, steps: list[int],
                losses: list[float]) -> tuple[list, list]:
    """Where the run's spike events began (the tracker's steps, the rule the table counts
    with), placed on the logged curve at the nearest logged step."""
    starts = record.get("spikes.spike_event_starts") or []
    xs, ys = [], []
    for t in starts:
        i = min(range(len(steps)), key=lambda j: abs(steps[j] - t))
        xs.append(t)
        ys.append(losses[i])
    return xs, ys


def draw(table: Table, rows: list[Row], out: Path) -> None:
    """loss_curves.png: one panel per row, seed 0's train loss at every lr the row ran (its
    chosen `tune` setting), smoothed over the raw curve, spike events marked (x) as the table
    counts them, the chosen lr drawn thick; metric_vs_lr.png: the final metric against the lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in rows if r.cells]
    if panels:
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(5 * ncols, 7), 3.4 * nrows + 0.6),
                                 squeeze=False, sharey=True)
        for ax, r in zip(axes.flat, panels):
            cells = [c for c in r.cells.values() if c.tuned == r.best_tuned]
            colors = plt.cm.viridis([i / max(1, len(cells) - 1) for i in range(len(cells))])
            for color, cell in zip(colors, cells):
                steps, losses = cell.runs[0].loss_curve()
                if not losses:
                    continue
                chosen = cell.lr == r.best_lr
                ax.plot(steps, losses, color=color, alpha=0.2, linewidth=0.6)
                ax.plot(steps, smoothed(losses, max(1, len(losses) // 50)), color=color,
                        linewidth=2.2 if chosen else 1.0,
                        label=f"lr {cell.lr:g}" + (" (chosen)" if chosen else ""))
                xs, ys = spike_marks(cell.runs[0], steps, losses)
                ax.scatter(xs, ys, marker="x", color=color, zorder=3, s=18)
            ax.set_title(r.label, fontsize=9)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        axes[0][0].set_ylabel("train loss")
        fig.suptitle(f"{table.name}: train loss, seed 0\n(smoothed over the faint raw "
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
    ax.set_ylabel(table.metric.name)
    ax.set_title(f"{table.name}: final metric vs lr (missing points diverged)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "metric_vs_lr.png", dpi=120)
    plt.close(fig)
    for name in table.figures:  # the table's own figures
        FIGURES[name](rows, out, plt)


def p_per_layer_figure(rows, out: Path, plt) -> None:
    """SMuon's chosen Schatten p per layer over training (the `p/<layer>` columns its runs log),
    seed 0 at the chosen lr of each row that has them."""
    logs = []
    for r in rows:
        if r.best_runs:
            log = r.best_runs[0].metrics
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
    logs = [(r, r.best_runs[0].metrics) for r in rows if r.best_runs]
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


# Figures a table spec may ask for with `figures: [name, ...]` (spec.FIGURE_NAMES), beyond the
# two every table has.
FIGURES = {"p_per_layer": p_per_layer_figure, "update_vs_spikes": update_vs_spikes_figure}
