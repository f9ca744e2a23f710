"""What is trained: one package per problem (nanogpt, cifar, lora; nonsmooth a module), and the
harness that trains any of them (tasks/train/, one run: `tasks.run`).

`run` is imported on first use so that light users of this package (the sweep CLI reading run
dirs) do not pay for importing torch.
"""


def run(cfg, validated: bool = False):
    """Train one run (tasks/train/runner.py). The module is not named `run`: importing it
    would replace this function with the module as the package's `run` attribute."""
    from tasks.train.runner import run as _run

    return _run(cfg, validated)


__all__ = ["run"]
