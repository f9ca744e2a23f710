"""Language-model pretraining on a token memmap: random windows, next-token loss."""

from __future__ import annotations

import math

import torch

from tasks.base import Target
from tasks.nanogpt import data
from tasks.nanogpt.model import GPT, GPTConfig


class NanoGPTTask:
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
        self.model = GPT(model_cfg).to(device)
        # torch.compile'd forward for training; state_dicts and eval use the plain module
        self._compiled = torch.compile(self.model) if compile else None
        self.block_size = model_cfg.block_size
        self.tokens_per_batch = batch_size * model_cfg.block_size
        self.target = Target("val_loss", target_val_loss, "min")

    def _to_device(self, x, y):
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batch(self, step: int, micro: int):
        gen = data.step_generator(self.seed, step, micro)
        x, y = data.sample_windows(self.splits["train"], self.batch_size, self.block_size, gen)
        return self._to_device(x, y)

    def loss(self, model, batch):
        x, y = batch
        if model is self.model and self._compiled is not None and model.training:
            model = self._compiled
        _, loss = model(x, y)
        return loss

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        # The same windows at every eval (seeded apart from training), so curves compare.
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        total, correct, count = 0.0, 0, 0
        for _ in range(self.eval_batches):
            x, y = self._to_device(*data.sample_windows(self.splits["val"], self.eval_batch_size,
                                                        self.block_size, gen))
            logits, loss = model(x, y)
            total += loss.item()
            correct += (logits.argmax(-1) == y).sum().item()
            count += y.numel()
        val_loss = total / self.eval_batches
        # next-token accuracy: the "char accuracy" of next-character prediction on byte corpora
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
                "val_acc": correct / count}

    def describe(self) -> dict:
        return {
            "params": self.model.num_params(),
            "data": data.corpus_summary(self.meta),
            "tokens_per_batch": self.tokens_per_batch,
        }
