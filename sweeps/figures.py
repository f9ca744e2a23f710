"""A rendered table's figures, drawn from its rows' run records: loss curves with the spike
events the table counts, the metric against the lr, and the figures a spec asks for."""

from __future__ import annotations

import math
from pathlib import Path

from sweeps.collect import Row
from sweeps.records import RunRecord
from sweeps.spec import Table
from tasks.train import store


def save(fig, path: Path, **kwargs) -> None:
    """The figure as a PNG written whole (temporary file, then rename): an interrupted render
    leaves the committed figure as it was."""
    store.atomic_write(path, lambda f: fig.savefig(f, format="png", **kwargs))


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


MIN_METRIC_POINTS = 8  # fewer eval points than this draw no curve: the train loss shows more


def curve_key(table: Table, rows: list[Row]) -> str:
    """What the loss figure plots: the table's own metric where the runs log it over training
    at MIN_METRIC_POINTS steps or more (`final.distance` → the `distance` column of the eval
    steps), else the train loss."""
    column = table.metric.key.removeprefix("final.")
    points = max((sum(column in x for x in run.metrics) for r in rows
                  for c in r.cells.values() for run in c.runs), default=0)
    return column if column != table.metric.key and points >= MIN_METRIC_POINTS else "loss"


def seed_curves(cell, key: str) -> list[tuple[list[int], list[float]]]:
    """(steps, values) of `key` for each seed's run of a setting."""
    out = []
    for run in cell.runs:
        points = [(x["step"], x[key]) for x in run.metrics
                  if isinstance(x.get(key), (int, float))]
        if points:
            out.append(tuple(map(list, zip(*points))))
    return out


def mean_curve(curves: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """The pointwise mean over seeds, on the steps every seed logged (a diverged seed's curve
    ends early: the mean stops with it)."""
    if not curves:
        return [], []
    length = min(len(steps) for steps, _ in curves)
    steps = curves[0][0][:length]
    return steps, [sum(values[i] for _, values in curves) / len(curves) for i in range(length)]


def draw(table: Table, rows: list[Row], out: Path) -> None:
    """loss_curves.png: one panel per row; at the chosen lr every seed faint and their mean on
    top, at its other lrs the mean over seeds thin; the table's own metric where the runs log
    it over training, else the train loss with spike events marked (x) as the table counts
    them. metric_vs_lr.png: the final metric against the lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = curve_key(table, rows)
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
                curves = seed_curves(cell, key)
                if not curves:
                    continue
                chosen = cell.lr == r.best_lr
                if chosen:
                    for steps, values in curves:
                        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.6)
                steps, mean = mean_curve(curves)
                ax.plot(steps, smoothed(mean, max(1, len(mean) // 50)) if key == "loss"
                        else mean, color=color, linewidth=2.2 if chosen else 0.9,
                        label=f"lr {cell.lr:g}" + (f" (chosen; {len(curves)} seeds)"
                                                   if chosen else ""))
                if key == "loss":
                    first_steps, first = curves[0]
                    xs, ys = spike_marks(cell.runs[0], first_steps, first)
                    ax.scatter(xs, ys, marker="x", color=color, zorder=3, s=18)
            ax.set_title(r.label, fontsize=9)
            if all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
                ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        what = "train loss" if key == "loss" else f"{key} (the table's metric)"
        axes[0][0].set_ylabel(what)
        # the suptitle in its own band at the top, in inches: tall figures kept overlapping it
        height, lines = fig.get_figheight(), 2 if key == "loss" else 1
        fig.suptitle(f"{table.name}: {what}; at the chosen lr each seed faint and the mean "
                     f"thick, other lrs their mean"
                     + ("\n(smoothed; x = a spike event of each setting's first seed, as the "
                        "table counts them)" if key == "loss" else ""), fontsize=10,
                     y=1 - 0.08 / height, va="top")
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.2 + 0.2 * lines) / height))
        save(fig, out / "loss_curves.png", dpi=110)
        plt.close(fig)

    colors = plt.cm.tab20.colors
    fig, ax = plt.subplots(figsize=(9, 4.5))
    lines = shared_lines(rows)
    for k, (pts, labels) in enumerate(lines.items()):
        label = labels[0] if len(labels) == 1 else " = ".join(labels) + " (identical)"
        ax.plot(*zip(*pts), marker="o", label=label, color=colors[k % len(colors)])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(table.metric.name)
    missing = "diverged or failed (raised)" if any(r.failed for r in rows) else "diverged"
    shared = sum(len(labels) for labels in lines.values() if len(labels) > 1)
    ax.set_title(f"{table.name}: final metric vs lr (missing points {missing})"
                 + (f"\n{shared} rows share a line with others: equal at every lr"
                    if shared else ""), fontsize=10)
    # below the axes, one entry a line: long labels (and groups of them) stay whole
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.14))
    save(fig, out / "metric_vs_lr.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    for name in table.figures:  # the table's own figures
        FIGURES[name](rows, out, plt)


def shared_lines(rows) -> dict[tuple, list[str]]:
    """{(lr, value) points: the labels of the rows with them}: rows with the same value (to 6
    digits) at every lr would hide under one line; they get one line, every label."""
    lines: dict[tuple, list[str]] = {}
    for r in rows:
        pts = tuple(sorted((lr, float(f"{v:.6g}")) for lr, v in r.per_lr.items()
                           if v is not None))
        if pts:
            lines.setdefault(pts, []).append(r.label)
    return lines


def p_per_layer_figure(rows, out: Path, plt) -> None:
    """SMuon's chosen Schatten p per layer over training (the `p/<layer>` columns its runs log),
    the first seed at the chosen lr of each row that has them: one panel per row, two panels a line,
    layers coloured by depth (viridis, first → last) with their names shortened to what tells
    them apart, and a legend only where it fits (≤ 12 layers)."""
    logs = []
    for r in rows:
        if r.best_runs:
            log = r.best_runs[0].metrics
            if any(k.startswith("p/") for x in log for k in x):
                logs.append((r, log))
    if not logs:
        return
    ncols = min(2, len(logs))
    nrows = math.ceil(len(logs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 3.8 * nrows + 0.4), squeeze=False)
    for ax, (r, log) in zip(axes.flat, logs):
        layers = [k for k in dict.fromkeys(k for x in log for k in x) if k.startswith("p/")]
        names = short_names([layer[2:] for layer in layers])
        colors = plt.cm.viridis([i / max(1, len(layers) - 1) for i in range(len(layers))])
        for color, layer, name in zip(colors, layers, names):
            pts = [(x["step"], x[layer]) for x in log if layer in x]
            ax.plot(*zip(*pts), label=name, color=color, linewidth=0.9)
        ax.set_xlabel("step")
        ax.set_ylabel("chosen Schatten p")
        ax.set_yscale("log")
        ax.set_title(f"{r.label} (lr {r.best_lr:g}): p of {len(layers)} layers, seed "
                     f"{r.chosen.seeds[0]}", fontsize=9)
        if len(layers) <= 12:
            ax.legend(fontsize=6, ncol=2)
        else:
            ax.text(0.01, 0.02, f"colour: layer order, {names[0]} (dark) → {names[-1]} "
                    f"(light)", transform=ax.transAxes, fontsize=6)
    for ax in list(axes.flat)[len(logs):]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, out / "p_per_layer.png", dpi=110)
    plt.close(fig)


def short_names(names: list[str]) -> list[str]:
    """Layer names less the dotted prefix and suffix they all share."""
    parts = [n.split(".") for n in names]
    if len(parts) < 2:
        return names
    head = 0
    while all(len(p) > head + 1 and p[head] == parts[0][head] for p in parts):
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 and p[-1 - tail] == parts[0][-1 - tail] for p in parts):
        tail += 1
    return [".".join(p[head:len(p) - tail]) for p in parts]


def _most_spiking_run(row):
    """(lr, run): the row's run with the most loss-spike events, the larger lr on a tie (so a
    row that never spiked shows its largest lr): where an update's size and a spike meet."""
    runs = [(rec.get("spikes.spike_count") or 0, cell.lr, -i, rec)
            for cell in row.cells.values() for i, rec in enumerate(cell.runs)
            if any("update_max" in x and x.get("lr") for x in rec.metrics)]
    if not runs:
        return None
    spikes, lr, _, rec = max(runs, key=lambda t: t[:3])
    return lr, rec


