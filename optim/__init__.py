"""Optimizers of the reproduced papers and their baselines, as torch.optim optimizers.

This package imports nothing of ours: tasks and sweeps depend on it, never the reverse.
"""

from optim.routing import infer_roles, is_matrix_optimizer, param_groups, param_roles

__all__ = ["infer_roles", "is_matrix_optimizer", "param_groups", "param_roles"]
