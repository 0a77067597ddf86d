"""SCAN structural graph clustering (Xu et al., KDD 2007), vectorized over edges, on the device.

Structural similarity over closed neighbourhoods ``N[u] = N(u) ∪ {u}``:
``sigma(u, v) = |N[u] ∩ N[v]| / sqrt(|N[u]| |N[v]|)``; for an edge, ``|N[u] ∩ N[v]|`` is the
number of triangles through it plus 2. :func:`edge_triangles` counts them for all edges at
once: each neighbour of an edge's lower-degree end is looked up in the other end's adjacency
bitset (``sum_(u,v) min(d_u, d_v)`` lookups: 32.5k on CiteSeer, where AND-ing whole bitset rows
took 947k word operations). Adjacent ``v`` with ``sigma >= eps`` are ``u``'s eps-neighbours;
``u`` is a core when it has at least ``mu`` of them. ``count_self`` says whether ``u`` counts
among its own: Xu et al. (Sec. 3) take the eps-neighbourhood within the vertex structure
(the closed neighbourhood), ``N_eps(u) = {w in N[u] : sigma(u, w) >= eps}``, which holds
``u`` itself (``sigma(u, u) = 1``); cdlib's ``scan``, which the SPA code calls, looks only at adjacent nodes.
Counting ``u`` is the same as lowering ``mu`` by one in cdlib's rule. Clusters are the connected
components of the core-to-core eps-graph; a non-core eps-neighbour of cores (a border node)
joins the cluster that a sequential SCAN visiting nodes in ``order`` would build first, i.e.
the one whose earliest core comes first in ``order``. Cluster ids follow that order too, so
the result equals cdlib's for the same visiting order (tested against
:func:`graph_al.reference.scan_networkx`). Nodes in no cluster are hubs (neighbours in two or
more clusters) or outliers. :func:`scan_device` does all of it in one jitted program
(components by min-label propagation with pointer jumping), so SPA's query needs a single
dispatch and transfer.

``semantics="paper"`` (:func:`scan_paper_device`) is the SPA paper's own statement of SCAN
(arXiv 2312.04307, Sec. 4.1), which differs from the above: Eq. 3 takes the similarity over
open neighbourhoods, ``S(i, j) = |N(i) ∩ N(j)| / sqrt(|N(i)| |N(j)|)``, and Eq. 4 puts ``i``
and ``j`` in the same community when ``S(i, j) >= eps`` and ``|N(i) ∩ N(j)| >= mu`` ("mu is
the minimum number of shared neighbors required for community formation"); there are no
cores. Read literally over SCAN's candidate pairs, the graph's edges: an edge is linked when
it passes both tests, communities are the connected components of the linked edges (so
every community has at least 2 nodes), and a node on no linked edge is a hub or outlier as
above. The open-neighbourhood common count of an edge is its number of triangles. No visiting
order is involved; communities are numbered by their smallest node id.

``eps="auto"`` (:func:`modularity_scan`): the eps of :data:`EPS_GRID` whose clustering has
the highest Newman-Girvan modularity (Newman & Girvan 2004, Phys. Rev. E 69, 026113, Eq. 5),
every hub and outlier counted as a community of its own. Modularity is one of the measures
Xu et al. score SCAN's clusterings with, and their AHSCAN (Yuruk, Mete, Xu & Schweiger, ASONAM
2009) picks the eps of the dendrogram cut with the highest modularity; it needs no labels.
All grid values run as one ``vmap``. Modularity cannot choose ``mu``: on Cora and CiteSeer it
only grows as ``mu`` falls (README, graph_al section).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# SCAN rules: Xu et al.'s / cdlib's (cores, closed neighbourhoods) or the SPA paper's Eq. 3-4.
SEMANTICS = ("cdlib", "paper")
# Candidate eps values of ``eps="auto"``: every hundredth from 0.20 to 0.80.
EPS_GRID = np.round(np.arange(20, 81) / 100, 2)


class ScanResult(NamedTuple):
  labels: np.ndarray     # int32 [N]: cluster id in creation order, -1 for hubs and outliers
  is_core: np.ndarray    # bool [N]; semantics "paper": on a linked edge (it has no cores)
  is_hub: np.ndarray     # bool [N]
  num_clusters: int
  eps: float             # the threshold used (the chosen one for eps="auto")

  @property
  def is_outlier(self) -> np.ndarray:
    return (self.labels < 0) & ~self.is_hub


def _running_sum(x: jax.Array) -> jax.Array:
  """Inclusive prefix sum: as an associative scan, 2x faster than ``jnp.cumsum`` on XLA:CPU
  for the wedge array (0.08 against 0.16 ms on CiteSeer), but slower to compile."""
  return jax.lax.associative_scan(jnp.add, x)


def wedge_count(graph) -> int:
  """Number of (edge, neighbour of its lower-degree end) pairs that :func:`edge_triangles`
  tests: its static work size, ``sum_(u,v) min(d_u, d_v)``."""
  degrees = graph.degrees()
  return int(np.minimum(degrees[graph.senders], degrees[graph.receivers]).sum(dtype=np.int64))


@functools.partial(jax.jit, static_argnames=("num_nodes", "num_wedges"))
def edge_triangles(senders: jax.Array, receivers: jax.Array, num_nodes: int,
                   num_wedges: int) -> jax.Array:
  """Common neighbours ``|N(u) ∩ N(v)|`` (int32) of every stored edge ``(u, v)``; edges
  sorted by sender, both directions stored; ``num_wedges`` from :func:`wedge_count`.

  Each neighbour ``w`` of the lower-degree end is looked up in the other end's adjacency
  bitset: ``sum_(u,v) min(d_u, d_v)`` single-bit reads.
  """
  n, num_edges = num_nodes, senders.shape[0]
  words = (n + 31) // 32
  bit = jnp.left_shift(jnp.uint32(1), (receivers % 32).astype(jnp.uint32))
  # Edges are distinct, so adding their bits is OR-ing them.
  rows = jnp.zeros(n * words, jnp.uint32).at[senders * words + receivers // 32].add(bit)
  degree = jax.ops.segment_sum(jnp.ones_like(senders), senders, n, indices_are_sorted=True)
  row_start = jnp.cumsum(degree) - degree   # CSR offsets: edges are sorted by sender
  swap = degree[receivers] < degree[senders]
  pivot = jnp.where(swap, receivers, senders)
  other = jnp.where(swap, senders, receivers)
  length = degree[pivot]
  wedge_start = jnp.cumsum(length) - length
  # Wedge i belongs to the edge whose run of wedges it is in: mark each run's start, count.
  wedge_edge = _running_sum(jnp.zeros(num_wedges, jnp.int32).at[wedge_start].add(
      1, mode="drop")) - 1
  offset = jnp.arange(num_wedges, dtype=jnp.int32) - wedge_start[wedge_edge]
  w = receivers[row_start[pivot[wedge_edge]] + offset]
  word = rows[other[wedge_edge] * words + w // 32]
  hit = jnp.right_shift(word, (w % 32).astype(jnp.uint32)) & 1
  return jax.ops.segment_sum(hit.astype(jnp.int32), wedge_edge, num_edges,
                             indices_are_sorted=True)


def structural_similarity(graph) -> np.ndarray:
  """sigma(u, v) in float64 for every stored (directed) edge of ``graph``, in edge order."""
  triangles = np.asarray(edge_triangles(*graph.device_edges, graph.num_nodes,
                                       wedge_count(graph)), np.float64)
  closed = graph.degrees().astype(np.float64) + 1.0
  return (triangles + 2.0) / np.sqrt(closed[graph.senders] * closed[graph.receivers])


def eps_squared_floor(eps: float) -> np.float32:
  """The largest float32 <= eps**2 (computed in float64): testing ``s * s >= that * p`` in
  float32 keeps every pair with ``s / sqrt(p) == eps`` exactly, as the float64 test does."""
  square = np.float32(float(eps) ** 2)
  return square if float(square) <= float(eps) ** 2 else np.nextafter(square, np.float32(0))


@functools.partial(jax.jit, static_argnames=("num_nodes",))
def scan_device(senders: jax.Array, receivers: jax.Array, triangles: jax.Array,
                order: jax.Array, num_nodes: int, eps_squared: jax.Array,
                mu: jax.Array, count_self: jax.Array = False
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """SCAN on the device from the edges (sorted by sender, both directions) and their
  :func:`edge_triangles`: (labels, is_core, is_hub, num_clusters), as :func:`scan` returns.

  ``eps_squared`` is :func:`eps_squared_floor` of eps; ``count_self`` counts a node among
  its own eps-neighbours (Xu et al.), see the module docstring. The similarity test
  ``(t + 2) / sqrt(c_u c_v) >= eps`` is done as ``(t + 2)^2 >= eps^2 c_u c_v``, whose integers
  are exact in float32 for degrees below 4095, so it agrees with the float64 test except for
  pairs whose squared similarity lies within float32 rounding (~1e-7 relative) below eps^2.
  """
  n = num_nodes
  never = n   # a visiting time later than any node's
  position = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  closed = jax.ops.segment_sum(jnp.ones_like(senders), senders, n,
                               indices_are_sorted=True) + 1
  shared = (triangles + 2).astype(jnp.float32)
  eps_edge = shared * shared >= eps_squared * (closed[senders] * closed[receivers]).astype(
      jnp.float32)
  is_core = jax.ops.segment_sum(eps_edge.astype(jnp.int32), senders, n,
                                indices_are_sorted=True) + jnp.int32(count_self) >= mu
  core_edge = eps_edge & is_core[senders] & is_core[receivers]

  # Per core: the earliest visiting time among the cores of its core-graph component (the
  # time its cluster is created), by min-propagation along core edges with pointer jumping
  # (a node's value is the time of a core of its component, whose own value is no later).
  node_at = jnp.append(order.astype(jnp.int32), n)   # time -> node; `never` -> a sentinel

  def propagate(carry):
    start, _ = carry
    reached = jax.ops.segment_min(jnp.where(core_edge, start[receivers], never), senders, n,
                                  indices_are_sorted=True)
    new = jnp.minimum(start, reached)
    new = jnp.append(new, never)[node_at[new]]
    return new, jnp.any(new != start)

  start = jnp.where(is_core, position, never)
  start, _ = jax.lax.while_loop(lambda carry: carry[1], propagate,
                                propagate((start, jnp.bool_(True))))
  # A border node (non-core eps-neighbour of cores) joins the earliest-created such cluster.
  border_edge = eps_edge & ~is_core[senders] & is_core[receivers]
  border_start = jax.ops.segment_min(jnp.where(border_edge, start[receivers], never), senders,
                                     n, indices_are_sorted=True)
  cluster_start = jnp.where(is_core, start, border_start)
  in_cluster = cluster_start < never
  # Cluster ids rank the creation times: a running count over the timeline, no sort.
  created = jnp.zeros(n + 1, jnp.int32).at[cluster_start].set(1)
  rank = jnp.cumsum(created) - 1
  labels = jnp.where(in_cluster, rank[cluster_start], -1)

  return labels, is_core, _hubs(senders, receivers, labels, n), jnp.sum(created[:n])


def _hubs(senders: jax.Array, receivers: jax.Array, labels: jax.Array, n: int) -> jax.Array:
  """Unclustered nodes whose clustered neighbours' labels do not all agree."""
  touching = (labels[senders] < 0) & (labels[receivers] >= 0)
  lowest = jax.ops.segment_min(jnp.where(touching, labels[receivers], n), senders, n,
                               indices_are_sorted=True)
  highest = jax.ops.segment_max(jnp.where(touching, labels[receivers], -1), senders, n,
                                indices_are_sorted=True)
  return highest > lowest


