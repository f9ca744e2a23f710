"""What is trained: one module per task, plus the single-run loop (`tasks.run`).

`run` is imported on first use so that light users of this package (the sweep CLI reading run
dirs) do not pay for importing torch.
"""


def run(cfg):
    """Train one run (see tasks/run.py)."""
    from tasks.run import run as _run

    return _run(cfg)


__all__ = ["run"]
