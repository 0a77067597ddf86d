"""The embedded default: mock catalogues drawn from the likelihoods with a stated truth.

Redshift and luminosity distributions roughly follow the real catalogues (Lusso et al. 2020
quasars: median z ~ 1.3; Konus-Wind GRBs: median z ~ 1.4; Pantheon+: mostly z < 1); the
observable ``y`` is then drawn from the probe's own likelihood at flat LCDM with
Omega_m = 0.315 and the probe's ``mock_truth`` nuisances (cosmo.likelihoods.PROBE_DEFS).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cosmo.catalogues import Catalogue
from cosmo.distances import PLANCK_OMEGA_M, log10_luminosity_distance_cm
from cosmo.likelihoods import get_probe, simulate

DEFAULT_SIZES = {"qso": 2421, "grb": 316, "sne": 1580}
_LOG10_4PI = float(np.log10(4.0 * np.pi))
_log10_dl = jax.jit(log10_luminosity_distance_cm)  # one compile instead of many eager ops


def _redshifts_and_x(probe: str, n: int, rng: np.random.Generator, omega_m: float):
  if probe == "sne":
    z = np.exp(rng.uniform(np.log(0.011), np.log(2.3), n))
    return z, np.zeros(n), rng.uniform(0.1, 0.25, n), np.zeros(n)
  median, spread, zmax = (1.3, 0.6, 7.5) if probe == "qso" else (1.4, 0.7, 9.0)
  z = np.clip(np.exp(rng.normal(np.log(median), spread, n)), 0.02, zmax)
  log_dl = np.asarray(_log10_dl(jnp.asarray(z), omega_m))
  flux_to_lum = _LOG10_4PI + 2.0 * log_dl
  if probe == "qso":  # x = log F_UV from log L_UV ~ N(30.6, 0.5) (erg/s/Hz)
    x = rng.normal(30.6, 0.5, n) - flux_to_lum
    return z, x, rng.uniform(0.05, 0.2, n), np.full(n, 0.01)
  # GRB: x = log S_bolo from log E_iso ~ N(52.5, 0.9) (erg)
  x = rng.normal(52.5, 0.9, n) - flux_to_lum + np.log10(1.0 + z)
  return z, x, rng.uniform(0.02, 0.1, n), rng.uniform(0.01, 0.05, n)


def mock_catalogue(probe: str, n: int | None = None, seed: int = 0,
                   omega_m: float = PLANCK_OMEGA_M) -> Catalogue:
  """A mock ``probe`` catalogue of ``n`` objects drawn at the stated truth."""
  definition = get_probe(probe)
  n = DEFAULT_SIZES[probe] if n is None else n
  rng = np.random.default_rng(seed)
  z, x, sigma_y, sigma_x = _redshifts_and_x(probe, n, rng, omega_m)
  cat = Catalogue(z, np.zeros(n), sigma_y, x, sigma_x)
  cat = simulate(definition, jax.random.key(seed), jnp.asarray(omega_m),
                 jnp.asarray(definition.mock_truth), Catalogue(*map(jnp.asarray, cat)))
  return Catalogue(*map(np.asarray, cat))


def describe_mock(probe: str, n: int | None = None, seed: int = 0) -> str:
  """The embedded data name, with its truth, for reports."""
  definition = get_probe(probe)
  truth = ", ".join(f"{k}={v:.4g}" for k, v in zip(definition.nuisance_names,
                                                   definition.mock_truth))
  n = DEFAULT_SIZES[probe] if n is None else n
  return f"mock-{probe}(n={n}, seed={seed}, Omega_m={PLANCK_OMEGA_M}, {truth}, H0=70)"
