"""Symbolic derivation (sympy) of the dEGB field equations and their autonomous form.

arXiv:2405.15998, Sec. 2 (and arXiv:2303.05813, Sec. 2). Starting from the minisuperspace
Lagrangian of ``S = ∫√-g [R/2 - (∂φ)²/2 + f(φ) G_GB] + S_rad`` on
``ds² = -n² dt² + a² dx²``:

``L = -3 a ȧ²/n + a³ φ̇²/(2n) - 8 f'(φ) φ̇ ȧ³/n³ - n ρ₀/a``

(``√-g R/2`` and ``√-g f G_GB = 8 f d(ȧ³/n³)/dt`` integrated by parts; radiation as a
perfect fluid, ``ρ_r = ρ₀ a⁻⁴``). Varying ``n`` gives the Friedmann constraint, ``a`` the
acceleration equation and ``φ`` the scalar equation; solving the last two for ``Ḣ`` and
``φ̈`` and substituting ``x = φ̇/(√6H)``, ``u = 8f'H²``, ``f'' = λ f'`` yields the
autonomous system implemented in :mod:`cosmo.degb.equations`. The tests check that this
derivation reproduces those closed forms exactly.
"""

from __future__ import annotations

import functools

import sympy as sp


@functools.lru_cache(maxsize=1)
def field_equations():
  """Euler-Lagrange equations ``{"friedmann", "acceleration", "scalar"}`` at ``n = 1``.

  Expressed in the symbols ``H, Hdot, phidot, phiddot, rho_r, f1 (= f'), f2 (= f'')``.
  """
  t = sp.Symbol("t")
  n = sp.Function("n")(t)
  a = sp.Function("a")(t)
  phi = sp.Function("phi")(t)
  f = sp.Function("f")
  rho0 = sp.Symbol("rho0", positive=True)
  lagrangian = (-3 * a * a.diff(t) ** 2 / n + a ** 3 * phi.diff(t) ** 2 / (2 * n)
                - 8 * f(phi).diff(t) * a.diff(t) ** 3 / n ** 3 - n * rho0 / a)

  def euler_lagrange(q):
    return sp.diff(lagrangian.diff(q.diff(t)), t) - lagrangian.diff(q)

  H, Hdot, phidot, phiddot, rho_r, f1, f2 = sp.symbols("H Hdot phidot phiddot rho_r f1 f2")
  A = sp.Symbol("A", positive=True)
  replacements = [
      (sp.Derivative(f(phi), (phi, 2)), f2), (sp.Derivative(f(phi), phi), f1),
      (sp.Derivative(a, (t, 2)), A * (Hdot + H ** 2)), (sp.Derivative(a, t), A * H),
      (sp.Derivative(phi, (t, 2)), phiddot), (sp.Derivative(phi, t), phidot), (a, A),
      (rho0, rho_r * A ** 4)]

  def to_symbols(expr):
    expr = expr.subs(n, 1).doit()
    expr = expr.replace(lambda z: isinstance(z, sp.Subs), lambda z: z.doit())
    for old, new in replacements:
      expr = expr.subs(old, new)
    return sp.simplify(expr)

  friedmann = to_symbols(-lagrangian.diff(n)) / A ** 3          # = ρ_r + φ̇²/2 - 3H²(1 + 8Hḟ)
  acceleration = sp.simplify(to_symbols(euler_lagrange(a)) / A ** 2)
  scalar = sp.simplify(to_symbols(euler_lagrange(phi)) / A ** 3)
  return {"friedmann": sp.expand(friedmann), "acceleration": sp.expand(acceleration),
          "scalar": sp.expand(scalar)}


@functools.lru_cache(maxsize=1)
def autonomous_system():
  """``{"epsilon", "dx_dN", "du_dN", "omega_r", "w"}`` as sympy expressions in ``x, u, lam``."""
  eqs = field_equations()
  H, Hdot, phidot, phiddot, rho_r, f1, f2 = sp.symbols("H Hdot phidot phiddot rho_r f1 f2")
  x, u, lam = sp.symbols("x u lam")
  solved = sp.solve([eqs["acceleration"], eqs["scalar"]], [Hdot, phiddot], dict=True)[0]
  rho_from_constraint = sp.solve(eqs["friedmann"], rho_r)[0]
  to_xu = {phidot: sp.sqrt(6) * H * x, f1: u / (8 * H ** 2), f2: lam * u / (8 * H ** 2)}

  def reduce(expr):
    return sp.simplify(sp.simplify(expr.subs(rho_r, rho_from_constraint)).subs(to_xu))

  epsilon = reduce(solved[Hdot] / H ** 2)
  phiddot_over_H2 = reduce(solved[phiddot] / H ** 2)
  dx_dN = sp.simplify(phiddot_over_H2 / sp.sqrt(6) - x * epsilon)
  # u = 8 f'(φ) H²  ⇒  du/dN = u (f''/f' · φ̇/H + 2Ḣ/H²) = u (√6 λ x + 2ε)
  du_dN = sp.simplify(u * (sp.sqrt(6) * lam * x + 2 * epsilon))
  omega_r = sp.simplify((rho_from_constraint / (3 * H ** 2)).subs(to_xu))
  w = sp.simplify(-1 - sp.Rational(2, 3) * epsilon)
  return {"epsilon": epsilon, "dx_dN": dx_dN, "du_dN": du_dN, "omega_r": omega_r, "w": w}


def scaling_solution():
  """Closed forms on the scaling branch, parametrised by ``x``: ``λ(x)``, ``u(x)``, ``w(x)``.

  On ``Ω_r = 0`` (``u = (x² - 1)/(√6 x)``) ``dx/dN`` and ``du/dN`` share the factor
  ``√6 λ x (1 + x²) - 2 (1 + 5x²)``, so ``λ = 2(1 + 5x²)/(√6 x (1 + x²))``.
  """
  x = sp.Symbol("x", positive=True)
  lam = 2 * (1 + 5 * x ** 2) / (sp.sqrt(6) * x * (1 + x ** 2))
  u = (x ** 2 - 1) / (sp.sqrt(6) * x)
  system = autonomous_system()
  xs, us, ls = sp.symbols("x u lam")
  w = sp.simplify(system["w"].subs({xs: x, us: u, ls: lam}))
  return {"x": x, "lam": lam, "u": u, "w": sp.factor(w)}
