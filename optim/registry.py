"""What the registry of optimizers (optim.REGISTRY, in optim/__init__.py) is made of: one
`OptimSpec` per optimizer config, modelled on torch's optim_db, and the shared wording of the
reasons a config departs from its class's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

TEST_STEPS = 24  # the generic tests' run length; `example` schedules are sized for it


@dataclass(frozen=True)
class OptimSpec:
    name: str  # conf/optim/<name>.yaml, chosen with `optim=<name>`
    cls: type
    paper: str  # where the update rule comes from
    state_buffers: int  # per-parameter fp32 state tensors at the config's values
    fused: bool = False  # ours, and takes fused=True: one compiled pass per tensor
    matrix: bool = False  # hidden matrices take the matrix update, the rest an aux AdamW
    example: dict = field(default_factory=dict)  # constructor arguments for generic tests
    # named constructor arguments that reach every branch of the fused kernel
    fused_variants: dict = field(default_factory=dict)
    config_differs: dict = field(default_factory=dict)  # yaml key → why it is not the default

    @property
    def ours(self) -> bool:
        """Implemented here (torch.optim's own are baselines, tested by torch)."""
        return self.cls.__module__.startswith("optim.")

    @property
    def target(self) -> str:
        return f"{'optim' if self.ours else self.cls.__module__.rsplit('.', 1)[0]}." \
               f"{self.cls.__name__}"


RUN_LENGTH = "the run's steps, never typed twice"
AUX = ("the auxiliary AdamW of the Muon reference setup (lr 3e-4, betas (0.9, 0.95), eps "
       "1e-10, no decay) for embeddings, head, norms and biases")
PRETRAIN_WD = "0.1, the weight decay of the AdamW pretraining baselines [assumption]"
SOFT = {"total_steps": TEST_STEPS, "sign_fraction": 0.6}


def markdown_table(registry: tuple[OptimSpec, ...]) -> str:
    """The README's optimizer table."""
    rows = ["| `optim=` | class | update from |", "|---|---|---|"]
    for spec in registry:
        extra = " (matrix update + aux AdamW)" if spec.matrix else (
            " (`fused=true`)" if spec.fused else "")
        rows.append(f"| `{spec.name}` | `{spec.target}`{extra} | {spec.paper} |")
    return "\n".join(rows)