@functools.partial(jax.jit, static_argnames=("num_nodes",))
def scan_paper_device(senders: jax.Array, receivers: jax.Array, triangles: jax.Array,
                      num_nodes: int, eps_squared: jax.Array, mu: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The SPA paper's SCAN (Eq. 3-4, module docstring) from the edges (sorted by sender, both
  directions) and their :func:`edge_triangles`: (labels, linked, is_hub, num_clusters).

  ``S(i, j) >= eps`` is tested as ``t^2 >= eps^2 d_i d_j`` (exact integers in float32 for
  degrees below 4096; ``eps_squared`` from :func:`eps_squared_floor`).
  """
  n = num_nodes
  never = n   # larger than any node id
  degree = jax.ops.segment_sum(jnp.ones_like(senders), senders, n, indices_are_sorted=True)
  shared = triangles.astype(jnp.float32)
  linked_edge = (shared * shared >= eps_squared * (degree[senders] * degree[receivers]).astype(
      jnp.float32)) & (triangles >= mu)
  linked = jax.ops.segment_max(linked_edge.astype(jnp.int32), senders, n,
                               indices_are_sorted=True) > 0

  # Each linked node's smallest node id in its component, by min-propagation along linked
  # edges with pointer jumping (a node's value is a node of its component, whose own value
  # is no larger).
  def propagate(carry):
    root, _ = carry
    reached = jax.ops.segment_min(jnp.where(linked_edge, root[receivers], never), senders, n,
                                  indices_are_sorted=True)
    new = jnp.minimum(root, reached)
    new = jnp.append(new, never)[new]
    return new, jnp.any(new != root)

  root = jnp.where(linked, jnp.arange(n, dtype=jnp.int32), never)
  root, _ = jax.lax.while_loop(lambda carry: carry[1], propagate,
                               propagate((root, jnp.bool_(True))))
  created = jnp.zeros(n + 1, jnp.int32).at[root].set(1)
  rank = jnp.cumsum(created) - 1
  labels = jnp.where(linked, rank[root], -1)
  return labels, linked, _hubs(senders, receivers, labels, n), jnp.sum(created[:n])


def modularity(senders: jax.Array, receivers: jax.Array, labels: jax.Array,
               num_nodes: int) -> jax.Array:
  """Newman-Girvan modularity ``sum_c [l_c / m - (d_c / 2m)^2]`` of SCAN's ``labels`` with each
  unclustered node (label -1) a community of its own; edges stored in both directions."""
  n = num_nodes
  community = jnp.where(labels >= 0, labels, n + jnp.arange(n))
  stored = max(senders.shape[0], 1)   # 2m
  inside = jnp.sum(community[senders] == community[receivers]) / stored
  degree_sums = jax.ops.segment_sum(jnp.ones_like(senders, jnp.float32), community[senders],
                                    2 * n)
  return inside - jnp.sum((degree_sums / stored) ** 2)


@functools.partial(jax.jit, static_argnames=("num_nodes", "semantics"))
def modularity_scan(senders: jax.Array, receivers: jax.Array, triangles: jax.Array,
                    order: jax.Array, num_nodes: int, eps_squared: jax.Array, mu: jax.Array,
                    count_self: jax.Array = False, semantics: str = "cdlib"):
  """:func:`scan_device` (or :func:`scan_paper_device` for ``semantics="paper"``, which
  ignores ``order`` and ``count_self``) for every ``eps_squared`` ([G]); returns the outputs
  of the one with the highest :func:`modularity` (the smallest eps among ties) and that grid
  index."""
  def one(eps_sq):
    if semantics == "paper":
      return scan_paper_device(senders, receivers, triangles, num_nodes, eps_sq, mu)
    return scan_device(senders, receivers, triangles, order, num_nodes, eps_sq, mu, count_self)

  if eps_squared.shape[0] == 1:   # a fixed eps: nothing to choose
    return one(eps_squared[0]), jnp.int32(0)
  results = jax.vmap(one)(eps_squared)
  scores = jax.vmap(lambda labels: modularity(senders, receivers, labels, num_nodes))(results[0])
  best = jnp.argmax(scores)
  return tuple(r[best] for r in results), best


def eps_squared_grid(eps) -> tuple[np.ndarray, np.ndarray]:
  """(eps values, their :func:`eps_squared_floor`) for a number or ``"auto"`` (:data:`EPS_GRID`)."""
  if isinstance(eps, str):
    if eps != "auto":
      raise ValueError(f"eps must be a number in (0, 1] or 'auto', got {eps!r}")
    values = EPS_GRID
  else:
    if not 0 < eps <= 1:
      raise ValueError(f"eps must be in (0, 1], got {eps}")
    values = np.array([float(eps)])
  return values, np.array([eps_squared_floor(e) for e in values], np.float32)


def visiting_order(num_nodes: int, seed: int = 0, order: np.ndarray | None = None) -> np.ndarray:
  """``order`` checked to be a permutation, or a seeded shuffle standing in for cdlib's
  ``random.shuffle`` of the visiting sequence."""
  if order is None:
    return np.random.default_rng(seed).permutation(num_nodes)
  order = np.asarray(order)
  if order.shape != (num_nodes,) or not np.array_equal(np.sort(order), np.arange(num_nodes)):
    raise ValueError("order must be a permutation of the node ids")
  return order


def scan_result(clusters, best, eps_values) -> ScanResult:
  """:func:`modularity_scan`'s outputs as a numpy :class:`ScanResult`."""
  labels, is_core, is_hub, num_clusters = clusters
  return ScanResult(labels=np.asarray(labels), is_core=np.asarray(is_core),
                    is_hub=np.asarray(is_hub), num_clusters=int(num_clusters),
                    eps=float(eps_values[int(best)]))


