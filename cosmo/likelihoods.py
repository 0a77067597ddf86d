"""QSO (Risaliti-Lusso), GRB (Amati) and SNe likelihoods in flat LCDM.

Each probe predicts the mean and the total variance s^2 of its observable ``y`` given the
nuisance parameters and log10 d_L (cm); ``-2 ln L = sum_i [r_i^2 / s_i^2 + ln(2 pi s_i^2)]``
(arXiv 2405.19953, Sec. 2; Khadka & Ratra 2021, arXiv 2012.09291). H0 is fixed at 70 km/s/Mpc:
it is exactly degenerate with each relation's intercept.

- QSO: log F_X = beta + gamma log F_UV + (gamma - 1)(log 4 pi + 2 log d_L),
  s^2 = sigma_FX^2 + gamma^2 sigma_FUV^2 + delta^2; nuisances (beta_30.5, gamma, ln delta)
  with the intercept taken at the pivot log L_UV = 30.5, beta_30.5 = beta + 30.5 gamma
  (``qso_beta``): a linear reparametrisation (profiles unchanged) that removes the ~0.999
  beta-gamma correlation which otherwise slows NUTS warm-up.
- GRB: log E_p,i = a + b (log E_iso - 52), E_iso = 4 pi d_L^2 S_bolo / (1 + z) in erg,
  s^2 = sigma_Ep^2 + b^2 sigma_S^2 + sigma_int^2; nuisances (a, b, ln sigma_int). The pivot
  10^52 erg only decorrelates a and b (a reparametrisation: profiles are unchanged).
- SNe: m_B = M + 5 log10(d_L / 10 pc); nuisance (M,), diagonal errors only.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cosmo.catalogues import Catalogue
from cosmo.distances import MPC_CM, log10_luminosity_distance_cm
from cosmo.optimize import gaussian_nll2

_LOG10_4PI = float(np.log10(4.0 * np.pi))
_GRB_PIVOT = 52.0
QSO_PIVOT = 30.5  # log10 L_UV (erg/s/Hz) near the sample's mean
_LOG10_10PC_CM = float(np.log10(1e-5 * MPC_CM))


def qso_beta(beta_pivot, gamma):
  """The intercept beta of the issue's (unpivoted) relation."""
  return beta_pivot - QSO_PIVOT * gamma


def qso_predict(nuisance: jax.Array, log10_dl: jax.Array, cat: Catalogue):
  beta_pivot, gamma, log_delta = nuisance
  mean = (qso_beta(beta_pivot, gamma) + gamma * cat.x
          + (gamma - 1.0) * (_LOG10_4PI + 2.0 * log10_dl))
  var = cat.sigma_y ** 2 + gamma ** 2 * cat.sigma_x ** 2 + jnp.exp(2.0 * log_delta)
  return mean, var


def grb_predict(nuisance: jax.Array, log10_dl: jax.Array, cat: Catalogue):
  a, b, log_sigma_int = nuisance
  log_eiso = _LOG10_4PI + 2.0 * log10_dl + cat.x - jnp.log10(1.0 + cat.z)
  mean = a + b * (log_eiso - _GRB_PIVOT)
  var = cat.sigma_y ** 2 + b ** 2 * cat.sigma_x ** 2 + jnp.exp(2.0 * log_sigma_int)
  return mean, var


def sne_predict(nuisance: jax.Array, log10_dl: jax.Array, cat: Catalogue):
  (absolute_magnitude,) = nuisance
  mean = absolute_magnitude + 5.0 * (log10_dl - _LOG10_10PC_CM)
  return mean, cat.sigma_y ** 2


def _linear_init(cat: Catalogue, weights: jax.Array, design_x: jax.Array, target: jax.Array):
  """Least squares of the linear part, then the excess residual scatter: a warm start."""
  root_w = jnp.sqrt(weights)
  design = jnp.stack([jnp.ones_like(design_x), design_x], axis=-1)
  coef, *_ = jnp.linalg.lstsq(design * root_w[:, None], target * root_w)
  n = jnp.sum(weights)
  excess = (jnp.sum(weights * (target - design @ coef) ** 2)
            - jnp.sum(weights * cat.sigma_y ** 2)) / n
  return coef, 0.5 * jnp.log(jnp.maximum(excess, 1e-4))


