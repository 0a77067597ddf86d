"""Adam's update direction in two eps placements, and the official GaLore Adam as a transform.

GaLore's and Q-GaLore's optimizers (arXiv:2403.03507 Alg. 2; arXiv:2407.08296) use the
transformers-style AdamW: ``N = m / (sqrt(v) + eps)`` on the raw moments, with the bias
corrections folded into the step size, ``lr * sqrt(1 - b2^t) / (1 - b1^t)``. That equals
``m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t))``: eps is effectively divided by the
second-moment correction. ``optax.scale_by_adam`` computes ``m_hat / (sqrt(v_hat) + eps)``,
so the two differ while ``sqrt(v)`` is comparable to eps (early steps, tiny gradients).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

EPS_PLACEMENTS = ("official", "optax")


def adam_direction(m: jax.Array, v: jax.Array, count: jax.Array, b1: float, b2: float,
                   eps: float, eps_placement: str) -> jax.Array:
  """Adam's normalized direction from raw moments after ``count`` (>= 1) updates."""
  t = count.astype(jnp.float32)
  correction1 = 1 - b1 ** t
  correction2 = 1 - b2 ** t
  if eps_placement == "official":
    return (jnp.sqrt(correction2) / correction1) * m / (jnp.sqrt(v) + eps)
  if eps_placement == "optax":
    return (m / correction1) / (jnp.sqrt(v / correction2) + eps)
  raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")


class ScaleByAdamOfficialState(NamedTuple):
  count: jax.Array  # int32 scalar
  mu: Any
  nu: Any


def scale_by_adam_official(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                           eps_placement: str = "official") -> optax.GradientTransformation:
  """Adam's scaling with float32 moments; ``eps_placement="official"`` is GaLore's form.

  With ``eps_placement="optax"`` this equals ``optax.scale_by_adam(b1, b2, eps)``.
  """
  if eps_placement not in EPS_PLACEMENTS:
    raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")

  def init_fn(params):
    zeros = lambda p: jnp.zeros(p.shape, jnp.float32)
    return ScaleByAdamOfficialState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params),
                                    jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g.astype(jnp.float32), state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g.astype(jnp.float32)),
                      state.nu, updates)
    directions = jax.tree.map(
        lambda m, v, g: adam_direction(m, v, count, b1, b2, eps, eps_placement).astype(g.dtype),
        mu, nu, updates)
    return directions, ScaleByAdamOfficialState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
