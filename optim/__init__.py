"""Optimizers of the reproduced papers and their baselines, as torch.optim optimizers.

This package imports nothing of ours: tasks and sweeps depend on it, never the reverse.
`REGISTRY` (optim/registry.py) lists every optimizer config, conf/optim/<name>.yaml, with its
class, its source and what the generic tests, the benchmark and the memory estimates need;
AdamW, Adam, NAdam and SGD are torch.optim's own. Each of our classes is exported here under
its name (`optim.S3`), the `_target_` its config names.
"""

from optim.matrix import MatrixOptimizer
from optim.registry import BY_NAME, REGISTRY, OptimSpec
from optim.routing import infer_roles, is_matrix_optimizer, param_groups, param_roles

OPTIMIZERS = {spec.cls.__name__: spec.cls for spec in REGISTRY if spec.ours}
globals().update(OPTIMIZERS)

__all__ = [
    "BY_NAME", "MatrixOptimizer", "OptimSpec", "REGISTRY", "infer_roles", "is_matrix_optimizer",
    "param_groups", "param_roles", *OPTIMIZERS,
]
