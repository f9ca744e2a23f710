"""The task-agnostic training loop: forward/backward (with accumulation) → clip → step → log.

Losses stay on the device between log steps (no per-step host sync); at each flush they are fed,
in order, to the LossTracker, which spots spikes and divergence. Evals, checkpoints and
preemption are handled at step boundaries, always after a flush, so a checkpoint never holds a
diverged state and every counter in it matches the steps it has taken.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from optim import hooks
from optim._dtensor import local
from tasks.train import distributed, prefetch, sharding, snapshot
from tasks.train.base import EvalInterrupted, EvalShard
from tasks.train.errors import Preempted
from tasks.train.metrics import LossTracker
from tasks.train.snapshot import rng_state, set_rng_state  # noqa: F401  (their old home)


class PreemptionFlag:
    """Turns SIGTERM/SIGUSR1/SIGUSR2 and Ctrl-C (SIGINT) into a flag the loop checks between
    steps: the run checkpoints and stops, resumable. (SLURM sends the signal asked for with
    --signal before the time limit; submitit asks for USR2 by default.)"""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. an in-process debug launcher)
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def forward(self) -> None:
        """Hand the signal to whoever handled it before us, once our checkpoint is written:
        under submitit that handler requeues the job and exits."""
        previous = self._previous.get(self.signum)
        if callable(previous) and self.signum != signal.SIGINT:  # Ctrl-C: just stop, no raise
            previous(self.signum, None)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class LoopState:
    """Everything besides model/optimizer/scheduler that a checkpoint must restore."""

    step: int = 0  # optimizer steps completed
    evals: list = field(default_factory=list)  # [(step, {metric: value})]
    elapsed_s: float = 0.0  # training wall time summed over all attempts
    optimizer_s: float = 0.0  # time in optimizer.step (+ precision rounding), timed steps only
    optimizer_timed_steps: int = 0
    diverged_at: int | None = None
    diverged_reason: str = ""
    logged_step: int = 0  # the last step with a row in metrics.jsonl (a resume checks it is there)
    # a log row whose evaluation a stop signal interrupted: evaluated and written on resume
    pending_row: dict | None = None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(self, cfg, task, optimizer, scheduler, tracker: LossTracker, metrics_log,
                 mirror, ckpt_path, precision, ctx: distributed.Context = distributed.Context(),
                 train_model=None):
        self.cfg = cfg
        self.task = task
        self.model = task.model
        self.ctx = ctx
        # the DDP wrapper when data-parallel, compiled when the task asks
        self.train_model = task.model if train_model is None else train_model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.sharded = sharding.is_sharded(self.model)  # FSDP2 (parallel=fsdp)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.tracker = tracker
        self.metrics_log = metrics_log
        self.mirror = mirror
        self.ckpt_path = ckpt_path
        self.precision = precision
        self.autocast = precision.autocast
        self.state = LoopState()
        self._saved_at = time.monotonic()  # when this attempt last checkpointed (or started)
        self.pending: list[torch.Tensor] = []  # per-step losses not yet fed to the tracker
        # the next micro-batch made in a background thread, in pinned memory, while a step
        # trains on a GPU (tasks/train/prefetch.py); on a CPU it would take the step's cores
        self.prefetch = prefetch.Prefetcher(task) if prefetch.supports(task) and \
            self.params and self.params[0].device.type == "cuda" else None

    # ------------------------------------------------------------ checkpoint

    def save_checkpoint(self) -> None:
        snapshot.save(self)  # collective: every rank calls it
        self._saved_at = time.monotonic()

    def _checkpoint_due(self) -> bool:
        """Whether `checkpoint_every_min` minutes have passed since the last checkpoint (or
        the start of this attempt); rank 0's clock is the one asked."""
        minutes = self.cfg.get("checkpoint_every_min")
        if not minutes or not self.ctx.is_main:
            return False
        return time.monotonic() - self._saved_at >= 60.0 * minutes

    def model_state(self) -> dict:
        """The model's state_dict (its shards, when sharded); only the trained tensors for
        tasks that say so (LoRA: the frozen base model is the same file every time)."""
        state = self.model.state_dict()
        if self.task.checkpoint_trainable_only:
            trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state.items() if k in trained}
        return state

    def load_checkpoint(self) -> None:
        self.state = LoopState(**snapshot.load(self))

    # ------------------------------------------------------------ one step

    def train_step(self, step: int,
                   time_optimizer: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        accum, ctx = self.cfg.grad_accum, self.ctx
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.params[0].device)
        mine = range(ctx.rank, accum, ctx.world)  # this rank's share of the global batch
        for i in range(len(mine)):
            batch = self.batch(step, mine, i)
            with self.gradient_sync(last=i == len(mine) - 1):
                with self.autocast:
                    loss = self.task.loss(self.train_model, batch)
                (loss / len(mine)).backward()
            loss_sum += loss.detach().float()
        distributed.all_sum(loss_sum, ctx)
        self.precision.after_backward(self.params)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
        # the optimizer's own cost (SMuon's overhead over Muon, say); on an accelerator only on
        # log steps, where the synchronization it needs costs nothing worth mentioning
        timed = time_optimizer or self.params[0].device.type == "cpu"
        if timed:
            _synchronize(self.params[0].device)
            t0 = time.perf_counter()
        self.optimizer.step()
        self.precision.after_step(self.optimizer)
        if timed:
            _synchronize(self.params[0].device)
            self.state.optimizer_s += time.perf_counter() - t0
            self.state.optimizer_timed_steps += 1
        self.scheduler.step()
        return loss_sum / accum, grad_norm

    def batch(self, step: int, mine: range, i: int):
        """Micro-batch mine[i] of `step`, made ahead where the trainer prefetches."""
        if self.prefetch is None:
            return self.task.train_batch(step, mine[i])
        following = (step, mine[i + 1]) if i + 1 < len(mine) else (
            (step + 1, mine[0]) if step + 1 < self.cfg.steps else None)
        return self.prefetch.get(step, mine[i], following)

    def gradient_sync(self, last: bool):
        """Gradients are reduced across ranks on a step's last micro-batch only."""
        if not self.ctx.enabled:
            return contextlib.nullcontext()
        if self.sharded:  # FSDP2 reduce-scatters when asked to
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last else self.train_model.no_sync()

    def weights_now(self) -> list[torch.Tensor]:
        """fp32 copies of the trained tensors (this rank's shards when sharded)."""
        return [local(p.detach()).float().clone() for p in self.params]

    def update_stats(self, before: list[torch.Tensor]) -> dict:
        """RMS and max |θ_new − θ_old| over all parameters (lr and weight decay included);
        over the shards of every rank when sharded."""
        deltas = torch._foreach_sub([local(p.detach()).float() for p in self.params],
                                    before)
        stats = torch.stack([sum(d.double().pow(2).sum() for d in deltas),
                             torch.tensor(float(sum(d.numel() for d in deltas)),
                                          dtype=torch.float64, device=deltas[0].device),
                             max((d.abs().max().double() for d in deltas if d.numel()),
                                 default=torch.zeros((), dtype=torch.float64,
                                                     device=deltas[0].device))])
        if self.sharded:
            torch.distributed.all_reduce(stats[:2])
            torch.distributed.all_reduce(stats[2:], op=torch.distributed.ReduceOp.MAX)
        sq, n, biggest = stats.tolist()
        return {"update_rms": math.sqrt(sq / n), "update_max": biggest}

    def flush(self, first_step: int) -> bool:
        """Feed pending losses (steps first_step, first_step+1, ...) to the tracker.
        Returns False once the run has diverged."""
        losses = torch.stack(self.pending).tolist() if self.pending else []
        self.pending.clear()
        for offset, loss in enumerate(losses):
            verdict = self.tracker.update(first_step + offset, loss)
            if verdict.diverged:
                self.state.diverged_at = first_step + offset
                self.state.diverged_reason = verdict.reason
                return False
        return True

    # ------------------------------------------------------------ the loop

    def evaluate_into(self, row: dict, preempt: PreemptionFlag) -> None:
        """Evaluate the current weights into the log row of step row["step"]; this rank
        scores its share of the eval batches. Raises EvalInterrupted on a stop signal."""
        # sharded models gather each block in every rank's forward: all ranks then run every
        # eval batch together (their shares would differ in length), each computing the total
        rank, world = (0, 1) if self.sharded else (self.ctx.rank, self.ctx.world)
        self.task.eval_shard = EvalShard(rank, world, lambda: (
            distributed.any_flag(preempt.signum is not None, self.ctx)))
        self.model.eval()
        hooks.eval_mode(self.optimizer)  # a schedule-free optimizer's evaluation weights
        if self.sharded:  # the root's own parameters gathered for the whole evaluation: an
            self.model.unshard()  # eval may enter below the root (PEFT's generate does)
        try:
            with torch.no_grad(), self.autocast:
                evals = self.task.evaluate(self.model)
        finally:
            if self.sharded:
                self.model.reshard()
            self.model.train()
            hooks.train_mode(self.optimizer)
        self.state.evals.append((row["step"], evals))
        row.update(evals)

    def log_row(self, row: dict) -> None:
        if self.ctx.is_main:
            self.metrics_log.append(row)
            self.state.logged_step = row["step"]
            self.mirror.log(row, step=row["step"])

    def train(self, preempt: PreemptionFlag) -> LoopState:
        cfg = self.cfg
        total = cfg.steps
        self.model.train()
        hooks.train_mode(self.optimizer)  # checkpoints are saved in it: a resume is exact
        bar = tqdm(total=total, initial=self.state.step, desc="train", dynamic_ncols=True,
                   disable=not (cfg.progress and self.ctx.is_main), mininterval=1.0)
        tokens_per_step = self.task.tokens_per_batch * cfg.grad_accum  # global, all ranks
        window_start, window_t0 = self.state.step, time.perf_counter()
        first_pending = self.state.step + 1
        if self.state.pending_row is not None:  # the evaluation a signal interrupted
            row, self.state.pending_row = self.state.pending_row, None
            self.evaluate_into(row, preempt)
            self.log_row(row)
        while self.state.step < total:
            step_start = time.perf_counter()
            index = self.state.step  # 0-based index of the step being taken
            done = index + 1  # steps completed after it; the name used in logs
            log_now = done % cfg.log_every == 0 or done == total
            eval_now = done % cfg.eval_every == 0 or done == total
            ckpt_now = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
            before = self.weights_now() if (log_now or eval_now) else None
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
            loss, grad_norm = self.train_step(index, time_optimizer=log_now)
            self.pending.append(loss)
            self.state.step = done
            self.state.elapsed_s += time.perf_counter() - step_start
            bar.update(1)
            # a signal seen by any rank stops every rank; the wall-clock cadence (rank 0's
            # clock decides) bounds what a lost job loses, whatever the step cadence
            # (not on the last step: the run's end saves its final weights anyway)
            stop, due = distributed.any_flags((preempt.signum is not None,
                                               done < total and self._checkpoint_due()),
                                              self.ctx)
            ckpt_now = ckpt_now or due
            if not (log_now or eval_now or ckpt_now or stop):
                continue
            if not self.flush(first_pending):
                break
            first_pending = done + 1
            row = {"step": done, "tokens": done * tokens_per_step}
            if log_now or eval_now:
                elapsed = time.perf_counter() - window_t0
                row.update(
                    loss=self.tracker.last_loss,
                    lr=lr,
                    grad_norm=float(grad_norm),
                    tokens_per_s=(done - window_start) * tokens_per_step / max(elapsed, 1e-9),
                    **self.update_stats(before),
                    **hooks.log_values(self.optimizer),
                )
                window_start, window_t0 = done, time.perf_counter()
                bar.set_postfix(loss=f"{row['loss']:.4f}",
                                tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
            if eval_now:
                try:
                    self.evaluate_into(row, preempt)
                except EvalInterrupted:  # the weights are saved; resuming evaluates them
                    self.state.pending_row = row
                    stop = True
            if len(row) > 2 and self.state.pending_row is None:
                self.log_row(row)
            if ckpt_now or stop:
                self.save_checkpoint()
            if stop:
                bar.close()
                signum = preempt.signum or signal.SIGUSR1  # another rank saw the signal
                if preempt.signum:
                    preempt.forward()  # submitit: requeue this job and exit
                raise Preempted(signum)
        bar.close()
        hooks.eval_mode(self.optimizer)  # a finished run's weights are the ones it evaluated
        return self.state
