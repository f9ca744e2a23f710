"""A residual GNN in plain torch, as GraphLand's GNN baselines are built: an input Linear, then
blocks h ← h + Dropout(W₂·GELU(W₁·LayerNorm([h, mean of the neighbours' h]))), then a
LayerNorm and the head. Neighbour means are one sparse matrix product per block.

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

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        neighbours = torch.sparse.mm(adj, h)
        return h + self.dropout(self.fc2(torch.nn.functional.gelu(
            self.fc1(self.norm(torch.cat([h, neighbours], -1))))))


class GNN(nn.Module):
    def __init__(self, in_features: int, classes: int, width: int = 256, layers: int = 3,
                 dropout: float = 0.2):
        super().__init__()
        self.input = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(Block(width, dropout) for _ in range(layers))
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
