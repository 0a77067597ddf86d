"""SCAN structural graph clustering (Xu et al., KDD 2007), vectorized over edges.

Structural similarity over closed neighbourhoods ``N[u] = N(u) ∪ {u}``:
``sigma(u, v) = |N[u] ∩ N[v]| / sqrt(|N[u]| |N[v]|)``; for an edge, ``|N[u] ∩ N[v]|`` is the
number of triangles through it plus 2. :func:`edge_triangles` counts them for all edges at
once on the device: each node's neighbourhood as a bitset row, one AND + popcount per edge
(``E * ceil(N / 32)`` words; on Cora/CiteSeer 2x faster than sampling scipy's ``A @ A``). Adjacent
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

import functools

import jax
import jax.numpy as jnp
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


@functools.partial(jax.jit, static_argnames=("num_nodes",))
def edge_triangles(senders: jax.Array, receivers: jax.Array, num_nodes: int) -> jax.Array:
  """Common neighbours ``|N(u) ∩ N(v)|`` (int32) of every stored edge ``(u, v)``."""
  words = (num_nodes + 31) // 32
  bit = jnp.left_shift(jnp.uint32(1), (receivers % 32).astype(jnp.uint32))
  # Edges are distinct, so adding their bits is OR-ing them.
  rows = jnp.zeros(num_nodes * words, jnp.uint32).at[senders * words + receivers // 32].add(bit)
  rows = rows.reshape(num_nodes, words)
  return jnp.sum(jax.lax.population_count(rows[senders] & rows[receivers]), -1,
                 dtype=jnp.int32)


def structural_similarity(graph, triangles: np.ndarray | None = None) -> np.ndarray:
  """sigma(u, v) for every stored (directed) edge of ``graph``, in edge order; ``triangles``
  (from :func:`edge_triangles`) if already computed."""
  if triangles is None:
    triangles = edge_triangles(*graph.device_edges, graph.num_nodes)
  triangles = np.asarray(triangles, np.float64)
  closed = graph.degrees().astype(np.float64) + 1.0
  return (triangles + 2.0) / np.sqrt(closed[graph.senders] * closed[graph.receivers])


def scan(graph, eps: float = 0.5, mu: int = 3, *, seed: int = 0,
         order: np.ndarray | None = None, triangles: np.ndarray | None = None) -> ScanResult:
  """Clusters ``graph``; ``order`` (a permutation of the nodes) defaults to a seeded shuffle,
  standing in for cdlib's ``random.shuffle`` of the visiting sequence; ``triangles`` as in
  :func:`structural_similarity`."""
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
  eps_edge = structural_similarity(graph, triangles) >= eps
  is_core = np.bincount(senders[eps_edge], minlength=n) >= mu
  core_edge = eps_edge & is_core[senders] & is_core[receivers]
  # Edges are sorted by sender, so the core graph's CSR row pointers are a running count.
  indptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(senders[core_edge], minlength=n), out=indptr[1:])
  core_graph = sp.csr_matrix((np.ones(indptr[-1], np.int8), receivers[core_edge], indptr),
                             shape=(n, n))
  _, component = csgraph.connected_components(core_graph, directed=False)

  # A cluster is created when the visit first reaches one of its cores.
  first_visit = np.full(n, never)
  np.minimum.at(first_visit, component[is_core], position[is_core])
  cluster_start = np.full(n, never)   # per node: its cluster's creation time
  cluster_start[is_core] = first_visit[component[is_core]]
  border_edge = eps_edge & is_core[senders] & ~is_core[receivers]
  np.minimum.at(cluster_start, receivers[border_edge], cluster_start[senders[border_edge]])

  in_cluster = cluster_start < never
  # Cluster ids rank the creation times: a running count over the timeline, no sort.
  created = np.zeros(n + 1, np.int32)
  created[cluster_start[in_cluster]] = 1
  rank = np.cumsum(created) - 1
  labels = np.where(in_cluster, rank[cluster_start], -1).astype(np.int32)
  num_clusters = int(created[:n].sum())

  # Hubs: unclustered nodes whose neighbours lie in at least two different clusters, i.e.
  # whose clustered neighbours' labels do not all agree (smallest != largest).
  touching = (labels[senders] < 0) & (labels[receivers] >= 0)
  lowest = np.full(n, num_clusters, np.int32)
  highest = np.full(n, -1, np.int32)
  np.minimum.at(lowest, senders[touching], labels[receivers[touching]])
  np.maximum.at(highest, senders[touching], labels[receivers[touching]])
  is_hub = highest > lowest
  return ScanResult(labels=labels, is_core=is_core, is_hub=is_hub, num_clusters=num_clusters)
