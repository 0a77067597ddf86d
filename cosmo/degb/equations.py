"""Field equations of dilaton-Einstein-Gauss-Bonnet cosmology and their autonomous form.

Biswas et al., "Gauss-Bonnet Cosmology: large-temperature behaviour and bounds from
Gravitational Waves", arXiv:2405.15998 (JCAP 09 (2024) 007), Sec. 2; companion arXiv:2303.05813.

Action (reduced Planck units, vanishing scalar potential):
``S = ∫ d⁴x √-g [R/2 - (∂φ)²/2 + f(φ) G_GB] + S_rad`` with, on flat FRW,
``G_GB = 24 H² (Ḣ + H²)``. The minisuperspace Lagrangian (derived and checked in
:mod:`cosmo.degb.symbolic`) gives

* Friedmann:     ``3 H² (1 + 8 H ḟ) = φ̇²/2 + ρ_r``
* scalar:        ``φ̈ + 3 H φ̇ = f'(φ) G_GB``
* acceleration:  ``2 Ḣ (1 + 8 H ḟ) + 3 H² = -φ̇²/2 - ρ_r/3 - 8 H² f̈ - 16 H³ ḟ``

Dimensionless variables in e-folds ``N = ln a``:
``x = φ̇ / (√6 H)``, ``u = 8 f'(φ) H²`` and ``λ(φ) = f''(φ)/f'(φ)`` (``= γ`` for
``f = α e^{γφ}``), so that ``y = 8 H ḟ = √6 x u`` and the constraint reads
``Ω_r = ρ_r / (3H²) = 1 - x² + y``. Solving the scalar and acceleration equations for
``ε = Ḣ/H²`` and ``φ̈/H²`` gives the closed system

``dx/dN = [2x³ - 2x - √6 u - 7√6 u x² + 6λ u x³ - 3√6 λ u² x²] / D``
``du/dN = -u [8 + 4x² + 6u² - 2√6 λ x - 3√6 λ u² x] / D``,  ``D = 2 + 2√6 u x + 3u²``

(``D > 0`` wherever ``Ω_r ≥ 0``). Points at infinity (``|u| → ∞``, the ``w = -1/3``
regime in which ``y`` and ``Ω_r`` grow without bound) are reached in the chart
``r = 1/u``, where the same right-hand sides divided through by ``u²`` stay finite.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

SQRT6 = 6.0 ** 0.5


@dataclasses.dataclass(frozen=True)
class Coupling:
  """A dilaton-Gauss-Bonnet coupling ``f(φ)``; ``lam(φ) = f''/f'`` enters the flow.

  ``log_abs_fprime(φ)`` (``ln |f'(φ)|``) is what the flow needs; the default derives it
  from ``f`` by automatic differentiation, the exponential coupling gives it in closed form.
  """
  f: Callable[[jax.Array], jax.Array]
  name: str = "custom"

  def fprime(self, phi):
    return jax.grad(self.f)(phi)

  def fsecond(self, phi):
    return jax.grad(jax.grad(self.f))(phi)

  def lam(self, phi):
    return self.fsecond(phi) / self.fprime(phi)


def exponential_coupling(alpha: float, gamma: float) -> Coupling:
  """The paper's default ``f(φ) = α e^{γφ}`` (arXiv:2405.15998, Eq. 2.1); ``λ = γ``."""
  return Coupling(f=lambda phi: alpha * jnp.exp(gamma * phi), name=f"exp(alpha={alpha},gamma={gamma})")


def gauss_bonnet_invariant(H, Hdot):
  """``G_GB = 24 H² (Ḣ + H²)`` on flat FRW."""
  return 24.0 * H ** 2 * (Hdot + H ** 2)


# ---- physical (dimensionful, reduced-Planck-unit) equations ---------------------------

def friedmann_residual(H, phi, phidot, rho_r, coupling: Coupling):
  """``3H²(1 + 8Hḟ) - φ̇²/2 - ρ_r``: zero on every solution."""
  fdot = coupling.fprime(phi) * phidot
  return 3.0 * H ** 2 * (1.0 + 8.0 * H * fdot) - 0.5 * phidot ** 2 - rho_r


def hdot_phiddot(H, phi, phidot, rho_r, coupling: Coupling):
  """Solves the scalar and acceleration equations (linear in ``Ḣ``, ``φ̈``) for them."""
  f1 = coupling.fprime(phi)
  f2 = coupling.fsecond(phi)
  # acceleration: 2Ḣ(1 + 8Hḟ) + 16 H² f1 φ̈ = -3H² - φ̇²/2 - ρ/3 - 8H² f2 φ̇² - 16 H³ f1 φ̇
  # scalar:       -24 f1 H² Ḣ + φ̈ = -3Hφ̇ + 24 f1 H⁴
  a11 = 2.0 * (1.0 + 8.0 * H * f1 * phidot)
  a12 = 8.0 * H ** 2 * f1
  b1 = (-3.0 * H ** 2 - 0.5 * phidot ** 2 - rho_r / 3.0 - 8.0 * H ** 2 * f2 * phidot ** 2
        - 16.0 * H ** 3 * f1 * phidot)
  a21 = -24.0 * f1 * H ** 2
  a22 = 1.0
  b2 = -3.0 * H * phidot + 24.0 * f1 * H ** 4
  det = a11 * a22 - a12 * a21
  hdot = (b1 * a22 - a12 * b2) / det
  phiddot = (a11 * b2 - a21 * b1) / det
  return hdot, phiddot


# ---- autonomous system in (x, u) --------------------------------------------------------

def denominator(x, u):
  return 2.0 + 2.0 * SQRT6 * u * x + 3.0 * u ** 2


def epsilon(x, u, lam):
  """``ε = Ḣ/H²`` as a function of the dimensionless state."""
  return -(4.0 + 2.0 * x ** 2 + 3.0 * u ** 2 + 6.0 * lam * u * x ** 2) / denominator(x, u)


def w_eff(x, u, lam):
  """Effective equation of state ``w = -1 - (2/3) Ḣ/H²``."""
  return -1.0 - 2.0 / 3.0 * epsilon(x, u, lam)


def omega_r(x, u):
  """Radiation fraction from the Friedmann constraint, ``Ω_r = 1 - x² + y``."""
  return 1.0 - x ** 2 + SQRT6 * x * u


def y_of(x, u):
  """The issue's ``y = 8 H ḟ = √6 x u``."""
  return SQRT6 * x * u


def flow(x, u, lam):
  """``(dx/dN, du/dN)`` of the autonomous system (finite-``u`` chart)."""
  d = denominator(x, u)
  dx = (2.0 * x ** 3 - 2.0 * x - SQRT6 * u - 7.0 * SQRT6 * u * x ** 2 + 6.0 * lam * u * x ** 3
        - 3.0 * SQRT6 * lam * u ** 2 * x ** 2) / d
  du = -u * growth_rate(x, u, lam)
  return dx, du


def growth_rate(x, u, lam):
  """``-d ln|u| / dN = [8 + 4x² + 6u² - 2√6λx - 3√6λu²x] / D``."""
  return (8.0 + 4.0 * x ** 2 + 6.0 * u ** 2 - 2.0 * SQRT6 * lam * x
          - 3.0 * SQRT6 * lam * u ** 2 * x) / denominator(x, u)


def flow_at_infinity(x, r, lam):
  """``(dx/dN, dr/dN)`` in the chart ``r = 1/u`` that contains ``|u| = ∞`` (at ``r = 0``)."""
  d = 3.0 + 2.0 * SQRT6 * x * r + 2.0 * r ** 2
  dx = (-3.0 * SQRT6 * lam * x ** 2 + r * (6.0 * lam * x ** 3 - 7.0 * SQRT6 * x ** 2 - SQRT6)
        + r ** 2 * (2.0 * x ** 3 - 2.0 * x)) / d
  rate = (6.0 - 3.0 * SQRT6 * lam * x + r ** 2 * (8.0 + 4.0 * x ** 2 - 2.0 * SQRT6 * lam * x)) / d
  return dx, r * rate


def log_chart_flow(x, log_abs_u, sign_u, lam, xp=jnp):
  """``(dx/dN, d ln|u|/dN, ε)`` for ``u = sign_u · e^{log_abs_u}``, finite for all ``|u|``.

  Uses the ``u`` chart for ``|u| ≤ 1`` and the ``1/u`` chart beyond, so neither
  ``u → 0`` nor ``|u| → ∞`` overflows (in the ``w = -1/3`` attractor ``|u| ~ T²``).
  """
  small = log_abs_u <= 0.0
  u = sign_u * xp.exp(xp.minimum(log_abs_u, 0.0))
  r = sign_u * xp.exp(-xp.maximum(log_abs_u, 0.0))
  dx_small, _ = flow(x, u, lam)
  rate_small = growth_rate(x, u, lam)
  eps_small = epsilon(x, u, lam)
  dx_large, _ = flow_at_infinity(x, r, lam)
  d_r = 3.0 + 2.0 * SQRT6 * x * r + 2.0 * r ** 2
  rate_large = (6.0 - 3.0 * SQRT6 * lam * x + r ** 2 * (8.0 + 4.0 * x ** 2 - 2.0 * SQRT6 * lam * x)) / d_r
  eps_large = -(3.0 + 6.0 * lam * x ** 2 * r + (4.0 + 2.0 * x ** 2) * r ** 2) / d_r
  dx = xp.where(small, dx_small, dx_large)
  dlog = -xp.where(small, rate_small, rate_large)
  eps = xp.where(small, eps_small, eps_large)
  return dx, dlog, eps
