"""What is trained: one module per task, plus the single-run loop (`tasks.run`).

`run` is imported on first use so that light users of this package (the sweep CLI reading run
dirs) do not pay for importing torch.
"""


def run(cfg):
    """Train one run (see tasks/runner.py). The module is not named `run`: importing it would
    replace this function with the module as the package's `run` attribute."""
    from tasks.runner import run as _run

    return _run(cfg)


__all__ = ["run"]
