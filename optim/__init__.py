"""Optimizers of the reproduced papers and their baselines, as torch.optim optimizers.

This package imports nothing of ours: tasks and sweeps depend on it, never the reverse.
`REGISTRY` (optim/registry.py) lists every optimizer config, conf/optim/<name>.yaml, with its
class, its source and what the generic tests, the benchmark and the memory estimates need;
AdamW, Adam, NAdam and SGD are torch.optim's own. Each of our classes is exported here under
its name (`optim.S3`), the `_target_` its config names.
"""

from optim.adan import Adan
from optim.matrix import MatrixOptimizer
from optim.muon import MuAdam, Muon, SoftMuon
from optim.registry import BY_NAME, REGISTRY, OptimSpec
from optim.routing import infer_roles, is_matrix_optimizer, param_groups, param_roles
from optim.s3 import S3
from optim.sign import Lion, SignSGD, Signum
from optim.smuon import SMuon
from optim.softsign import HardSwitchSign, SoftSignum
from optim.stosign import StochasticSign, StoSignSGD

__all__ = [
    "BY_NAME", "MatrixOptimizer", "OptimSpec", "REGISTRY", "infer_roles", "is_matrix_optimizer",
    "param_groups", "param_roles",
    "Adan", "HardSwitchSign", "Lion", "MuAdam", "Muon", "S3", "SMuon", "SignSGD", "Signum",
    "SoftMuon", "SoftSignum", "StoSignSGD", "StochasticSign",
]
