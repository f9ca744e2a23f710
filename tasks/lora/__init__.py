"""LoRA fine-tuning of a causal LM on math, with GSM8K-style evaluation."""

from tasks.lora.task import LoraMathTask

__all__ = ["LoraMathTask"]
