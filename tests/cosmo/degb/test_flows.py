"""Flows: constraint preservation, attractor neighbourhoods, the path classifier, physical ICs."""

import numpy as np
import jax.numpy as jnp
import pytest

from cosmo.degb import (InitialCondition, Params, Solution, classify_path, fixed_points,
                        initial_condition, integrate, integrate_batch)
from cosmo.degb.flows import unstack

T_RANGE = (1e-3, 1e14)


def _ic(x0, log_u0, sign):
  return InitialCondition(jnp.asarray(x0), jnp.asarray(log_u0), jnp.asarray(sign), jnp.asarray(0.0))


@pytest.fixture(scope="module")
def batch():
  """Smooth flows into each attractor: (γ, sign α, x0)."""
  cases = [(0.5, 1.0, 0.0), (2.0, 1.0, 1e-6), (3.0, 1.0, 0.0), (1.0, -1.0, 0.0), (3.0, -1.0, 1e-6)]
  gamma, sign, x0 = map(np.array, zip(*cases))
  ic = InitialCondition(jnp.asarray(x0), jnp.full(len(cases), np.log(1e-12)), jnp.asarray(sign),
                        jnp.zeros(len(cases)))
  return cases, integrate_batch(ic, Params(jnp.asarray(gamma)), T_RANGE, n_save=200)


def test_friedmann_constraint_preserved(batch):
  """Ω_r from the constraint equals ρ_r/(3H²) propagated independently (ρ_r ∝ a⁻⁴, H² = u/8f')."""
  cases, sol = batch
  for i, (gamma, _, _) in enumerate(cases):
    s = unstack(sol, i)
    assert s.ok
    delta_N = -(s.ln_T - s.ln_T[0])                      # constant g_*: T ∝ 1/a
    log_omega_indep = (np.log(s.omega_r[0]) - 4 * delta_N + gamma * (s.phi - s.phi[0])
                       - (s.log_abs_u - s.log_abs_u[0]))
    y = np.sqrt(6) * s.x * np.sign(s.sign_u) * np.exp(s.log_abs_u)
    # Friedmann residual 1 - x² + y - Ω_r in units of its largest term
    residual = np.abs(1 - s.x ** 2 + y - np.exp(log_omega_indep)) / (1 + s.x ** 2 + np.abs(y))
    assert residual.max() < 1e-8, (cases[i], residual.max())


def test_chunked_sorted_batch_matches_one_chunk(batch):
  """Chunks of 2 after the stiffness sort come back in input order with the same values."""
  cases, sol = batch
  gamma, sign, x0 = map(np.array, zip(*cases))
  ic = InitialCondition(jnp.asarray(x0), jnp.full(len(cases), np.log(1e-12)), jnp.asarray(sign),
                        jnp.zeros(len(cases)))
  chunked = integrate_batch(ic, Params(jnp.asarray(gamma)), T_RANGE, n_save=200, chunk_size=2)
  np.testing.assert_allclose(np.asarray(chunked.gamma[:, 0]), gamma)
  # Lanes are independent, but vectorised exp/log may differ by an ulp between batch shapes and
  # adaptive step control turns that into differences at the solver tolerance (rtol 1e-10).
  np.testing.assert_allclose(np.asarray(chunked.w), np.asarray(sol.w), rtol=0, atol=1e-6)


def test_flows_reach_the_expected_attractor(batch):
  cases, sol = batch
  expected = ["scaling", "scaling", "kination", "w=-1/3", "w=-1/3"]
  for i, name in enumerate(expected):
    assert classify_path(unstack(sol, i))["final"] == name, cases[i]


@pytest.mark.parametrize("gamma,sign", [(0.7, 1.0), (3.5, 1.0), (1.5, -1.0)])
def test_trajectory_started_near_attractor_stays(gamma, sign):
  points = {p.name: p for p in fixed_points(gamma)}
  if sign < 0:
    x0, log_u0, w_target = -1e-3, np.log(1e4), -1 / 3
  elif gamma ** 2 < 6:
    p = points["scaling"]
    x0, log_u0, w_target = p.x * (1 + 1e-3), np.log(p.u), p.w
  else:
    x0, log_u0, w_target = 1 - 1e-3, np.log(1e-3), 1.0
  sol = integrate(_ic(x0, log_u0, sign), Params(jnp.asarray(gamma)), T_RANGE, n_save=200)
  assert bool(sol.ok)
  assert np.max(np.abs(np.asarray(sol.w) - w_target)) < 0.02
  assert abs(float(sol.w[-1]) - w_target) < 1e-3


