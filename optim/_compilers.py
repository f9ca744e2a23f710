"""Whether torch.compile can build the fused kernels here (optim/_fused.py): a module of its own,
so that the training loop asking it depends on this question only, not on the kernels (a run's
code version follows what it executes: tasks/train/identity.py)."""

from __future__ import annotations

import torch


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot build the fused kernels for `device` here (None when it can):
    inductor needs Triton for a GPU and a C++ compiler for the CPU."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    if device.type == "cpu":
        try:
            from torch._inductor import cpp_builder

            cpp_builder.get_cpp_compiler()
        except Exception as e:  # inductor's InvalidCxxCompiler, or a compiler that will not run
            return f"no C++ compiler ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        return None
    return f"torch.compile builds no kernels for {device.type} devices here"
