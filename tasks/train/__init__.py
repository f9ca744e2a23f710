"""The training harness, apart from the problems it trains (tasks/<problem>/).

    runner       one run end to end: validate, lease, build, train, summary (`tasks.run`)
    loop         the task-agnostic training loop and its checkpoints
    config       checks of a composed run config, and building its parts
    base         the Task protocol a problem implements, and what a plan needs of it
    checks       value checks a problem's `validate_config` uses
    cost         FLOPs and memory traced on the meta device, for plans
    store        run identity (run key, run dir) and the on-disk results store
    checkpoint   verified checkpoints;  lease: one writer per run dir
    metrics      loss-spike, divergence and convergence metrics
    schedule, precision, distributed, wandb_mirror, environment, errors

A problem imports `base`, `checks`, `cost` and `store` from here, nothing else.
"""
