"""k-means++ and Lloyd iterations in JAX, with centres optionally confined to node groups.

``groups`` ([N] ints) and ``centre_groups`` ([K] ints) restrict every centre to the points of
its own group: plain k-means when all are 0 (FeatProp), one independent k-means per graph
partition, run as a single program, when they are partition ids (GraphPart). Then each
centre is replaced by its nearest point not already chosen, so the result is K distinct nodes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _sq_distances(points: jax.Array, centres: jax.Array) -> jax.Array:
  return (jnp.sum(points**2, -1)[:, None] - 2.0 * points @ centres.T
          + jnp.sum(centres**2, -1)[None, :])


@functools.partial(jax.jit, static_argnames=("iterations",))
def kmeans_select(points: jax.Array, groups: jax.Array, centre_groups: jax.Array,
                  key: jax.Array, iterations: int = 30) -> tuple[jax.Array, jax.Array]:
  """(distinct node ids [K] nearest to the K group-confined k-means centres, the centres)."""
  n, k = points.shape[0], centre_groups.shape[0]
  allowed = centre_groups[:, None] == groups[None, :]            # [K, N]

  def seed_centre(j, carry):                                     # k-means++ seeding
    chosen, nearest, key = carry
    key, sub = jax.random.split(key)
    weights = jnp.where(allowed[j], nearest, 0.0)
    # A group's first centre (no seeded centre of its own yet: weights inf) is uniform.
    weights = jnp.where(jnp.isinf(weights), 1.0, weights)
    weights = jnp.where(jnp.sum(weights) > 0, weights, allowed[j].astype(jnp.float32))
    pick = jax.random.categorical(sub, jnp.log(weights))
    dist = jnp.sum((points - points[pick])**2, -1)
    nearest = jnp.where(groups == centre_groups[j], jnp.minimum(nearest, dist), nearest)
    return chosen.at[j].set(pick), nearest, key

  init, _, _ = jax.lax.fori_loop(
      0, k, seed_centre, (jnp.zeros(k, jnp.int32), jnp.full(n, jnp.inf), key))

  def lloyd(centres, _):
    dist = jnp.where(allowed.T, _sq_distances(points, centres), jnp.inf)
    assign = jnp.argmin(dist, axis=1)
    sums = jax.ops.segment_sum(points, assign, k)
    counts = jax.ops.segment_sum(jnp.ones(n), assign, k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centres), None

  centres, _ = jax.lax.scan(lloyd, points[init], None, length=iterations)
  dist = jnp.where(allowed, _sq_distances(points, centres).T, jnp.inf)   # [K, N]

  def nearest_unused(j, carry):
    chosen, used = carry
    pick = jnp.argmin(jnp.where(used, jnp.inf, dist[j]))
    return chosen.at[j].set(pick), used.at[pick].set(True)

  chosen, _ = jax.lax.fori_loop(0, k, nearest_unused,
                                (jnp.zeros(k, jnp.int32), jnp.zeros(n, bool)))
  return chosen, centres
