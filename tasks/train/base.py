"""What the training loop needs from a task (`Task`, the contract every problem subclasses), what
a plan needs of it (`Cost`, `DataNeed`), and helpers problems share."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def keyed_generator(*key) -> torch.Generator:
    """A CPU generator seeded by a hash of `key` (e.g. seed, "aug", step, micro): every random
    choice of a batch depends on its key only, never on history, so a resumed run sees exactly
    the batches of an uninterrupted one."""
    digest = hashlib.sha1("/".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Target:
    """The eval metric a run tries to reach; feeds steps_to_target / tokens_to_target."""

    metric: str  # a key of Task.evaluate()'s result, e.g. "val_loss"
    value: float | None  # None: the task has no target
    mode: str = "min"  # "min": reached when metric <= value; "max": when >= value


class EvalInterrupted(Exception):
    """A stop signal arrived during an evaluation: it is abandoned and redone on resume."""


class EvalShard:
    """This process's share of an evaluation, and the sum that joins the shares.

    Rank r of W evaluates items r, r + W, r + 2W, ... of the task's fixed list of eval batches
    (`take`); each rank sums what it measured and `total` adds the sums across ranks, so the
    metric is the one a single process computes (up to fp64 summation order), in 1/W the time.
    Sums stay on the device until `total` (one host copy per evaluation, not two per batch).
    Between items `take` asks `stop_requested` (the loop's preemption flag, agreed by all ranks)
    so that a signal arriving in a long evaluation (LoRA generation) is answered within a batch.
    """

    def __init__(self, rank: int = 0, world: int = 1,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.rank, self.world, self.stop_requested = rank, world, stop_requested

    def take(self, items: Sequence) -> Iterator:
        mine = items[self.rank::self.world]
        # every rank asks as often as the rank with most items (asking is collective)
        for i in range(-(-len(items) // self.world)):
            if self.stop_requested():
                raise EvalInterrupted
            if i < len(mine):
                yield mine[i]

    def total(self, sums: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """{name: sum over every rank's share}, as Python floats."""
        device = next((v.device for v in sums.values() if isinstance(v, torch.Tensor)),
                      torch.device("cpu"))
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                               for v in sums.values()])
        if self.world > 1:
            dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return dict(zip(sums, stacked.tolist()))


class Task(abc.ABC):
    """What the training loop needs from a problem: the contract every task class subclasses.

    Built as `cls(**task_config, seed=, device=, data_root=, grad_accum=)`: the constructor
    takes those four keyword arguments from the run (a task config never sets them) and its own
    keys from conf/task/<preset>.yaml, keyword-only; it sets the attributes below. The loop
    calls `train_batch`, `loss`, `evaluate` and `describe`; the config check calls
    `validate_config` and `data_needs` before any run dir exists; `--plan` calls `cost`. A task
    that trains by epochs also gives `train_examples` and sets `epoch_examples`.

    Adding a task: its module (a subclass of this) and its preset, conf/task/<name>.yaml; the
    generic tests (tests/test_task_contract.py) pick up every preset.
    """

    name: str
    model: nn.Module
    target: Target
    tokens_per_batch: int  # tokens (or examples) in one micro-batch, for tokens_to_target
    # checkpoints hold only the trained tensors (LoRA: the frozen base is the same file)
    checkpoint_trainable_only: bool = False
    # the share of each evaluation this process computes (the trainer sets it under DDP)
    eval_shard: EvalShard = EvalShard()
    # torch.compile the training forward (the harness does it, around the DDP wrapper when
    # data-parallel); state_dicts and evaluation use the plain module
    compile: bool = False

    @abc.abstractmethod
    def train_batch(self, step: int, micro: int) -> Any:
        """Micro-batch `micro` of optimizer step `step`, a pure function of (seed, step, micro)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of `model` on `batch`."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Eval metrics on a fixed set of batches (model is put in eval mode by the caller).
        A task that evaluates in batches iterates `self.eval_shard.take(batches)` and joins
        its sums with `self.eval_shard.total`: under data parallelism every rank then scores
        its own share, with the metric a single process computes."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Facts for summary.json (data hash, parameter count, ...)."""

    @classmethod
    @abc.abstractmethod
    def validate_config(cls, task: dict) -> None:
        """Raise ValueError naming the key, the bad value and what is allowed (sizes,
        divisibility, probabilities, names); `task` has the constructor's defaults filled
        in. Runs before any run dir exists or any job is submitted."""

    @classmethod
    @abc.abstractmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """What the run `cfg` (a resolved run config) reads, whether it is prepared here and
        the command that prepares it; nothing is read but file names."""

    @classmethod
    @abc.abstractmethod
    def cost(cls, cfg: dict) -> Cost:
        """Compute, memory and data of the run `cfg` (a resolved run config), from the config
        alone: nothing is read or trained (`reproduce.py --plan`)."""


# ---------------------------------------------------------------- planning without training


@dataclass(frozen=True)
class DataNeed:
    """A file or folder a run reads, whether it is prepared here, and how to prepare it."""

    name: str
    path: str
    ready: bool
    prepare: str  # the command that prepares it ("" when the run prepares it itself)


def generated(name: str) -> DataNeed:
    """Data the run generates itself: nothing to prepare."""
    return DataNeed(name, "(generated in the run)", True, "")


@dataclass(frozen=True)
class Cost:
    """What one run needs, estimated from its config alone (no data read, nothing trained).

    `train_flops` and `eval_flops` cover the whole run. `memory_bytes` is per GPU: weights,
    gradients of what trains and the activations of one micro-batch (the optimizer's state is
    the planner's to add: it depends on the optimizer only).
    `basis` says how the numbers were obtained, so a reader can judge them.
    """

    params: int
    trained_params: int
    train_flops: float
    eval_flops: float
    memory_bytes: dict
    data: tuple[DataNeed, ...]
    basis: str
    compute: str  # what the matmuls run in: "bf16" or "fp32" (picks the GPU's peak)
    # bytes read from GPU memory by memory-bound evaluation over the run (greedy decoding reads
    # every weight once per generated token of a batch): timed at the GPU's bandwidth, not FLOPs
    eval_bytes_read: float = 0.0
    # host memory a task process needs beyond the interpreter and CUDA context (pretrained
    # weights are loaded through host memory before they move to the GPU)
    host_bytes: float = 0.0


def evals_in_run(steps: int, eval_every: int) -> int:
    """Evaluations a run makes: every `eval_every` steps and after the last one."""
    return steps // eval_every + (1 if steps % eval_every else 0)


@torch.no_grad()
def score_classifier(model: nn.Module, batches, shard: EvalShard) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` over `batches` of (inputs, labels): this
    process's share of them (`shard.take`), joined with the other ranks' by `shard.total`."""
    loss_sum = correct = n = 0
    for x, y in batches:
        logits = model(x).float()
        loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum").double()
        correct = correct + (logits.argmax(1) == y).sum()
        n += len(y)
    sums = shard.total({"loss": loss_sum, "correct": correct, "n": n})
    return sums["loss"] / sums["n"], sums["correct"] / sums["n"]