def test_diffrax_matches_scipy_lsoda():
  from cosmo.degb.flows import integrate_scipy
  for gamma, sign, x0 in [(2.0, -1.0, 1e-4), (2.0, 1.0, -1e-2)]:   # smooth, and a jump A -> S
    ic, params = _ic(x0, np.log(1e-12), sign), Params(jnp.asarray(gamma))
    sol = integrate(ic, params, T_RANGE, n_save=200)
    ref = integrate_scipy(ic, params, T_RANGE, n_save=200, rtol=1e-11, atol=1e-13)
    assert bool(ref.ok) and bool(sol.ok)
    np.testing.assert_allclose(np.asarray(sol.w), ref.w, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sol.log_abs_u), ref.log_abs_u, rtol=1e-5, atol=1e-5)


def test_initial_condition_from_physical_units():
  ic = initial_condition(alpha_gev2=-2.0e37, gamma=1.5, T0_gev=1e-3, x0=0.0, g_star=10.75)
  H0 = np.sqrt(np.pi ** 2 / 30 * 10.75 * 1e-12 / 3) / 2.435e18
  assert float(ic.sign_u) == -1.0
  np.testing.assert_allclose(np.exp(float(ic.log_abs_u0)), 8 * 2.0e37 * 1.5 * H0 ** 2, rtol=1e-12)
  with pytest.raises(ValueError):
    integrate(ic, Params(jnp.asarray(1.5)), (1.0, 0.5))
  with pytest.raises(ValueError):
    integrate(ic, Params(jnp.asarray(1.5)), T_RANGE, g_star=-1.0)


def _hand_built(w_values, lengths, gamma=1.0, sign=1.0):
  """A piecewise-constant w(ln T) with smooth 0.3-e-fold steps (for the classifier)."""
  ln_T = np.linspace(0, sum(lengths), 400)
  w = np.full_like(ln_T, w_values[0])
  edge = 0.0
  for prev, nxt, length in zip(w_values[:-1], w_values[1:], lengths[:-1]):
    edge += length
    w += (nxt - prev) * 0.5 * (1 + np.tanh((ln_T - edge) / 0.1))
  ones = np.ones_like(ln_T)
  return Solution(ln_T=ln_T, x=0 * ones, log_abs_u=0 * ones, sign_u=sign * ones, phi=0 * ones, w=w,
                  omega_r=ones, gamma=gamma * ones, ok=np.array(True))


def test_classifier_on_hand_built_curves():
  from cosmo.degb import scaling_w
  w_s = scaling_w(1.0)
  assert classify_path(_hand_built([1 / 3, -1 / 3], [5, 20], sign=-1.0))["path"] == "RD -> w=-1/3"
  assert classify_path(_hand_built([1 / 3, 1.0], [5, 20], gamma=3.0))["path"] == "RD -> kination"
  assert classify_path(_hand_built([1 / 3, w_s], [5, 20]))["path"] == "RD -> scaling"
  out = classify_path(_hand_built([1 / 3, 1.0, w_s], [5, 6, 10]))
  assert out["path"] == "RD -> kination -> scaling" and out["plateaus"] == ["kination"]
  # w rises 1/3 -> 1 -> w_s monotonically: kination only delays a swift transition
  assert out["swift"] and out["metastable"] == []
  out = classify_path(_hand_built([1 / 3, -1 / 3, 1.0], [5, 6, 10], gamma=3.0))
  assert out["path"] == "RD -> w=-1/3 -> kination"
  assert not out["swift"] and out["metastable"] == ["w=-1/3"]
  out = classify_path(_hand_built([1 / 3, 1.0, -1 / 3], [5, 6, 10], sign=-1.0))
  assert out["path"] == "RD -> kination -> w=-1/3" and out["metastable"] == ["kination"]
  assert classify_path(_hand_built([1 / 3, -1 / 3], [5, 20], sign=-1.0))["swift"]
  # too short a plateau is not meta-stable; an unknown final w is "unsettled"
  assert classify_path(_hand_built([1 / 3, 1.0, -1 / 3], [5, 0.5, 10], sign=-1.0))["path"] == \
      "RD -> w=-1/3"
  assert classify_path(_hand_built([1 / 3, 0.7], [5, 20]))["final"] == "unsettled"
  # a plateau away from every critical point's w is not a meta-stable era
  assert classify_path(_hand_built([1 / 3, 0.6, 1.0], [5, 6, 10], gamma=3.0))["path"] == \
      "RD -> kination"
  # ending at a w that is not a high-T attractor on this side (kination for γ² < 6) is unsettled
  assert classify_path(_hand_built([1 / 3, 1.0], [5, 20], gamma=1.0))["final"] == "unsettled"
  failed = _hand_built([1 / 3, 1.0], [5, 20], gamma=3.0)._replace(ok=np.array(False))
  assert classify_path(failed)["final"] == "failed"
