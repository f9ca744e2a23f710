"""The base of the Muon family: hidden matrices (`use_matrix` groups) take the optimizer's own
matrix update, every other parameter an auxiliary AdamW (torch's AdamW math)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from optim._common import (
    AUX_DEFAULTS,
    aux_adamw_step,
    check_aux,
    closure_loss,
    split_matrix_groups,
)


class MatrixOptimizer(Optimizer):
    """Routes `use_matrix` groups to `_matrix_step` and the rest to torch's AdamW math."""

    matrix_optimizer = True  # optim.param_groups splits matrices from aux params for us
    shardable = False  # under FSDP2 only where the update gathers each matrix (Muon says so)

    def __init__(self, params, defaults: dict, aux: dict):
        aux = {**AUX_DEFAULTS, **{k: v for k, v in aux.items() if v is not None}}
        check_aux(aux)
        super().__init__(split_matrix_groups(params, aux), defaults)
        self.scratch_buffers: dict = {}  # Batch.scratch's CPU work tensors, per parameter

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            if group["use_matrix"]:
                self._matrix_step(group)
            else:
                aux_adamw_step(self, group)
        return loss

    def _matrix_step(self, group) -> None:
        raise NotImplementedError
