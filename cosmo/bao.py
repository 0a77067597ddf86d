"""DESI DR2 BAO as a low-redshift cross-check of Omega_m (arXiv 2405.19953, Sec. 2; DESI DR2
BAO, arXiv 2503.14738).

BAO measure distances in units of the sound horizon r_d. In flat LCDM, with the Hubble
distance c / H0 written as ``alpha r_d`` (alpha = c / (H0 r_d), i.e. h r_d = c / (100 alpha)
Mpc with c in km/s), every measured ratio is alpha times a dimensionless function of z and
Omega_m (distances from cosmo.distances, in units of c / H0):

- D_M / r_d = alpha D_C(z)              (flat: the transverse distance is D_C)
- D_H / r_d = alpha / E(z)
- D_V / r_d = alpha (z D_C(z)^2 / E(z))^(1/3)
- F_AP = D_M / D_H = D_C(z) E(z)         (alpha cancels)

chi^2 = r^T C^-1 r is quadratic in alpha, so the profile over alpha is closed form
(weighted least squares) and chi^2(Omega_m) is one jitted, vmapped call over a grid.

The embedded default (no shared data) is a mock drawn at Omega_m = 0.315, h r_d = 101.54 Mpc
at DESI DR2's effective redshifts and observables (arXiv 2503.14738, Table IV) with
independent 1% errors: a stated truth, not DESI's measurements.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cosmo.catalogues import _number
from cosmo.distances import SPEED_OF_LIGHT_KM_S, comoving_distance, hubble_rate

QUANTITIES = ("DM_over_rs", "DH_over_rs", "DV_over_rs", "F_AP")
DEFAULT_FILES = ("cosmo/desi_bao/dr2_data.csv", "cosmo/desi_bao/dr2_covariance.txt")
# DESI DR2 BAO alone in flat LCDM (arXiv 2503.14738, Sec. 5, Table V): the published fit.
DESI_DR2_OMEGA_M = (0.2975, 0.0086)
DESI_DR2_H_RD_MPC = (101.54, 0.73)


class BaoData(NamedTuple):
  z: np.ndarray           # (n,)
  value: np.ndarray       # (n,) the measured ratio
  quantity: np.ndarray    # (n,) index into QUANTITIES
  covariance: np.ndarray  # (n, n)


def load_bao(data_path: str | Path, covariance_path: str | Path) -> BaoData:
  """Reads a ``z,value,quantity`` CSV and its whitespace covariance matrix.

  Raises ``ValueError`` naming the file and line for a missing column, a non-numeric value,
  a negative redshift or an unknown quantity, and for a covariance of the wrong shape, not
  symmetric or not positive definite.
  """
  data_path, covariance_path = Path(data_path), Path(covariance_path)
  with data_path.open(newline="") as f:
    rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
  if not rows:
    raise ValueError(f"{data_path}: empty file")
  header = [c.strip() for c in rows[0][1]]
  missing = [c for c in ("z", "value", "quantity") if c not in header]
  if missing:
    raise ValueError(f"{data_path}, line {rows[0][0]}: missing column(s) {missing}")
  z, value, quantity = [], [], []
  for n, row in rows[1:]:
    where = f"{data_path}, line {n}"
    if len(row) < len(header):
      raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}")
    cells = dict(zip(header, (c.strip() for c in row)))
    z.append(_number(cells["z"], "z", where))
    if z[-1] < 0:
      raise ValueError(f"{where}: negative redshift z = {z[-1]}")
    value.append(_number(cells["value"], "value", where))
    if cells["quantity"] not in QUANTITIES:
      raise ValueError(f"{where}: unknown quantity {cells['quantity']!r}; expected one of "
                       f"{list(QUANTITIES)}")
    quantity.append(QUANTITIES.index(cells["quantity"]))
  try:
    covariance = np.loadtxt(covariance_path, ndmin=2)
  except ValueError as e:
    raise ValueError(f"{covariance_path}: not a numeric matrix ({e})") from None
  if covariance.shape != (len(z), len(z)):
    raise ValueError(f"{covariance_path}: shape {covariance.shape}, expected ({len(z)}, {len(z)}) "
                     f"for the {len(z)} measurements of {data_path.name}")
  if not np.allclose(covariance, covariance.T, rtol=1e-8, atol=0.0):
    raise ValueError(f"{covariance_path}: covariance is not symmetric")
  if np.any(np.linalg.eigvalsh(covariance) <= 0):
    raise ValueError(f"{covariance_path}: covariance is not positive definite")
  return BaoData(np.asarray(z), np.asarray(value), np.asarray(quantity), covariance)


# DESI DR2's tracers: (effective z, observable) pairs (BGS, LRG1-3, LRG3+ELG1, ELG2, QSO, Lya).
MOCK_DESIGN = ((0.295, "DV_over_rs"), (0.510, "DM_over_rs"), (0.510, "DH_over_rs"),
               (0.706, "DM_over_rs"), (0.706, "DH_over_rs"), (0.934, "DM_over_rs"),
               (0.934, "DH_over_rs"), (1.321, "DM_over_rs"), (1.321, "DH_over_rs"),
               (1.484, "DM_over_rs"), (1.484, "DH_over_rs"), (2.330, "DH_over_rs"),
               (2.330, "DM_over_rs"))
MOCK_FRACTIONAL_ERROR = 0.01
MOCK_H_RD_MPC = 101.54


def mock_bao(seed: int = 0, omega_m: float = 0.315, h_rd: float = MOCK_H_RD_MPC) -> BaoData:
  """BAO measurements drawn at the stated truth on ``MOCK_DESIGN`` with 1% diagonal errors."""
  z = np.array([zi for zi, _ in MOCK_DESIGN])
  quantity = np.array([QUANTITIES.index(q) for _, q in MOCK_DESIGN])
  slope, offset = map(np.asarray, jax.jit(bao_templates)(z, quantity, omega_m))
  truth = SPEED_OF_LIGHT_KM_S / (100.0 * h_rd) * slope + offset
  sigma = MOCK_FRACTIONAL_ERROR * truth
  value = truth + sigma * np.random.default_rng(seed).standard_normal(z.size)
  return BaoData(z, value, quantity, np.diag(sigma ** 2))


def describe_mock_bao(seed: int = 0) -> str:
  return (f"mock-bao(n={len(MOCK_DESIGN)}, seed={seed}, Omega_m=0.315, h_rd={MOCK_H_RD_MPC} Mpc, "
          f"{MOCK_FRACTIONAL_ERROR:.0%} diagonal errors, DESI DR2 redshifts)")


def select(data: BaoData, mask: np.ndarray) -> BaoData:
  """The measurements ``mask`` with their block of the covariance."""
  mask = np.asarray(mask, bool)
  return BaoData(data.z[mask], data.value[mask], data.quantity[mask],
                 data.covariance[np.ix_(mask, mask)])


def bao_templates(z: jax.Array, quantity: jax.Array, omega_m: jax.Array):
  """(slope, offset) with prediction = alpha * slope + offset for each measurement."""
  d_c = comoving_distance(z, omega_m)
  e = hubble_rate(z, omega_m)
  scaled = jnp.stack([d_c, 1.0 / e, jnp.cbrt(z * d_c ** 2 / e), jnp.zeros_like(z)])
  fixed = jnp.stack([jnp.zeros_like(z)] * 3 + [d_c * e])
  pick = lambda table: jnp.take_along_axis(table, quantity[None, :], axis=0)[0]
  return pick(scaled), pick(fixed)


def profile_alpha(slope: jax.Array, offset: jax.Array, value: jax.Array,
                  precision: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(min over alpha of chi^2, the minimising alpha): weighted least squares in one unknown."""
  residual = value - offset
  alpha = (slope @ precision @ residual) / (slope @ precision @ slope)
  r = residual - alpha * slope
  return r @ precision @ r, alpha


@jax.jit
def bao_profile(data: BaoData, omega_grid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """chi^2(Omega_m) profiled over alpha = c / (H0 r_d) on ``omega_grid``: (chi2, alpha), (G,)."""
  z = jnp.asarray(data.z)
  precision = jnp.linalg.inv(jnp.asarray(data.covariance, z.dtype))
  value = jnp.asarray(data.value, z.dtype)

  def one(omega_m):
    return profile_alpha(*bao_templates(z, data.quantity, omega_m), value, precision)

  return jax.vmap(one)(jnp.asarray(omega_grid, z.dtype))


def h_rd_mpc(alpha: jax.Array) -> jax.Array:
  """h r_d in Mpc from alpha = c / (H0 r_d), H0 = 100 h km/s/Mpc."""
  return SPEED_OF_LIGHT_KM_S / (100.0 * alpha)

