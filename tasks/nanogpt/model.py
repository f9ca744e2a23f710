"""A GPT-2-style decoder, nanoGPT-shaped: read it top to bottom.

Attention goes through scaled_dot_product_attention (flash kernels on GPU). The switches of the
modded-nanoGPT setup SMuon uses are options: rotary position embeddings instead of learned
ones, RMSNorm instead of LayerNorm, QK-norm, and ReLU² instead of GELU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    tie_weights: bool = True
    rope: bool = False  # rotary embeddings (no learned position table)
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False  # normalize queries and keys per head before attention
    activation: str = "gelu"  # gelu | relu2 | swiglu (gated: silu(x·W_gate) ⊙ x·W_up)
    # pre: x + f(norm(x)) (GPT-2); post: x + norm(f(x)), OLMo-2's reordered norm
    norm_placement: str = "pre"
    mlp_hidden: int | None = None  # None: 4·n_embd (gelu, relu2) or 8/3·n_embd to 64 (swiglu)
    arch: str = "gpt"  # gpt | lstm (Softsign's next-character LSTM; n_layer LSTM layers of n_embd)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"task.model.arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"task.model.norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.activation not in ("gelu", "relu2", "swiglu"):
            raise ValueError(f"task.model.activation must be one of ['gelu', 'relu2', "
                             f"'swiglu'], got {self.activation!r}")
        if self.norm_placement not in ("pre", "post"):
            raise ValueError(f"task.model.norm_placement must be 'pre' or 'post', got "
                             f"{self.norm_placement!r}")
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise ValueError(f"task.model.mlp_hidden must be > 0 or null, got {self.mlp_hidden}")
        if self.rope and (self.n_embd // max(self.n_head, 1)) % 2:
            raise ValueError("task.model.rope needs an even head size (n_embd / n_head)")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"task.model.n_embd ({self.n_embd}) must be divisible by "
                f"task.model.n_head ({self.n_head})"
            )
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) <= 0:
                raise ValueError(f"task.model.{key} must be > 0, got {getattr(self, key)}")


def make_norm(cfg: GPTConfig, dim: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim)
    return nn.LayerNorm(dim, bias=cfg.bias)


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of (B, H, T, D) by position-dependent angles (RoPE)."""
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
    angles = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.rope = cfg.rope
        head = cfg.n_embd // cfg.n_head
        self.q_norm = nn.RMSNorm(head) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head) if cfg.qk_norm else nn.Identity()

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            q, k = rotary(q), rotary(k)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


def mlp_hidden(cfg: GPTConfig) -> int:
    if cfg.mlp_hidden is not None:
        return cfg.mlp_hidden
    if cfg.activation == "swiglu":  # the same parameters as a 4x MLP, to a multiple of 64
        return max(64, round(8 * cfg.n_embd / 3 / 64) * 64)
    return 4 * cfg.n_embd


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = mlp_hidden(cfg)
        self.activation = cfg.activation
        # swiglu: one matrix holds the gate and the up projection side by side
        width = 2 * hidden if cfg.activation == "swiglu" else hidden
        self.fc = nn.Linear(cfg.n_embd, width, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.fc(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h)
        return self.drop(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = make_norm(cfg, cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg, cfg.n_embd)
        self.mlp = MLP(cfg)
        self.post = cfg.norm_placement == "post"

    def forward(self, x):
        if self.post:  # OLMo-2: normalize each sub-layer's output before the residual add
            x = x + self.ln1(self.attn(x))
            return x + self.ln2(self.mlp(x))
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = None if cfg.rope else nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def param_roles(self) -> dict[str, str]:
        """Role of each parameter, for optimizers that treat matrices differently (Muon family)."""
        roles = {}
        for name, p in self.named_parameters():
            if name.startswith(("wte.", "wpe.")):
                roles[name] = "embedding"
            elif name.startswith("lm_head."):
                roles[name] = "head"
            elif p.ndim < 2:
                roles[name] = "norm_or_bias"
            else:
                roles[name] = "matrix"
        return roles

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


class LSTM(nn.Module):
    """A next-token LSTM language model: embedding, `n_layer` LSTM layers of width `n_embd`,
    the (tied) head; the same call as GPT's (idx, targets) → logits or (logits, loss)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.n_embd, cfg.n_embd, num_layers=cfg.n_layer, batch_first=True,
                            dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets=None):
        if idx.shape[1] > self.cfg.block_size:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds block_size "
                             f"{self.cfg.block_size}")
        x, _ = self.lstm(self.drop(self.wte(idx)))
        logits = self.lm_head(self.drop(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


ARCHS = {"gpt": GPT, "lstm": LSTM}


def build_model(cfg: GPTConfig) -> nn.Module:
    return ARCHS[cfg.arch](cfg)
