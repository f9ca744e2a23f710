"""The training harness, apart from the problems it trains (tasks/<problem>/).

    runner       one run end to end: validate, lease, build, train, summary (`tasks.run`)
    assemble     a run put together from its config: task, optimizer, schedule, trainer
    loop         the task-agnostic training loop and its checkpoints
    summary      a finished run's summary.json
    config       checks of a composed run config (each component's own, run once)
    base         the Task contract a problem subclasses, and what a plan needs of it
    checks       value checks a problem's `validate_config` uses
    cost         FLOPs and memory traced on the meta device, for plans
    metrics      loss-spike, divergence and convergence metrics
    schedule, precision, distributed, wandb_mirror, epochs, checkpoint

The leaves both tasks/ and sweeps/ build on (they import nothing of ours but each other, and not
torch): `identity` (run key, run dir, and the version of the code a run executes), `store`
(atomic writes, summaries, the metrics log), `lease` (one writer per run dir), `environment`
(what a run ran on) and `errors`. They live here, not in a package of their own, because the
import rule lets sweeps/ import tasks/ and never the reverse: under tasks/train/ both reach
them, and a test holds them free of any other import of ours (tests/test_layers.py).

A problem imports `base`, `checks`, `cost`, `store` and (its data preparations) `preparation`
from here, nothing else.
"""