def check_semantics(semantics: str, count_self: bool) -> None:
  if semantics not in SEMANTICS:
    raise ValueError(f"SCAN semantics must be one of {SEMANTICS}, got {semantics!r}")
  if semantics == "paper" and count_self:
    raise ValueError("count_self applies to the cdlib semantics only: the paper's Eq. 3 uses "
                     "open neighbourhoods and has no cores")


def scan(graph, eps: float | str = 0.5, mu: int = 3, *, count_self: bool = False,
         seed: int = 0, order: np.ndarray | None = None, semantics: str = "cdlib") -> ScanResult:
  """Clusters ``graph`` visiting nodes in ``order`` (a permutation of the nodes; default a
  seeded shuffle, see :func:`visiting_order`; unused by ``semantics="paper"``);
  ``eps="auto"`` and ``semantics``: see the module docstring."""
  check_semantics(semantics, count_self)
  order = visiting_order(graph.num_nodes, seed, order)
  eps_values, eps_squared = eps_squared_grid(eps)
  senders, receivers = graph.device_edges
  triangles = edge_triangles(senders, receivers, graph.num_nodes, wedge_count(graph))
  return scan_result(*modularity_scan(senders, receivers, triangles, order, graph.num_nodes,
                                      eps_squared, mu, count_self, semantics), eps_values)
