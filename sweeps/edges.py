"""Edge-aware lr search: a best lr on the edge of its grid says the optimum may lie beyond it.

The rule, the same for every row: when a row's best lr is the smallest (largest) of its grid,
add one lr below (above) it, the grid's own factor between its two outermost points on that
side, run it, and look again; at most `extend_edges` times (a spec key, per scale too). A row
that diverged at every lr reaches down. Rows at fixed lr multiples are not tuned and not
extended, and neither are rows whose runs failed at every lr (errors say nothing about the lr).
The grids live in the table's run records, and the table prints each final grid and flags a row
still on an edge.
"""

from __future__ import annotations

from sweeps.collect import Row


def edge(row: Row, grid: list[float]) -> str | None:
    """'low' or 'high' when the row's best lr is on that edge of its grid (or, having diverged
    everywhere, has only 'low' to try); None inside it or for a one-point grid."""
    if len(grid) < 2 or row.failed_everywhere:  # errors say nothing about the lr
        return None
    if row.best_lr is None:
        return "low"
    if row.best_lr <= grid[0]:
        return "low"
    if row.best_lr >= grid[-1]:
        return "high"
    return None


def beyond(grid: list[float], side: str) -> float:
    """The next lr past `side` of the grid, at the grid's own factor there (3 significant
    digits, so that 1e-3 × 3 prints as 0.003)."""
    if side == "low":
        value = grid[0] * grid[0] / grid[1]
    else:
        value = grid[-1] * grid[-1] / grid[-2]
    return float(f"{value:.3g}")


def extend(rows: list[Row], grids: dict[str, list[float]]) -> dict[str, list[float]]:
    """The grids with one more lr for every row on an edge; rows not in `grids` (fixed lr
    multiples) are left alone."""
    out = {label: list(grid) for label, grid in grids.items()}
    for row in rows:
        grid = out.get(row.label)
        side = edge(row, grid) if grid else None
        if side is not None:
            out[row.label] = sorted({*grid, beyond(grid, side)})
    return out


def added(spec_grid: list[float], grid: list[float]) -> list[float]:
    """The lrs edge-aware tuning added to a row's spec grid."""
    return [lr for lr in grid if lr not in spec_grid]
