"""Profile likelihoods of Omega_m: chi^2 minimised over the nuisances on a grid of Omega_m.

For each grid value the distances are computed once and the nuisances are found by a few
Fisher-scoring steps (cosmo.optimize), warm-started from the closed-form least-squares fit of
the relation's linear part at that Omega_m; the grid, and any stack of subsamples (0/1
weights), are ``vmap``ped, so a whole z-sweep is one compiled call (arXiv 2405.19953, Sec. 3;
arXiv 2206.11447, Sec. 3). Mocks share the redshifts, so they reuse the distance table.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cosmo.catalogues import Catalogue
from cosmo.distances import log10_luminosity_distance_cm
from cosmo.likelihoods import Probe
from cosmo.optimize import Minimum, fisher_scoring_minimize

SCORING_STEPS = 5


class Profile(NamedTuple):
  omega_m: jax.Array    # (G,) grid
  chi2: jax.Array       # (..., G) minimum of -2 ln L over the nuisances
  nuisance: jax.Array   # (..., G, P) the minimising nuisances
  grad_norm: jax.Array  # (..., G) |d chi2 / d nuisance| at the minimum (convergence check)


def as_arrays(cat: Catalogue) -> Catalogue:
  return Catalogue(*map(jnp.asarray, cat))


def distance_table(z: jax.Array, omega_grid: jax.Array) -> jax.Array:
  """log10 d_L (cm) for every grid value and object: (G, N)."""
  return jax.vmap(lambda om: log10_luminosity_distance_cm(z, om))(omega_grid)


def minimize_nuisance(probe: Probe, cat: Catalogue, weights: jax.Array, log10_dl: jax.Array,
                      steps: int = SCORING_STEPS) -> Minimum:
  """min over the nuisances of chi^2 at fixed distances."""
  x0 = probe.initial_nuisance(cat, log10_dl, weights)
  return fisher_scoring_minimize(lambda nu: probe.predict(nu, log10_dl, cat), cat.y, weights, x0,
                                 steps)


def profile_from_table(probe: Probe, cat: Catalogue, weights: jax.Array, table: jax.Array,
                       steps: int = SCORING_STEPS) -> Minimum:
  """The profile (one Minimum per row of the distance table), unjitted building block."""
  return jax.vmap(lambda d: minimize_nuisance(probe, cat, weights, d, steps))(table)


@functools.partial(jax.jit, static_argnames=("probe", "steps"))
def profile_likelihood(probe: Probe, cat: Catalogue, omega_grid: jax.Array,
                       weights: jax.Array | None = None, steps: int = SCORING_STEPS) -> Profile:
  """The profile chi^2(Omega_m) on ``omega_grid``.

  ``weights`` is (N,) or a stack (B, N) of 0/1 subsample masks; the result then has a
  leading axis B.
  """
  cat = as_arrays(cat)
  omega_grid = jnp.asarray(omega_grid, cat.z.dtype)
  weights = jnp.ones_like(cat.z) if weights is None else jnp.asarray(weights, cat.z.dtype)
  table = distance_table(cat.z, omega_grid)
  one = lambda w: profile_from_table(probe, cat, w, table, steps)
  m = jax.vmap(one)(weights) if weights.ndim == 2 else one(weights)
  return Profile(omega_grid, m.value, m.x, m.grad_norm)
