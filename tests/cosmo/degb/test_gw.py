"""GW enhancement and the BBN bound on T_RH."""

import numpy as np
import jax.numpy as jnp
import pytest

from cosmo.degb import (Params, Solution, bbn_bound_TRH, gw_enhancement, initial_condition, integrate,
                        integrate_batch)
from cosmo.degb.flows import unstack
from cosmo.degb.thermal import km2_to_gev_inv2
from cosmo.degb.gw import DELTA_NEFF_STD_PER_GEV


def _synthetic(omega_r, ln_T):
  ones = np.ones_like(ln_T)
  return Solution(ln_T=ln_T, x=0 * ones, log_abs_u=0 * ones, sign_u=ones, phi=0 * ones,
                  w=ones / 3, omega_r=omega_r, gamma=ones, ok=np.array(True))


def test_standard_cosmology_has_no_enhancement():
  ln_T = np.linspace(np.log(1e-3), np.log(1e10), 300)
  T, E = gw_enhancement(_synthetic(np.ones_like(ln_T), ln_T))
  np.testing.assert_allclose(E, 1.0, rtol=1e-12)
  bound = bbn_bound_TRH(_synthetic(np.ones_like(ln_T), ln_T))
  assert not bound["bounded"]          # standard cosmology: ΔN_eff ~ 1e-3 at 2e17 GeV only
  np.testing.assert_allclose(bound["delta_neff_at_Tmax"], DELTA_NEFF_STD_PER_GEV * 1e10, rtol=1e-6)


def test_delta_neff_conversion_matches_published_factor():
  """(7/8)(4/11)^{4/3} Ω_γ h² from T_CMB = 2.7255 K is the quoted 5.6e-6 per unit ΔN_eff."""
  from cosmo.degb.gw import omega_gw_h2_per_delta_neff
  np.testing.assert_allclose(omega_gw_h2_per_delta_neff(), 5.6e-6, rtol=5e-3)
  ln_T = np.linspace(np.log(1e-3), np.log(1e10), 50)
  bound = bbn_bound_TRH(_synthetic(np.ones_like(ln_T), ln_T))
  np.testing.assert_allclose(bound["omega_gw_h2_at_Tmax"],
                             bound["delta_neff_at_Tmax"] * omega_gw_h2_per_delta_neff(), rtol=1e-12)


def test_enhancement_closed_form_for_omega_growing_as_T_squared():
  """Ω_r = (T/T*)² above T*: E(T) = ∫ T²/T* dlnT / ∫ T dlnT → T/(2T*) (closed form)."""
  T_star = 1.0
  ln_T = np.linspace(np.log(1e-3), np.log(1e8), 4000)
  T = np.exp(ln_T)
  omega = np.maximum(1.0, (T / T_star) ** 2)
  _, E = gw_enhancement(_synthetic(omega, ln_T))
  high = T > 10
  T0, Th = T[0], T[high]
  exact = ((T_star - T0) + (Th ** 2 - T_star ** 2) / (2 * T_star)) / (Th - T0)
  np.testing.assert_allclose(E[high], exact, rtol=1e-4)


def test_bbn_bound_closed_form():
  """With E = T/(2T*), ΔN_eff = c T²/(2T*) = 0.3 gives T_RH = √(0.6 T*/c)."""
  ln_T = np.linspace(np.log(1e-3), np.log(1e16), 6000)
  T = np.exp(ln_T)
  omega = np.maximum(1.0, T ** 2)
  bound = bbn_bound_TRH(_synthetic(omega, ln_T), delta_neff_max=0.3)
  assert bound["bounded"]
  np.testing.assert_allclose(bound["T_RH_max"], np.sqrt(0.6 / DELTA_NEFF_STD_PER_GEV), rtol=1e-3)
  with pytest.raises(ValueError):
    bbn_bound_TRH(_synthetic(omega, ln_T), delta_neff_max=0.0)


def test_w_minus_third_region_enhances_and_bounds_T_RH():
  """α < 0 (w = -1/3 attractor): E grows with T_RH and the bound lands at 1e8-1e10 GeV."""
  alpha = -1.0e37   # GeV^-2 (≈ -0.4 km²)
  ic = initial_condition(alpha, 1.0, 1e-3)
  sol = integrate(ic, Params(jnp.asarray(1.0)), (1e-3, 1e14), n_save=200)
  T, E = gw_enhancement(sol)
  assert np.all(np.diff(E[T > 10]) > 0) and E[-1] > 1e6
  bound = bbn_bound_TRH(sol)
  assert bound["bounded"] and 1e7 < bound["T_RH_max"] < 1e11


def test_bound_scales_with_onset_of_w_minus_third_era():
  """In the w = -1/3 era √Ω_r ≈ T/T_*, so ΔN_eff ≈ c T_RH²/T_* and T_RH ≲ √(ΔN_max T_*/c).

  T_* (where w first turns negative) falls as |α|^{-1/4}; the largest couplings that keep
  BBN in radiation domination (T_* of a few MeV) give the paper's 1e8-1e9 GeV.
  """
  alpha_km2 = np.array([1.0, 1e8])
  ic = initial_condition(-km2_to_gev_inv2(alpha_km2), np.ones(2), 1e-3)
  sol = integrate_batch(ic, Params(jnp.ones(2)), (1e-3, 1e14), n_save=300)
  for i in range(2):
    s = unstack(sol, i)
    T = np.exp(s.ln_T)
    t_star = T[np.argmax(np.asarray(s.w) < 0)]
    bound = bbn_bound_TRH(s, delta_neff_max=0.3)["T_RH_max"]
    np.testing.assert_allclose(bound, np.sqrt(0.3 * t_star / DELTA_NEFF_STD_PER_GEV), rtol=0.25)
  assert 1e8 < bound < 1e9
