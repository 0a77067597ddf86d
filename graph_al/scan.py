"""SCAN structural graph clustering (Xu et al., KDD 2007), vectorized over edges.

Structural similarity over closed neighbourhoods ``N[u] = N(u) ∪ {u}``:
``sigma(u, v) = |N[u] ∩ N[v]| / sqrt(|N[u]| |N[v]|)``; for an edge, ``|N[u] ∩ N[v]|`` is the
number of triangles through it plus 2, read off ``A @ A`` at all edges at once. Adjacent
``v`` with ``sigma >= eps`` are ``u``'s eps-neighbours; ``u`` is a core when it has at least
``mu`` of them (not counting itself, as cdlib's ``scan`` which the SPA code calls; Xu et al.
count ``u`` itself). Clusters are the connected components of the core-to-core eps-graph;
a non-core eps-neighbour of cores (a border node) joins the cluster that a sequential SCAN
visiting nodes in ``order`` would build first, i.e. the one whose earliest core comes first
in ``order``. Cluster ids follow that order too, so the result equals cdlib's for the same
visiting order (tested against :func:`graph_al.reference.scan_networkx`). Nodes in no
cluster are hubs (neighbours in two or more clusters) or outliers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph


class ScanResult(NamedTuple):
  labels: np.ndarray     # int32 [N]: cluster id in creation order, -1 for hubs and outliers
  is_core: np.ndarray    # bool [N]
  is_hub: np.ndarray     # bool [N]
  num_clusters: int

  @property
  def is_outlier(self) -> np.ndarray:
    return (self.labels < 0) & ~self.is_hub


def structural_similarity(graph) -> np.ndarray:
  """sigma(u, v) for every stored (directed) edge of ``graph``, in edge order."""
  adjacency = graph.adjacency_matrix
  # (A @ A)[u, v] counts the common neighbours; sampled at the edges, all at once.
  triangles = np.asarray((adjacency @ adjacency)[graph.senders, graph.receivers]).ravel()
  closed = graph.degrees().astype(np.float64) + 1.0
  return (triangles + 2.0) / np.sqrt(closed[graph.senders] * closed[graph.receivers])


def scan(graph, eps: float = 0.5, mu: int = 3, *, seed: int = 0,
         order: np.ndarray | None = None) -> ScanResult:
  """Clusters ``graph``; ``order`` (a permutation of the nodes) defaults to a seeded shuffle,
  standing in for cdlib's ``random.shuffle`` of the visiting sequence."""
  n = graph.num_nodes
  if order is None:
    order = np.random.default_rng(seed).permutation(n)
  else:
    order = np.asarray(order)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
      raise ValueError("order must be a permutation of the node ids")
  position = np.empty(n, np.int64)
  position[order] = np.arange(n)
  never = n   # a visiting time later than any node's

  senders, receivers = graph.senders, graph.receivers
  eps_edge = structural_similarity(graph) >= eps
  is_core = np.bincount(senders[eps_edge], minlength=n) >= mu
  core_edge = eps_edge & is_core[senders] & is_core[receivers]
  core_graph = sp.csr_matrix((np.ones(int(core_edge.sum())), (senders[core_edge],
                              receivers[core_edge])), shape=(n, n))
  _, component = csgraph.connected_components(core_graph, directed=False)

  # A cluster is created when the visit first reaches one of its cores.
  first_visit = np.full(n, never)
  np.minimum.at(first_visit, component[is_core], position[is_core])
  cluster_start = np.full(n, never)   # per node: its cluster's creation time
  cluster_start[is_core] = first_visit[component[is_core]]
  border_edge = eps_edge & is_core[senders] & ~is_core[receivers]
  np.minimum.at(cluster_start, receivers[border_edge], cluster_start[senders[border_edge]])

  in_cluster = cluster_start < never
  starts = np.unique(cluster_start[in_cluster])
  labels = np.full(n, -1, np.int32)
  labels[in_cluster] = np.searchsorted(starts, cluster_start[in_cluster])

  # Hubs: unclustered nodes whose neighbours lie in at least two different clusters.
  touching = (labels[senders] < 0) & (labels[receivers] >= 0)
  pairs = np.unique(senders[touching].astype(np.int64) * (starts.size + 1)
                    + labels[receivers[touching]])
  is_hub = np.bincount(pairs // (starts.size + 1), minlength=n) >= 2
  return ScanResult(labels=labels, is_core=is_core, is_hub=is_hub, num_clusters=int(starts.size))
