"""A small, vmappable Fisher-scoring minimiser for Gaussian likelihoods with few nuisances.

Profiles minimise -2 ln L = sum_i w_i [r_i^2 / v_i + ln(2 pi v_i)] (r = y - mean, v the total
variance) over 1-3 nuisances at each of hundreds of Omega_m values and thousands of mocks,
so the minimiser must be jit/vmap friendly: a fixed number of steps (``lax.scan``, no
data-dependent loop). Each step solves with the Fisher information
I = sum_i w_i [2 dmu dmu^T / v + dv dv^T / v^2], which needs only the per-object first
derivatives of the mean and variance (forward mode, elementwise, cheap) and is positive
definite, and takes the best of a fixed ladder of step lengths, accepted only if -2 ln L
decreases. Near the optimum Fisher scoring converges about as fast as Newton (the observed
and expected information agree there), so a few steps from a least-squares warm start
reach the minimum to ~1e-10 in chi^2.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

_STEP_LENGTHS = 2.0 ** -jnp.arange(0.0, 10.0, 2.0)


class Minimum(NamedTuple):
  x: jax.Array          # argmin
  value: jax.Array      # -2 ln L at the argmin
  grad_norm: jax.Array  # |gradient| there: a convergence diagnostic


def gaussian_nll2(mean: jax.Array, var: jax.Array, y: jax.Array, weights: jax.Array):
  """-2 ln L of independent Gaussians (weights 0/1 select objects)."""
  return jnp.sum(weights * ((y - mean) ** 2 / var + jnp.log(2.0 * jnp.pi * var)))


def fisher_scoring_minimize(model: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
                            y: jax.Array, weights: jax.Array, x0: jax.Array,
                            steps: int = 8) -> Minimum:
  """Minimises -2 ln L of y ~ N(mean(x), var(x)) over x; ``model(x)`` returns (mean, var)."""

  def value(x):
    mean, var = model(x)
    value = gaussian_nll2(mean, var, y, weights)
    return jnp.where(jnp.isfinite(value), value, jnp.inf)

  def gradient_and_information(x):
    (mean, var), (dmean, dvar) = jax.vmap(lambda t: jax.jvp(model, (x,), (t,)),
                                          out_axes=(None, 0))(jnp.eye(x.shape[0], dtype=x.dtype))
    r = y - mean
    grad = dmean @ (weights * -2.0 * r / var) + dvar @ (weights * (1.0 / var - r ** 2 / var ** 2))
    info = (2.0 * (dmean * (weights / var)) @ dmean.T
            + (dvar * (weights / var ** 2)) @ dvar.T)
    return grad, info

  def step(carry, _):
    x, current = carry
    grad, info = gradient_and_information(x)
    direction = -jnp.linalg.solve(info, grad)
    lengths = _STEP_LENGTHS.astype(x.dtype)
    trials = jax.vmap(lambda t: value(x + t * direction))(lengths)
    best = jnp.argmin(trials)
    better = trials[best] < current
    x = jnp.where(better, x + lengths[best] * direction, x)
    return (x, jnp.where(better, trials[best], current)), None

  (x, final), _ = jax.lax.scan(step, (x0, value(x0)), None, length=steps)
  return Minimum(x, final, jnp.linalg.norm(gradient_and_information(x)[0]))
