"""Flat LCDM distances by fixed-grid Gauss-Legendre quadrature (jitted, differentiable).

The comoving distance D_C(z) = (c / H0) int_0^z dz' / E(z'), E(z)^2 = Omega_m (1 + z)^3 + 1 - Omega_m
(radiation neglected, as in arXiv 2405.19953, Sec. 2). The redshifts are sorted and the
integral is accumulated over the gaps between consecutive ones (with fixed knots every 0.25
added, so no gap is wide), each by an 8-node Gauss-Legendre rule: the integrand is smooth and
the gaps short, so the error is ~1e-12
relative for z < 10 (far inside the 1e-6 the profiles need) at 8 evaluations per object,
with a cost independent of Omega_m (vmappable over an Omega_m grid, differentiable in it).
Omega_m > 1 is allowed: E(z)^2 stays positive for z >= 0 whenever Omega_m >= 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

SPEED_OF_LIGHT_KM_S = 299792.458
MPC_CM = 3.0856775814913673e24
PLANCK_OMEGA_M = 0.315  # Planck 2018 TT,TE,EE+lowE+lensing (arXiv 1807.06209, Table 2)
FIDUCIAL_H0 = 70.0  # km/s/Mpc; degenerate with the QSO/GRB/SNe intercepts, so fixed

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)
# Fixed knots merged with the data's redshifts keep every gap <= 0.25 up to z = 20.
_KNOTS = np.linspace(0.25, 20.0, 80)


def hubble_rate(z: jnp.ndarray, omega_m: jnp.ndarray) -> jnp.ndarray:
  """E(z) = H(z) / H0 for flat LCDM without radiation."""
  return jnp.sqrt(omega_m * (1.0 + z) ** 3 + 1.0 - omega_m)


def comoving_distance(z: jnp.ndarray, omega_m: jnp.ndarray) -> jnp.ndarray:
  """D_C(z) in units of the Hubble distance c / H0 (dimensionless), any shape of z >= 0."""
  z = jnp.asarray(z)
  flat = z.reshape(-1)
  points = jnp.concatenate([flat, jnp.asarray(_KNOTS, z.dtype)])
  order = jnp.argsort(points)
  edges = jnp.concatenate([jnp.zeros(1, z.dtype), points[order]])
  half = 0.5 * (edges[1:] - edges[:-1])
  nodes = edges[:-1, None] + half[:, None] * (1.0 + jnp.asarray(_NODES, z.dtype))
  gaps = half * jnp.sum(jnp.asarray(_WEIGHTS, z.dtype) / hubble_rate(nodes, omega_m), axis=-1)
  distance = jnp.zeros_like(points).at[order].set(jnp.cumsum(gaps))
  return distance[:flat.shape[0]].reshape(z.shape)


def luminosity_distance_mpc(z: jnp.ndarray, omega_m: jnp.ndarray,
                            h0: float = FIDUCIAL_H0) -> jnp.ndarray:
  """d_L(z) = (1 + z) D_C(z) in Mpc."""
  return (1.0 + z) * comoving_distance(z, omega_m) * (SPEED_OF_LIGHT_KM_S / h0)


def log10_luminosity_distance_cm(z: jnp.ndarray, omega_m: jnp.ndarray,
                                 h0: float = FIDUCIAL_H0) -> jnp.ndarray:
  """log10 d_L in cm, the quantity the QSO and GRB relations use."""
  return jnp.log10(luminosity_distance_mpc(z, omega_m, h0)) + np.log10(MPC_CM)


def distance_modulus(z: jnp.ndarray, omega_m: jnp.ndarray,
                     h0: float = FIDUCIAL_H0) -> jnp.ndarray:
  """mu = 5 log10(d_L / 10 pc)."""
  return 5.0 * jnp.log10(luminosity_distance_mpc(z, omega_m, h0)) + 25.0