def update_vs_spikes_figure(rows, out: Path, plt) -> None:
    """The largest coordinate update over the lr, max|Δθ|/lr (the `update_max` and `lr` each log
    step records), above the loss with its spikes marked, step for step, for each row's run with
    the most spikes: S3's update is bounded by its lr (ratio ≤ 1 but for weight decay), Adam's
    and the NAG baselines' are not."""
    picked = [(r, _most_spiking_run(r)) for r in rows]
    picked = [(r, lr, rec) for r, found in picked if found for lr, rec in [found]]
    if not picked:
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for k, (r, lr, rec) in enumerate(picked):
        color = plt.cm.tab20.colors[k % 20]
        log = [x for x in rec.metrics if "update_max" in x and x.get("lr")]
        steps = [x["step"] for x in log]
        spikes = rec.get("spikes.spike_count") or 0
        top.plot(steps, [x["update_max"] / x["lr"] for x in log], color=color,
                 label=f"{r.label} (lr {lr:g}, {spikes:g} spikes)")
        losses = [x["loss"] for x in log]
        bottom.plot(steps, losses, color=color)
        xs, ys = spike_marks(rec, steps, losses)
        bottom.scatter(xs, ys, marker="x", color=color, zorder=3)
    top.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    top.set_yscale("log")
    top.set_ylabel("max |Δθ| / lr")
    top.set_title("each row's run with the most loss spikes: its largest coordinate update over "
                  "the lr (dashed: S3's bound) and its loss (x = spike)", fontsize=9)
    top.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("train loss")
    fig.tight_layout()
    save(fig, out / "update_vs_spikes.png", dpi=120)
    plt.close(fig)


# Figures a table spec may ask for with `figures: [name, ...]` (spec.FIGURE_NAMES), beyond the
# two every table has.
FIGURES = {"p_per_layer": p_per_layer_figure, "update_vs_spikes": update_vs_spikes_figure}
