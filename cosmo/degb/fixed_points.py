"""Critical points of the dEGB autonomous system and their stability towards high T.

arXiv:2405.15998, Sec. 3. For ``f = α e^{γφ}`` (``λ = γ``) in the variables of
:mod:`cosmo.degb.equations` the critical points are (derived in :mod:`cosmo.degb.symbolic`):

* radiation ``(x, u) = (0, 0)``: ``w = 1/3``, ``Ω_r = 1``;
* kination ``(±1, 0)``: ``w = 1``, ``Ω_r = 0``;
* the scaling solution on ``Ω_r = 0``: ``x_s`` the real root of
  ``√6 γ x (1 + x²) = 2 (1 + 5x²)``, ``u_s = (x_s² - 1)/(√6 x_s)``, with
  ``w = (7x_s² - 1) / (3 (x_s² + 1))``; ``1 < w < 7/3`` for ``0 < γ² < 6`` and ``w → 7/3``
  as ``γ → 0``;
* at infinity, ``|u| → ∞`` with ``x → 0`` (``r = 1/u = 0`` in the second chart): ``w = -1/3``
  with ``y, Ω_r → ∞``.

"Towards high temperature" means backwards in e-folds, ``τ = -N``: a point is a high-T
attractor when every eigenvalue of the Jacobian of ``d/dτ`` has negative real part. The
``w = -1/3`` point has a zero eigenvalue; its centre manifold is the invariant line
``r = 0`` with ``dx/dτ = √6 γ x²``, attracting from ``γ x < 0`` — the physical side
(``Ω_r ≥ 0``) exactly when ``α < 0`` (``u γ < 0``) — so it is an attractor for ``α < 0``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cosmo.degb import equations
from cosmo.degb.precision import float64

SQRT6 = equations.SQRT6


@dataclasses.dataclass(frozen=True)
class FixedPoint:
  """A critical point; ``chart`` is ``"u"`` (coordinates ``(x, u)``) or ``"r"`` (``(x, 1/u)``)."""
  name: str
  x: float
  u: float          # ±inf for points at infinity
  w: float
  omega_r: float    # inf at infinity
  chart: str
  coords: tuple[float, float]


@float64
def scaling_x(gamma) -> float:
  """Real root of ``√6 γ x (1 + x²) = 2 (1 + 5x²)`` (NaN for ``γ = 0``)."""
  gamma = float(gamma)
  if gamma == 0.0:
    return float("nan")
  roots = np.roots([SQRT6 * gamma, -10.0, SQRT6 * gamma, -2.0])
  real = roots[np.abs(roots.imag) < 1e-9 * np.maximum(1.0, np.abs(roots))].real
  return float(real[0]) if real.size else float("nan")


@float64
def scaling_w(gamma) -> float:
  """``w = (7x² - 1)/(3(x² + 1))`` of the scaling solution."""
  x = scaling_x(gamma)
  return (7 * x ** 2 - 1) / (3 * (x ** 2 + 1))


@float64
def fixed_points(gamma) -> list[FixedPoint]:
  """All critical points (finite and at infinity) for ``f = α e^{γφ}``."""
  gamma = float(gamma)
  points = [FixedPoint("radiation", 0.0, 0.0, 1 / 3, 1.0, "u", (0.0, 0.0)),
            FixedPoint("kination+", 1.0, 0.0, 1.0, 0.0, "u", (1.0, 0.0)),
            FixedPoint("kination-", -1.0, 0.0, 1.0, 0.0, "u", (-1.0, 0.0))]
  if gamma != 0.0:
    x_s = scaling_x(gamma)
    u_s = (x_s ** 2 - 1) / (SQRT6 * x_s)
    w_s = float(equations.w_eff(x_s, u_s, gamma))
    points.append(FixedPoint("scaling", x_s, u_s, w_s, 0.0, "u", (x_s, u_s)))
  points.append(FixedPoint("w=-1/3 (u=+inf)", 0.0, np.inf, -1 / 3, np.inf, "r", (0.0, 0.0)))
  points.append(FixedPoint("w=-1/3 (u=-inf)", 0.0, -np.inf, -1 / 3, np.inf, "r", (0.0, -0.0)))
  return points


def _tau_field(chart, gamma):
  def field(z):
    if chart == "u":
      dx, du = equations.flow(z[0], z[1], gamma)
    else:
      dx, du = equations.flow_at_infinity(z[0], z[1], gamma)
    return -jnp.stack([dx, du])      # τ = -N: towards high temperature
  return field


@float64
def residual(point: FixedPoint, gamma) -> float:
  """``max |d(coords)/dN|`` at the point (zero for a critical point)."""
  field = _tau_field(point.chart, float(gamma))
  return float(jnp.max(jnp.abs(field(jnp.asarray(point.coords, dtype=jnp.float64)))))


@float64
def stability(point: FixedPoint, gamma) -> dict:
  """Eigenvalues of the high-T (``τ = -N``) Jacobian and the classification.

  Classification: ``"attractor"`` (all Re < 0), ``"repeller"`` (all Re > 0), ``"saddle"``;
  a zero eigenvalue is resolved on the centre manifold: for the ``w = -1/3`` points the
  reduced flow ``dx/dτ = √6 γ x²`` attracts from the side ``γx < 0``, which is physical only
  for ``u γ < 0``; physical: whether the point lies in ``Ω_r ≥ 0`` for this sign of ``u``.
  """
  gamma = float(gamma)
  field = _tau_field(point.chart, gamma)
  jac = np.asarray(jax.jacfwd(field)(jnp.asarray(point.coords, dtype=jnp.float64)))
  eig = np.linalg.eigvals(jac)
  re = eig.real
  tol = 1e-9
  if np.all(np.abs(re) > tol):
    kind = "attractor" if np.all(re < 0) else "repeller" if np.all(re > 0) else "saddle"
    note = ""
  else:
    # Centre manifold of the point at infinity: r = 0 is invariant, dx/dτ = √6 γ x².
    sign_u = np.sign(point.u)
    physical_side_attracts = sign_u * gamma < 0
    hyperbolic_stable = np.all(re[np.abs(re) > tol] < 0)
    kind = ("attractor" if hyperbolic_stable and physical_side_attracts else "saddle-node")
    note = "centre manifold r=0: dx/dtau = sqrt(6) gamma x^2"
  return {"name": point.name, "eigenvalues": eig, "jacobian": jac, "kind": kind,
          "note": note, "w": point.w}
