"""A finished run's summary (summary.json): its status, final and best metrics, spike and
convergence numbers, timing, and what made it (commit, code version, environment)."""

from __future__ import annotations

from tasks.train.metrics import first_at_target


def optimizer_path(optimizer) -> dict:
    """Which code computed the steps: `compiled` (fused=true), `foreach` or `kernel` (our
    elementwise optimizers' default paths), `torch` (torch.optim's own), `matrix` (the Muon
    family); with the notice of a compiled path that fell back (tasks/train/assemble.py)."""
    groups = optimizer.param_groups
    if not type(optimizer).__module__.startswith("optim."):
        ran = "torch"
    elif any("use_matrix" in g for g in groups):
        ran = "matrix"
    elif any(g.get("fused") for g in groups):
        ran = "compiled"
    else:
        ran = "foreach" if type(optimizer).has_foreach_path() else "kernel"
    notice = getattr(optimizer, "path_notice", None)
    return {"ran": ran, **({"notice": notice} if notice else {})}


def build_summary(cfg, key, rdir, task, trainer, status, env: dict) -> dict:
    state, tracker, target = trainer.state, trainer.tracker, task.target
    metric_curve = [(s, ev[target.metric]) for s, ev in state.evals if target.metric in ev]
    steps_to_target = first_at_target(metric_curve, target.value, target.mode)
    tokens_per_step = task.tokens_per_batch * cfg.grad_accum
    # losses reach the tracker at log steps: a run that diverged may have taken steps past the
    # one whose loss did, and those do not count as done
    steps_done = state.step if state.diverged_at is None else state.diverged_at
    best_eval = None
    if metric_curve:
        pick = min if target.mode == "min" else max
        best_eval = pick(v for _, v in metric_curve)
    return {
        "status": status,
        "run_key": key,
        "run_dir": str(rdir),
        "task": cfg.task.name,
        "optim": cfg.optim.name,
        "sweep": cfg.get("sweep"),
        "steps": cfg.steps,
        "steps_done": steps_done,
        "tokens_done": steps_done * tokens_per_step,
        "diverged_at": state.diverged_at,
        "diverged_reason": state.diverged_reason or None,
        "error": None,
        "initial": {"train_loss": tracker.initial_loss},
        "final": {"train_loss": tracker.last_loss,
                  **(state.evals[-1][1] if state.evals else {})},
        "best": {"train_loss": tracker.summary()["best_train_loss"],
                 f"{target.metric}": best_eval},
        "spikes": {k: v for k, v in tracker.summary().items()
                   if k.startswith(("spike", "max_spike", "sigma"))},
        "convergence": {
            "auc_log_loss": tracker.summary()["auc_log_loss"],
            "target": {"metric": target.metric, "value": target.value, "mode": target.mode},
            "steps_to_target": steps_to_target,
            "tokens_to_target": (steps_to_target * tokens_per_step
                                 if steps_to_target is not None else None),
        },
        "evals": [{"step": s, **ev} for s, ev in state.evals],
        "wall_time_s": state.elapsed_s,
        # mean seconds of one optimizer step (+ precision rounding), over the timed steps
        "optimizer_step_s": (state.optimizer_s / state.optimizer_timed_steps
                             if state.optimizer_timed_steps else None),
        "task_info": task.describe(),
        "optimizer_path": optimizer_path(trainer.optimizer),
        "git_commit": env["git_commit"],
        "code_version": env["code_version"],
        "environment": env,
    }
