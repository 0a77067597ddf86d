"""Thermal bath: ``ρ_r = (π²/30) g_*(T) T⁴``, the Standard-Model ``g_*(T)`` curve, units.

``g_*(T)`` is either a constant or the smooth Standard-Model curve below: a sum of
``tanh`` steps in ``ln T`` at the thresholds where species leave the bath (e± at ~0.2 MeV,
μ/π at ~80 MeV, the QCD transition at ~170 MeV, c/τ at ~1.2 GeV, b at ~4 GeV, W/Z/h/t at
~60 GeV), from 3.36 today to 106.75 above the electroweak scale. It is smooth so that the
adaptive ODE solver sees a differentiable ``d ln g_*/d ln T``; it is a coarse stand-in for
lattice-based tabulations (differences of a few per cent near the QCD transition).
We use ``g_*s = g_*`` (entropy and energy degrees of freedom equal), a standard
approximation above the MeV scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

M_PLANCK_REDUCED_GEV = 2.435e18
HBARC_GEV_KM = 1.973269804e-19  # ħc in GeV·km: 1 km = 1/HBARC_GEV_KM GeV⁻¹
T_BBN_GEV = 1e-3

# (threshold temperature in GeV, Δg_*, width in ln T)
_SM_STEPS = ((2.0e-4, 7.39, 0.5), (8.0e-2, 6.5, 0.3), (1.7e-1, 44.5, 0.15),
             (1.2, 10.5, 0.4), (4.0, 14.0, 0.4), (60.0, 20.5, 0.5))
_G_TODAY = 3.36


def g_star_sm(T_gev):
  """Smooth Standard-Model ``g_*(T)`` (T in GeV)."""
  lnT = jnp.log(T_gev)
  g = jnp.full_like(lnT, _G_TODAY)
  for T_i, dg, width in _SM_STEPS:
    g = g + 0.5 * dg * (1.0 + jnp.tanh((lnT - math.log(T_i)) / width))
  return g


def make_g_star(g_star):
  """``g_star``: a number (constant) or ``"sm"``; returns ``T_gev -> g_*``."""
  if isinstance(g_star, str):
    if g_star != "sm":
      raise ValueError(f"g_star must be a positive number or 'sm', got {g_star!r}")
    return g_star_sm
  value = float(g_star)
  if not value > 0:
    raise ValueError(f"g_star must be positive, got {value}")
  return lambda T_gev: jnp.full_like(jnp.asarray(T_gev, dtype=float), value)


def dlng_dlnT(g_fn, T_gev):
  """``d ln g_* / d ln T`` by automatic differentiation."""
  return jax.grad(lambda lnT: jnp.log(g_fn(jnp.exp(lnT))))(jnp.log(T_gev))


def rho_radiation(T_gev, g):
  """``(π²/30) g_* T⁴`` in GeV⁴."""
  return math.pi ** 2 / 30.0 * g * T_gev ** 4


def hubble_standard(T_gev, g):
  """Radiation-dominated ``H = √(ρ_r/3)/M_P`` in GeV."""
  return jnp.sqrt(rho_radiation(T_gev, g) / 3.0) / M_PLANCK_REDUCED_GEV


def km2_to_gev_inv2(alpha_km2):
  """Converts a Gauss-Bonnet coupling from km² (GW170817-style units) to GeV⁻²."""
  return alpha_km2 / HBARC_GEV_KM ** 2
