"""nanoGPT pretraining task (the embedded default is its char/byte-level preset)."""

from tasks.nanogpt.model import GPT, GPTConfig
from tasks.nanogpt.task import NanoGPTTask

__all__ = ["GPT", "GPTConfig", "NanoGPTTask"]