def qso_init(cat: Catalogue, log10_dl: jax.Array, weights: jax.Array) -> jax.Array:
  lum = _LOG10_4PI + 2.0 * log10_dl  # log L = log F + lum: log L_X = beta + gamma log L_UV
  coef, log_delta = _linear_init(cat, weights, cat.x + lum - QSO_PIVOT, cat.y + lum)
  return jnp.array([coef[0], coef[1], log_delta])


def grb_init(cat: Catalogue, log10_dl: jax.Array, weights: jax.Array) -> jax.Array:
  log_eiso = _LOG10_4PI + 2.0 * log10_dl + cat.x - jnp.log10(1.0 + cat.z) - _GRB_PIVOT
  coef, log_sigma = _linear_init(cat, weights, log_eiso, cat.y)
  return jnp.array([coef[0], coef[1], log_sigma])


def sne_init(cat: Catalogue, log10_dl: jax.Array, weights: jax.Array) -> jax.Array:
  w = weights / cat.sigma_y ** 2
  return jnp.array([jnp.sum(w * (cat.y - 5.0 * (log10_dl - _LOG10_10PC_CM))) / jnp.sum(w)])


def qso_distance_slope(nuisance: jax.Array) -> jax.Array:
  return 2.0 * (nuisance[1] - 1.0)


def grb_distance_slope(nuisance: jax.Array) -> jax.Array:
  return 2.0 * nuisance[1]


def sne_distance_slope(nuisance: jax.Array) -> jax.Array:
  return jnp.full_like(nuisance[0], 5.0)


class Probe(NamedTuple):
  """A likelihood: its nuisances (the intercept first), ``predict`` -> (mean, variance) of y,
  a warm start, a mock truth, and ``distance_slope``: d mean / d log10 d_L given the
  nuisances (it does not depend on the intercept)."""
  name: str
  nuisance_names: tuple[str, ...]
  predict: Callable[[jax.Array, jax.Array, Catalogue], tuple[jax.Array, jax.Array]]
  initial_nuisance: Callable[[Catalogue, jax.Array, jax.Array], jax.Array]
  mock_truth: tuple[float, ...]  # nuisances of the embedded mock catalogue
  distance_slope: Callable[[jax.Array], jax.Array]


PROBE_DEFS = {
    # Truths near the fits to the real catalogues (Lusso 2020; Konus-Wind; Pantheon+ with H0 = 70).
    "qso": Probe("qso", ("beta_30.5", "gamma", "ln_delta"), qso_predict, qso_init,
                 (26.71, 0.62, float(np.log(0.23))), qso_distance_slope),
    "grb": Probe("grb", ("a", "b", "ln_sigma_int"), grb_predict, grb_init,
                 (2.05, 0.45, float(np.log(0.2))), grb_distance_slope),
    "sne": Probe("sne", ("M",), sne_predict, sne_init, (-19.35,), sne_distance_slope),
}


def get_probe(name: str) -> Probe:
  if name not in PROBE_DEFS:
    raise ValueError(f"unknown probe {name!r}; choose one of {sorted(PROBE_DEFS)}")
  return PROBE_DEFS[name]


def chi2(probe: Probe, nuisance: jax.Array, log10_dl: jax.Array, cat: Catalogue,
         weights: jax.Array | None = None) -> jax.Array:
  """-2 ln L given the distances (the profile minimises this over the nuisances).

  ``weights`` (0/1 per object) select a subsample without changing array shapes, so one
  compiled profile serves every redshift bin.
  """
  mean, var = probe.predict(nuisance, log10_dl, cat)
  return gaussian_nll2(mean, var, cat.y, jnp.ones_like(cat.y) if weights is None else weights)


def chi2_at(probe: Probe, omega_m: jax.Array, nuisance: jax.Array, cat: Catalogue,
            weights: jax.Array | None = None) -> jax.Array:
  """-2 ln L as a function of all parameters (distances computed inside)."""
  return chi2(probe, nuisance, log10_luminosity_distance_cm(cat.z, omega_m), cat, weights)


@functools.partial(jax.jit, static_argnames="probe")
def simulate(probe: Probe, key: jax.Array, omega_m: jax.Array, nuisance: jax.Array,
             cat: Catalogue) -> Catalogue:
  """A mock with the same redshifts, x and errors: y drawn from the likelihood itself."""
  mean, var = probe.predict(nuisance, log10_luminosity_distance_cm(cat.z, omega_m), cat)
  y = mean + jnp.sqrt(var) * jax.random.normal(key, mean.shape, mean.dtype)
  return cat._replace(y=y)
