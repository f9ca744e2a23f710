"""Language-model pretraining on a token memmap: random windows, next-token loss."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tasks.nanogpt import data
from tasks.nanogpt.model import GPTConfig, build_model
from tasks.nanogpt.prepare import HUB
from tasks.train import checks, store
from tasks.train.base import Cost, DataNeed, Target, Task, evals_in_run, keyed_generator
from tasks.train.cost import compute_bytes, compute_dtype, trace_on_meta, training_memory


class NanoGPTTask(Task):
    checkpoint_trainable_only = False  # the whole model trains

    def __init__(
        self,
        *,
        model: dict,
        corpus: str,
        batch_size: int,
        data_root: str,
        seed: int,
        device: torch.device,
        eval_batches: int = 20,
        eval_batch_size: int | None = None,
        target_val_loss: float | None = None,
        prepare: dict | None = None,
        compile: bool = False,
        name: str = "nanogpt",
        grad_accum: int = 1,  # unused: windows are drawn per (step, micro-batch)
    ):
        if batch_size <= 0:
            raise ValueError(f"task.batch_size must be > 0, got {batch_size}")
        if eval_batches <= 0:
            raise ValueError(f"task.eval_batches must be > 0, got {eval_batches}")
        self.name = name
        self.seed = seed
        self.device = device
        self.batch_size = batch_size
        self.eval_batches = eval_batches
        self.eval_batch_size = eval_batch_size or batch_size
        self.splits, self.meta = data.load_corpus(data_root, corpus, **(prepare or {}))
        model_cfg = GPTConfig(**{"vocab_size": self.meta["vocab_size"], **model})
        if model_cfg.vocab_size < self.meta["vocab_size"]:
            raise ValueError(
                f"task.model.vocab_size ({model_cfg.vocab_size}) is smaller than the corpus "
                f"vocabulary ({self.meta['vocab_size']})"
            )
        torch.manual_seed(seed)  # parameter init depends on the run's seed only
        self.model = build_model(model_cfg).to(device)
        self.compile = compile  # the harness compiles the training forward (DDP included)
        self.block_size = model_cfg.block_size
        self.tokens_per_batch = batch_size * model_cfg.block_size
        self.target = Target("val_loss", target_val_loss, "min")

    @classmethod
    def validate_config(cls, task: dict) -> None:
        """Sizes and shapes, checked before anything is read or built."""
        for key in ("batch_size", "eval_batches"):
            checks.integer(task, key)
        checks.data_name(task.get("corpus"), "task.corpus")
        if task.get("eval_batch_size") is not None:
            checks.integer(task, "eval_batch_size")
        model = dict(task.get("model") or {})
        for key in ("block_size", "n_layer", "n_head", "n_embd", "vocab_size"):
            if key in model:
                checks.integer(model, key, prefix="task.model.")
        if "dropout" in model:
            checks.number(model, "dropout", 0.0, 1.0, prefix="task.model.")
        GPTConfig(**{"vocab_size": data.BYTE_VOCAB, **model})  # divisibility, names

    @classmethod
    def data_needs(cls, cfg: dict) -> tuple[DataNeed, ...]:
        """The prepared corpus (the embedded pystdlib one prepares itself)."""
        corpus = cfg["task"]["corpus"]
        corpus_dir = Path(cfg["data_root"]).expanduser().absolute() / corpus
        ready = corpus_dir.joinpath("meta.json").exists() or corpus == "pystdlib"
        prepare = "" if corpus == "pystdlib" else (
            f"python scripts/prepare_data.py {corpus}" if corpus in HUB
            else f"python scripts/prepare_data.py text --input FILE --name {corpus}")
        return (DataNeed(f"corpus {corpus}", str(corpus_dir), ready, prepare),)

    @classmethod
    def cost(cls, cfg: dict) -> Cost:
        """Compute and memory of the run `cfg` (a resolved run config), traced on meta."""
        task = cfg["task"]
        corpus_dir = Path(cfg["data_root"]).expanduser().absolute() / task["corpus"]
        meta = store.read_json(corpus_dir / "meta.json") or {}
        model_cfg = GPTConfig(**{"vocab_size": meta.get("vocab_size", data.BYTE_VOCAB),
                                 **task["model"]})
        batch, block = task["batch_size"], model_cfg.block_size

        def tokens():
            x = torch.zeros(batch, block, dtype=torch.long)
            return x, x

        params, flops, saved = trace_on_meta(lambda: build_model(model_cfg), tokens,
                                             lambda model, x, y: model(x, y)[1])
        per_token = flops / (batch * block)
        train_tokens = cfg["steps"] * cfg["grad_accum"] * batch * block
        eval_tokens = (evals_in_run(cfg["steps"], cfg["eval_every"]) * task["eval_batches"]
                       * (task.get("eval_batch_size") or batch) * block)
        act = saved * compute_bytes(cfg["precision"]) / 4
        return Cost(params=params, trained_params=params, train_flops=per_token * train_tokens,
                    eval_flops=per_token / 3 * eval_tokens,
                    memory_bytes=training_memory(params, params, act),
                    data=cls.data_needs(cfg),
                    compute=compute_dtype(cfg["precision"]),
                    basis=f"traced on meta: {per_token / 1e9:.3g} GFLOP per training token "
                          f"(forward + backward), eval = forward only")

    def _to_device(self, x, y):
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batch(self, step: int, micro: int):
        return self.device_batch(self.host_batch(step, micro))

    def host_batch(self, step: int, micro: int):
        """The windows of (step, micro) in host memory (the harness may make it ahead, in a
        background thread: tasks/train/prefetch.py)."""
        gen = keyed_generator(self.seed, step, micro)
        return data.sample_windows(self.splits["train"], self.batch_size, self.block_size, gen)

    def device_batch(self, host):
        return self._to_device(*host)

    def loss(self, model, batch):
        x, y = batch
        _, loss = model(x, y)
        return loss

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        # The same windows at every eval (seeded apart from training), so curves compare;
        # every rank draws every window's position (cheap) and scores its share of them.
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        val = self.splits["val"]
        starts = [data.window_starts(len(val), self.eval_batch_size, self.block_size, gen)
                  for _ in range(self.eval_batches)]
        loss_sum = correct = count = 0
        for batch_starts in self.eval_shard.take(starts):
            x, y = self._to_device(*data.gather_windows(val, batch_starts, self.block_size))
            logits, loss = model(x, y)
            loss_sum = loss_sum + loss.double()
            correct = correct + (logits.argmax(-1) == y).sum()
            count += y.numel()
        sums = self.eval_shard.total({"loss": loss_sum, "correct": correct, "count": count})
        val_loss = sums["loss"] / self.eval_batches
        # next-token accuracy: the "char accuracy" of next-character prediction on byte corpora
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
                "val_acc": sums["correct"] / sums["count"]}

    def describe(self) -> dict:
        return {
            "params": sum(p.numel() for p in self.model.parameters()),
            "data": data.corpus_summary(self.meta),
            "tokens_per_batch": self.tokens_per_batch,
        }
