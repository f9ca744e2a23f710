"""Residual GNNs in plain torch, as GraphLand's GNN baselines are built: an input Linear, then
blocks h ← h + Dropout(W₂·GELU(W₁·LayerNorm([h, aggregate of the neighbours' h]))), then a
LayerNorm and the head. The aggregate is
    gnn: the neighbours' mean, one sparse matrix product per block (GraphSAGE-like);
    gt:  multi-head attention of each node over its neighbours (q from the node, k and v from
         each neighbour, softmax over the neighbours), kept beside the node's own h: the
         "-sep" graph transformer of GraphLand's baselines (our reading of its shape).

Plain torch rather than torch_geometric: full-batch mean aggregation is a single
`torch.sparse.mm`, which PyG would wrap in a dependency with compiled extensions for no gain at
these sizes.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def mean_adjacency(edges: torch.Tensor, nodes: int, undirected: bool = True) -> torch.Tensor:
    """Row-normalized sparse adjacency (each row averages a node's in-neighbours; with
    `undirected` every edge counts both ways); nodes without neighbours get a zero row."""
    src, dst = edges[:, 0], edges[:, 1]
    if undirected:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    index = torch.stack([dst, src])
    ones = torch.ones(index.shape[1])
    adj = torch.sparse_coo_tensor(index, ones, (nodes, nodes), check_invariants=True).coalesce()
    degree = torch.zeros(nodes).index_add_(0, adj.indices()[0], adj.values())
    values = adj.values() / degree[adj.indices()[0]].clamp(min=1.0)
    return torch.sparse_coo_tensor(adj.indices(), values, (nodes, nodes),
                                   check_invariants=True).coalesce()


class Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(2 * width)
        self.fc1 = nn.Linear(2 * width, width)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def aggregate(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The neighbours' mean."""
        return torch.sparse.mm(adj, h)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        neighbours = self.aggregate(h, adj)
        return h + self.dropout(self.fc2(torch.nn.functional.gelu(
            self.fc1(self.norm(torch.cat([h, neighbours], -1))))))


class NeighbourAttention(nn.Module):
    """Multi-head attention of each node over its in-neighbours (the rows of `adj`)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"task.width ({width}) must be a multiple of task.heads ({heads})")
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        dst, src = adj.indices()
        n, width = h.shape
        x = self.norm(h)
        q, k, v = (f(x).view(n, self.heads, -1) for f in (self.q, self.k, self.v))
        scores = (q[dst] * k[src]).sum(-1) / q.shape[-1] ** 0.5  # (edges, heads)
        # softmax over each node's neighbours: subtract the per-node max, then normalize
        top = torch.full((n, self.heads), -torch.inf, device=h.device, dtype=scores.dtype)
        top = top.scatter_reduce(0, dst[:, None].expand_as(scores), scores, "amax")
        weights = (scores - top[dst]).exp()
        total = torch.zeros(n, self.heads, device=h.device, dtype=weights.dtype)
        total = total.index_add(0, dst, weights)
        weights = weights / total[dst]
        out = torch.zeros_like(v).index_add(0, dst, weights[..., None] * v[src])
        return out.reshape(n, width)


class AttentionBlock(Block):
    """Block with the neighbours attended to instead of averaged (model=gt)."""

    def __init__(self, width: int, dropout: float, heads: int):
        super().__init__(width, dropout)
        self.attention = NeighbourAttention(width, heads)

    def aggregate(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.attention(h, adj)


MODELS = ("gnn", "gt")


class GNN(nn.Module):
    def __init__(self, in_features: int, classes: int, width: int = 256, layers: int = 3,
                 dropout: float = 0.2, model: str = "gnn", heads: int = 4):
        super().__init__()
        self.input = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            Block(width, dropout) if model == "gnn" else AttentionBlock(width, dropout, heads)
            for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = block(h, adj)
        return self.head(self.norm(h))

    def param_roles(self) -> dict[str, str]:
        """The input projection is the first layer and goes with the head to the auxiliary
        optimizer of the Muon family, as an embedding does."""
        roles = {}
        for name, p in self.named_parameters():
            roles[name] = ("norm_or_bias" if p.ndim < 2 else "embedding" if
                           name.startswith("input.") else "head" if name.startswith("head.")
                           else "matrix")
        return roles
