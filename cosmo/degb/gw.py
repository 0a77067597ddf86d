"""Thermal gravitational-wave background in dEGB and the BBN bound on ``T_RH``.

arXiv:2405.15998, Sec. 5. The Standard-Model plasma emits gravitons at a rate (energy per
volume per time) ``Γ_GW ∝ T⁷ / M_P²`` (Ghiglieri & Laine 2015; Ghiglieri et al. 2020,
arXiv:2004.11392). With ``d(a⁴ρ_GW)/dt = a⁴ Γ_GW`` and entropy conservation, the late-time
ratio ``ρ_GW/ρ_r`` is proportional to ``∫ g_*s^{-4/3} T³/H dN``. Writing
``H = H_std/√Ω_r`` (``H_std² = ρ_r/3``) the dEGB/standard ratio is

``E(T_RH) = ∫^{ln T_RH} W(T) √Ω_r(T) d ln T / ∫^{ln T_RH} W(T) d ln T``,
``W = T g_*^{-1/2} g_*s^{-4/3} |dN/d ln T|``,

which is 1 in radiation domination and grows ∝ ``T_RH`` in the ``w = -1/3`` regime
(``Ω_r ∝ T²``), where the plasma dominates the energy budget while ``H ∝ T`` dilutes more
slowly than ``T²``. The standard background is normalised to Ghiglieri et al.'s
``ΔN_eff = 10⁻³`` at ``T_max = 2×10¹⁷ GeV`` (linear in ``T_max``), i.e.
``∫ Ω_GW h² d ln f = 5.6×10⁻⁶ ΔN_eff`` (:func:`omega_gw_h2_per_delta_neff` derives the
factor from ``T_CMB``). The rate is the GR one: the Gauss-Bonnet coupling enters only
through ``H`` (the paper's mechanism: the plasma dominates while the total energy dilutes
slowly). The BBN bound requires ``ΔN_eff^{GW} ≤ ΔN_eff^{max}``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cosmo.degb import thermal
from cosmo.degb.flows import Solution
from cosmo.degb.precision import float64

DELTA_NEFF_STD_PER_GEV = 1e-3 / 2e17   # standard-cosmology ΔN_eff per GeV of T_max
T_CMB_GEV = 2.7255 * 8.617333262e-14   # Fixsen 2009, K -> GeV
H100_GEV = 100.0 / 3.0856775814913673e19 * 6.582119569e-25   # 100 km/s/Mpc, in GeV


def omega_gw_h2_per_delta_neff() -> float:
  """``∫ Ω_GW h² d ln f`` carried by ``ΔN_eff = 1`` (≈ 5.6×10⁻⁶).

  A GW background redshifts like free-streaming radiation, so it counts as
  ``ρ_GW / ρ_ν,1 = ΔN_eff`` with one neutrino species ``ρ_ν,1 = (7/8)(4/11)^{4/3} ρ_γ``;
  ``Ω_γ h² = (π²/15) T_CMB⁴ / (3 H_100² M_P²)``.
  """
  rho_gamma = np.pi ** 2 / 15.0 * T_CMB_GEV ** 4
  rho_crit_over_h2 = 3.0 * H100_GEV ** 2 * thermal.M_PLANCK_REDUCED_GEV ** 2
  return 7.0 / 8.0 * (4.0 / 11.0) ** (4.0 / 3.0) * rho_gamma / rho_crit_over_h2


@functools.partial(jax.jit, static_argnums=0)
def _dlng_dlnT_many(g_fn, T):
  """``d ln g_*/d ln T`` on an array, compiled once per ``g_*`` curve (not a grad per sample)."""
  return jax.vmap(lambda t: thermal.dlng_dlnT(g_fn, t))(T)


def _weights(ln_T, g_star):
  g_fn = thermal.make_g_star(g_star)
  T = np.exp(ln_T)
  g = np.asarray(g_fn(T))
  dlng = np.asarray(_dlng_dlnT_many(g_fn, jnp.asarray(T))) if isinstance(g_star, str) \
      else np.zeros_like(T)
  return T * g ** -0.5 * g ** (-4.0 / 3.0) * (1.0 + dlng / 3.0)


def _cumtrapz(y, x):
  return np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])


@float64
def gw_enhancement(solution: Solution, *, g_star=10.75) -> tuple[np.ndarray, np.ndarray]:
  """``(T_RH grid in GeV, E(T_RH))`` along one trajectory (``T_RH`` = upper end of the era).

  The first grid point (``T0``) has no production yet; ``E`` there is set to 1.
  """
  ln_T = np.asarray(solution.ln_T, dtype=float)
  omega = np.clip(np.asarray(solution.omega_r, dtype=float), 0.0, None)
  weights = _weights(ln_T, g_star)
  dEGB = _cumtrapz(weights * np.sqrt(omega), ln_T)
  standard = _cumtrapz(weights, ln_T)
  enhancement = np.divide(dEGB, standard, out=np.ones_like(dEGB), where=standard > 0)
  return np.exp(ln_T), enhancement


@float64
def delta_neff_gw(T_rh, enhancement):
  """``ΔN_eff`` of the thermal GW background for reheating temperature ``T_rh`` (GeV)."""
  return DELTA_NEFF_STD_PER_GEV * np.asarray(T_rh) * np.asarray(enhancement)


@float64
def bbn_bound_TRH(solution: Solution, *, delta_neff_max: float = 0.3, g_star=10.75) -> dict:
  """Largest ``T_RH`` with ``ΔN_eff^{GW}(T_RH) ≤ delta_neff_max`` along a trajectory.

  Returns ``{"T_RH_max": GeV, "bounded": bool, "delta_neff_at_Tmax": ...,
  "omega_gw_h2_at_Tmax": ∫Ω_GW h² d ln f}``; when the
  bound is not reached inside the integrated range, ``T_RH_max`` is the range's top and
  ``bounded`` is False (the bound then lies above it).
  """
  if not delta_neff_max > 0:
    raise ValueError(f"delta_neff_max must be positive, got {delta_neff_max}")
  T, enhancement = gw_enhancement(solution, g_star=g_star)
  dneff = delta_neff_gw(T, enhancement)
  at_top = {"delta_neff_at_Tmax": float(dneff[-1]),
            "omega_gw_h2_at_Tmax": float(dneff[-1]) * omega_gw_h2_per_delta_neff()}
  over = np.nonzero(dneff > delta_neff_max)[0]
  if over.size == 0:
    return {"T_RH_max": float(T[-1]), "bounded": False, **at_top}
  i = int(over[0])
  if i == 0:
    return {"T_RH_max": float(T[0]), "bounded": True, **at_top}
  # ΔN_eff is smooth and monotone in ln T between samples: interpolate in log-log.
  l0, l1 = np.log(dneff[i - 1]), np.log(dneff[i])
  frac = (np.log(delta_neff_max) - l0) / (l1 - l0)
  ln_T_rh = np.log(T[i - 1]) + frac * (np.log(T[i]) - np.log(T[i - 1]))
  return {"T_RH_max": float(np.exp(ln_T_rh)), "bounded": True, **at_top}
