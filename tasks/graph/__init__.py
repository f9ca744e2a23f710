"""Node classification on GraphLand datasets (or a generated graph) with a residual GNN."""

from tasks.graph.task import GraphTask

__all__ = ["GraphTask"]
