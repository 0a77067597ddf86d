"""PageRank by power iteration with ``jax.ops.segment_sum`` (Page et al. 1999).

The update is networkx's (``networkx.pagerank``):
``x' = alpha * (P^T x + dangling_mass / N) + (1 - alpha) / N``, with ``P`` row-stochastic
over out-edges and the mass of dangling (zero out-degree) nodes spread uniformly. Iteration
stops when ``sum |x' - x| < N * tol`` or after ``max_iter`` steps. SPA (arXiv 2312.04307,
Sec. 3) uses ``alpha = 0.95`` in its public code; that is the default here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("num_nodes", "max_iter"))
def pagerank(senders: jax.Array, receivers: jax.Array, num_nodes: int, alpha: float = 0.95,
             tol: float = 1e-6, max_iter: int = 400) -> tuple[jax.Array, jax.Array]:
  """Returns (scores summing to 1, iterations used) for the directed edges given: networkx's
  iterate, one power step per loop trip (unrolling 8 steps a trip ran no faster on CPU and
  compiled 8x the loop body)."""
  out_degree = jax.ops.segment_sum(jnp.ones_like(senders, jnp.float32), senders, num_nodes)
  inv_out = jnp.where(out_degree > 0, 1.0 / jnp.maximum(out_degree, 1.0), 0.0)
  dangling = out_degree == 0

  def body(carry):
    x, _, it = carry
    flow = jax.ops.segment_sum((x * inv_out)[senders], receivers, num_nodes)
    dangling_mass = jnp.sum(jnp.where(dangling, x, 0.0))
    new = alpha * (flow + dangling_mass / num_nodes) + (1.0 - alpha) / num_nodes
    return new, jnp.sum(jnp.abs(new - x)) >= num_nodes * tol, it + 1

  def cond(carry):
    _, unconverged, it = carry
    return unconverged & (it < max_iter)

  uniform = jnp.full((num_nodes,), 1.0 / num_nodes, jnp.float32)
  x, _, iterations = jax.lax.while_loop(cond, body, (uniform, jnp.bool_(True), 0))
  return x, iterations


def graph_pagerank_async(graph, alpha: float = 0.95, tol: float = 1e-6,
                         max_iter: int = 400) -> jax.Array:
  """PageRank of an undirected :class:`graph_al.graph.Graph`, dispatched without waiting:
  the host can work while the device iterates."""
  senders, receivers = graph.device_edges
  # Gathering along the sorted senders and scattering to the receivers measured 12% faster
  # on XLA:CPU than the transposed reading (1.00 against 1.13 ms of CPU on CiteSeer), with
  # bitwise-equal scores: every node still sums its neighbours in ascending order.
  scores, _ = pagerank(senders, receivers, graph.num_nodes, alpha, tol, max_iter)
  return scores


def graph_pagerank(graph, alpha: float = 0.95, tol: float = 1e-6,
                   max_iter: int = 400) -> np.ndarray:
  """PageRank of an undirected :class:`graph_al.graph.Graph` as a numpy vector."""
  return np.asarray(graph_pagerank_async(graph, alpha, tol, max_iter))


@functools.partial(jax.jit, static_argnames=("num_nodes", "max_iter"))
def part_pagerank(senders: jax.Array, receivers: jax.Array, part: jax.Array, num_nodes: int,
                  alpha: float = 0.95, tol: float = 1e-6, max_iter: int = 400) -> jax.Array:
  """PageRank of each subgraph induced by a part, all parts at once: ``part`` ([N] ints in
  [-1, N)) names each node's part, -1 leaves it out (score 0). Each part's scores are those
  :func:`pagerank` gives its induced subgraph alone (they sum to 1 per part): only edges
  inside a part count, teleportation and dangling mass spread over the part's own nodes, and
  a part stops iterating at its own ``sum |x' - x| < N_part * tol``, as networkx on the
  subgraph would. SPA's Algorithm 1 (arXiv 2312.04307) ranks nodes by PageRank "in C_i"
  (step 5) and "for all nodes in G \\ S" (step 10)."""
  n = num_nodes
  member = part >= 0
  segment = jnp.where(member, part, n)   # part n collects the left-out nodes
  inside = member[senders] & (segment[senders] == segment[receivers])
  out_degree = jax.ops.segment_sum(inside.astype(jnp.float32), senders, n)
  inv_out = jnp.where(out_degree > 0, 1.0 / jnp.maximum(out_degree, 1.0), 0.0)
  dangling = member & (out_degree == 0)
  size = jax.ops.segment_sum(member.astype(jnp.float32), segment, n + 1)
  node_size = jnp.maximum(size[segment], 1.0)

  def body(carry):
    x, active, it = carry
    flow = jax.ops.segment_sum(jnp.where(inside, (x * inv_out)[senders], 0.0), receivers, n)
    dangling_mass = jax.ops.segment_sum(jnp.where(dangling, x, 0.0), segment, n + 1)
    new = alpha * (flow + dangling_mass[segment] / node_size) + (1.0 - alpha) / node_size
    change = jax.ops.segment_sum(jnp.abs(new - x), segment, n + 1)
    x = jnp.where(active[segment], new, x)
    return x, active & (change >= size * tol), it + 1

  def cond(carry):
    _, active, it = carry
    return jnp.any(active) & (it < max_iter)

  active = (size > 0).at[n].set(False)
  x, _, _ = jax.lax.while_loop(cond, body, (jnp.where(member, 1.0 / node_size, 0.0), active, 0))
  return jnp.where(member, x, 0.0)
