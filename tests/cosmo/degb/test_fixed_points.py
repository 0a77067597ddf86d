"""Critical points, their w, and their stability towards high temperature."""

import numpy as np
import pytest

from cosmo.degb import equations, fixed_points, scaling_w, stability
from cosmo.degb.fixed_points import residual, scaling_x

GAMMAS = [0.1, 0.5, 1.0, 2.0, 2.4, 2.5, 3.0, 5.0]


@pytest.mark.parametrize("gamma", GAMMAS)
def test_points_satisfy_the_system(gamma):
  for point in fixed_points(gamma):
    assert residual(point, gamma) < 1e-10, point


@pytest.mark.parametrize("gamma", GAMMAS)
def test_w_values_match_closed_forms(gamma):
  points = {p.name: p for p in fixed_points(gamma)}
  assert points["radiation"].w == pytest.approx(1 / 3)
  assert float(equations.w_eff(1.0, 0.0, gamma)) == pytest.approx(1.0, abs=1e-14)
  xs = scaling_x(gamma)
  w_closed = (7 * xs ** 2 - 1) / (3 * (xs ** 2 + 1))
  assert points["scaling"].w == pytest.approx(w_closed, abs=1e-12)
  assert float(equations.omega_r(xs, points["scaling"].u)) == pytest.approx(0.0, abs=1e-12)
  if gamma ** 2 < 6:
    assert 1 < points["scaling"].w < 7 / 3
  else:
    assert points["scaling"].w <= 1
  for name in ("w=-1/3 (u=+inf)", "w=-1/3 (u=-inf)"):
    assert points[name].w == pytest.approx(-1 / 3)
    # w along the approach u → ∞ from the finite chart
    assert float(equations.w_eff(1e-9, 1e9, gamma)) == pytest.approx(-1 / 3, abs=1e-8)


def test_scaling_w_tends_to_seven_thirds():
  ws = [scaling_w(g) for g in (1.0, 0.1, 0.01, 0.001)]
  assert np.all(np.diff(ws) > 0) and ws[-1] == pytest.approx(7 / 3, abs=1e-4)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_eigenvalues_match_analytic_jacobians(gamma):
  points = {p.name: p for p in fixed_points(gamma)}
  s6 = np.sqrt(6)
  # towards high T (τ = -N): radiation (1, 4); kination± (-2, 6 ∓ √6 γ)
  np.testing.assert_allclose(sorted(stability(points["radiation"], gamma)["eigenvalues"].real), [1, 4])
  np.testing.assert_allclose(sorted(stability(points["kination+"], gamma)["eigenvalues"].real),
                             sorted([-2, 6 - s6 * gamma]), atol=1e-12)
  np.testing.assert_allclose(sorted(stability(points["kination-"], gamma)["eigenvalues"].real),
                             sorted([-2, 6 + s6 * gamma]), atol=1e-12)
  # the Jacobian by finite differences (independent of jax.jacfwd)
  p = points["scaling"]
  h = 1e-6
  def f(z):
    return -np.array([float(v) for v in equations.flow(z[0], z[1], gamma)])
  z0 = np.array(p.coords)
  fd = np.stack([(f(z0 + h * e) - f(z0 - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
  np.testing.assert_allclose(stability(p, gamma)["jacobian"], fd, rtol=1e-6, atol=1e-6)


def test_radiation_is_unstable_towards_high_temperature():
  for gamma in GAMMAS:
    point = fixed_points(gamma)[0]
    assert point.name == "radiation" and stability(point, gamma)["kind"] == "repeller"


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("sign_alpha", [1.0, -1.0])
def test_exactly_three_attractor_types(gamma, sign_alpha):
  """High-T attractors on the physical side u·sign(α) > 0 (γ > 0): w = -1/3, w = 1, scaling."""
  attractors = set()
  for p in fixed_points(gamma):
    side_ok = (p.u == 0 or np.sign(p.u) == sign_alpha)
    if side_ok and stability(p, gamma)["kind"] == "attractor":
      attractors.add("w=-1/3" if np.isinf(p.u) else "kination" if p.name.startswith("kination")
                     else p.name)
  expected = set()
  if sign_alpha < 0:
    expected.add("w=-1/3")
  if gamma ** 2 > 6:
    expected.add("kination")          # approached from u > 0 or, Ω_r ≥ 0 permitting, u < 0
  elif sign_alpha > 0:
    expected.add("scaling")
  assert attractors == expected
  assert attractors <= {"w=-1/3", "kination", "scaling"}
