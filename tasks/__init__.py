"""What is trained: one module per task, plus the single-run loop (`tasks.run`)."""

from tasks.run import run

__all__ = ["run"]
