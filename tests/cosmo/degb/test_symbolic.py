"""The autonomous system, checked against its sympy derivation from the Lagrangian."""

import numpy as np
import pytest
import sympy as sp

from cosmo.degb import equations, symbolic

x, u, lam = sp.symbols("x u lam")
S6 = sp.sqrt(6)
D = 2 + 2 * S6 * u * x + 3 * u ** 2
# The closed forms quoted in cosmo.degb.equations' docstring.
CLOSED = {
    "dx_dN": (2 * x ** 3 - 2 * x - S6 * u - 7 * S6 * u * x ** 2 + 6 * lam * u * x ** 3
              - 3 * S6 * lam * u ** 2 * x ** 2) / D,
    "du_dN": -u * (8 + 4 * x ** 2 + 6 * u ** 2 - 2 * S6 * lam * x - 3 * S6 * lam * u ** 2 * x) / D,
    "epsilon": -(4 + 2 * x ** 2 + 3 * u ** 2 + 6 * lam * u * x ** 2) / D,
    "omega_r": 1 - x ** 2 + S6 * x * u,
}


@pytest.fixture(scope="module")
def derived():
  return symbolic.autonomous_system()


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_lagrangian_reduces_to_closed_forms(derived, name):
  assert sp.simplify(derived[name] - CLOSED[name]) == 0


def test_field_equations_match_docstring_forms():
  eqs = symbolic.field_equations()
  H, Hdot, phidot, phiddot, rho_r, f1, f2 = sp.symbols("H Hdot phidot phiddot rho_r f1 f2")
  fdot = f1 * phidot
  fddot = f1 * phiddot + f2 * phidot ** 2
  friedmann = 3 * H ** 2 * (1 + 8 * H * fdot) - phidot ** 2 / 2 - rho_r
  acceleration = (2 * Hdot * (1 + 8 * H * fdot) + 3 * H ** 2 + phidot ** 2 / 2 + rho_r / 3
                  + 8 * H ** 2 * fddot + 16 * H ** 3 * fdot)
  scalar = phiddot + 3 * H * phidot - f1 * 24 * H ** 2 * (Hdot + H ** 2)
  assert sp.simplify(eqs["friedmann"] + friedmann) == 0
  assert sp.simplify(eqs["acceleration"] + 3 * acceleration) == 0
  assert sp.simplify(eqs["scalar"] - scalar) == 0


def test_jax_functions_match_sympy_at_random_points(derived):
  fns = {k: sp.lambdify((x, u, lam), v, "numpy") for k, v in derived.items()}
  rng = np.random.default_rng(0)
  for xv, uv, lv in rng.uniform(-2, 2, size=(50, 3)):
    dx, du = equations.flow(xv, uv, lv)
    np.testing.assert_allclose(float(dx), fns["dx_dN"](xv, uv, lv), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(du), fns["du_dN"](xv, uv, lv), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(equations.w_eff(xv, uv, lv)), fns["w"](xv, uv, lv),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(equations.omega_r(xv, uv)), fns["omega_r"](xv, uv, lv),
                               rtol=1e-12, atol=1e-12)


def test_infinity_chart_and_log_chart_agree_with_finite_chart():
  rng = np.random.default_rng(1)
  for xv, log_u, lv, sign in zip(rng.uniform(-2, 2, 40), rng.uniform(-6, 6, 40),
                                 rng.uniform(-3, 3, 40), rng.choice([-1.0, 1.0], 40)):
    uv = sign * np.exp(log_u)
    dx, du = equations.flow(xv, uv, lv)
    dx_inf, dr = equations.flow_at_infinity(xv, 1 / uv, lv)
    np.testing.assert_allclose(float(dx_inf), float(dx), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(dr), float(-du / uv ** 2), rtol=1e-10, atol=1e-12)
    dx_log, dlog, eps = equations.log_chart_flow(xv, log_u, sign, lv)
    np.testing.assert_allclose(float(dx_log), float(dx), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(dlog), float(du / uv), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(eps), float(equations.epsilon(xv, uv, lv)), rtol=1e-10)


def test_physical_equations_agree_with_autonomous_system():
  """Ḣ, φ̈ from the dimensionful 2x2 solve reproduce ε and dx/dN (f = α e^{γφ})."""
  rng = np.random.default_rng(2)
  for alpha, gamma, H, phi, phidot in rng.uniform([-1, -3, 0.1, -1, -1], [1, 3, 2, 1, 1], (20, 5)):
    coupling = equations.exponential_coupling(alpha, gamma)
    fdot = float(coupling.fprime(phi)) * phidot
    rho = 3 * H ** 2 * (1 + 8 * H * fdot) - phidot ** 2 / 2
    hdot, phiddot = equations.hdot_phiddot(H, phi, phidot, rho, coupling)
    xv, uv = phidot / (np.sqrt(6) * H), 8 * float(coupling.fprime(phi)) * H ** 2
    np.testing.assert_allclose(float(hdot) / H ** 2, float(equations.epsilon(xv, uv, gamma)),
                               rtol=1e-10)
    dx, _ = equations.flow(xv, uv, gamma)
    np.testing.assert_allclose(float(phiddot) / (np.sqrt(6) * H ** 2) - xv * float(hdot) / H ** 2,
                               float(dx), rtol=1e-9, atol=1e-12)
    assert abs(float(equations.friedmann_residual(H, phi, phidot, rho, coupling))) < 1e-12


def test_scaling_branch_closed_form():
  branch = symbolic.scaling_solution()
  xs = branch["x"]
  assert sp.simplify(branch["w"] - (7 * xs ** 2 - 1) / (3 * (xs ** 2 + 1))) == 0
  assert sp.limit(branch["w"], xs, sp.oo) == sp.Rational(7, 3)       # γ → 0
  assert sp.simplify(branch["lam"].subs(xs, 1) - S6) == 0             # merges with kination at γ² = 6
  # it is a critical point of the derived system for every x
  system = symbolic.autonomous_system()
  at = {x: xs, u: branch["u"], lam: branch["lam"]}
  assert sp.simplify(system["dx_dN"].subs(at)) == 0
  assert sp.simplify(system["du_dN"].subs(at)) == 0
