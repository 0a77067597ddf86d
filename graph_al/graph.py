"""An undirected, attributed, labelled graph: the input of every selection strategy and GNN.

Edges are stored once per direction (``senders[i] -> receivers[i]`` and back), sorted by
(sender, receiver). :func:`make_graph` is the only constructor and owns the normalization
rules, so every loader behaves the same:

- out-of-range node indices, or a label/feature count that differs from the node count,
  raise ``ValueError``;
- directed input is symmetrized, duplicate edges are merged and self-loops are dropped
  (SCAN's closed neighbourhoods and the GCN's renormalization add each node to itself, so a
  stored self-loop would count it twice); the counts are kept in ``Graph.normalization``;
- isolated nodes are kept: PageRank treats them as dangling nodes and the GCN sees only
  their self-loop.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
  """A symmetric graph with sparse node features and integer class labels."""
  name: str
  senders: np.ndarray        # int32 [E]: both directions, sorted, no self-loops or duplicates
  receivers: np.ndarray      # int32 [E]
  features: sp.csr_matrix    # float32 [N, F]
  labels: np.ndarray         # int32 [N], in [0, num_classes)
  num_classes: int
  normalization: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_nodes(self) -> int:
    return int(self.labels.shape[0])

  @property
  def num_edges(self) -> int:
    """Undirected edges (each stored twice)."""
    return int(self.senders.shape[0]) // 2

  def degrees(self) -> np.ndarray:
    return np.bincount(self.senders, minlength=self.num_nodes).astype(np.int32)

  @functools.cached_property
  def device_edges(self) -> tuple[jax.Array, jax.Array]:
    """(senders, receivers) as device arrays, transferred once."""
    return jnp.asarray(self.senders), jnp.asarray(self.receivers)

  @functools.cached_property
  def adjacency_matrix(self) -> sp.csr_matrix:
    """:meth:`adjacency`, built once (the counterpart of networkx's adjacency dicts)."""
    return self.adjacency()

  def adjacency(self) -> sp.csr_matrix:
    """The 0/1 adjacency matrix (CSR, sorted indices, same edge order as ``senders``)."""
    n = self.num_nodes
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(self.senders, minlength=n), out=indptr[1:])
    ones = np.ones(self.senders.shape[0], np.float32)
    return sp.csr_matrix((ones, self.receivers, indptr), shape=(n, n))

  def to_networkx(self):
    import networkx as nx
    g = nx.Graph()
    g.add_nodes_from(range(self.num_nodes))
    g.add_edges_from(zip(self.senders.tolist(), self.receivers.tolist()))
    return g

  def summary(self) -> dict[str, Any]:
    return {"name": self.name, "nodes": self.num_nodes, "edges": self.num_edges,
            "features": int(self.features.shape[1]), "classes": self.num_classes,
            "isolated_nodes": int(np.sum(self.degrees() == 0)), **self.normalization}


def make_graph(name: str, edges: np.ndarray, features: Any, labels: np.ndarray,
               num_nodes: int | None = None) -> Graph:
  """Validates and normalizes ``edges`` ([E, 2], any direction) into a :class:`Graph`."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{name}: labels must be a vector, got shape {labels.shape}")
  num_nodes = labels.shape[0] if num_nodes is None else int(num_nodes)
  if labels.shape[0] != num_nodes:
    raise ValueError(f"{name}: {labels.shape[0]} labels for {num_nodes} nodes")
  features = sp.csr_matrix(features, dtype=np.float32)
  if features.shape[0] != num_nodes:
    raise ValueError(f"{name}: {features.shape[0]} feature rows for {num_nodes} nodes")
  if labels.size and labels.min() < 0:
    raise ValueError(f"{name}: negative class label {labels.min()}")
  edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
  if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
    raise ValueError(f"{name}: edge endpoint out of range [0, {num_nodes}): "
                     f"min {edges.min()}, max {edges.max()}")
  self_loops = edges[:, 0] == edges[:, 1]
  edges = edges[~self_loops]
  both = np.concatenate([edges, edges[:, ::-1]])
  keys = np.unique(both[:, 0] * num_nodes + both[:, 1])  # sorted by (sender, receiver)
  senders, receivers = (keys // num_nodes).astype(np.int32), (keys % num_nodes).astype(np.int32)
  # Listing u->v and v->u is the symmetric encoding, not a duplicate; repeating u->v is.
  distinct_directed = np.unique(edges[:, 0] * num_nodes + edges[:, 1]).size
  normalization = {"self_loops_dropped": int(self_loops.sum()),
                   "duplicate_edges_merged": int(edges.shape[0] - distinct_directed)}
  return Graph(name=name, senders=senders, receivers=receivers, features=features,
               labels=labels.astype(np.int32), num_classes=int(labels.max()) + 1 if labels.size
               else 0, normalization=normalization)

