"""Flows of the dEGB autonomous system from radiation domination towards high temperature.

arXiv:2405.15998, Secs. 3-4: starting from standard radiation domination at a low
temperature ``T0`` the system is evolved towards high ``T`` (backwards in e-folds) with an
adaptive ``diffrax`` solver in float64. The independent variable is ``s = ln(T/T0)``;
entropy conservation with ``g_*s(T)`` gives ``dN/ds = -(1 + (1/3) d ln g_* / d ln T)``.
Radiation enters the dynamics as a ``w = 1/3`` fluid (``ρ_r ∝ a⁻⁴``), so a varying
``g_*`` only changes the map between e-folds and temperature (an approximation that ignores
the small ``w_r < 1/3`` dips at mass thresholds).

The state is ``(x, ln|u|, φ)`` with ``sign(u) = sign(α γ)`` fixed: ``u = 8 f'(φ) H²`` never
changes sign, and the log chart keeps both ``u → 0`` and ``|u| → ∞`` (the ``w = -1/3``
attractor at infinity) finite. Everything is ``jit``/``vmap``-able; :func:`integrate_batch`
runs many initial conditions and couplings in one compiled call.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from cosmo.degb import equations, thermal
from cosmo.degb.fixed_points import scaling_w, scaling_x
from cosmo.degb.precision import float64


class InitialCondition(NamedTuple):
  """State at ``T0``: ``x0 = φ̇/(√6H)``, ``u0 = 8 f'(φ0) H0²`` (as ``ln|u0|`` and sign), ``φ0``."""
  x0: jax.Array
  log_abs_u0: jax.Array
  sign_u: jax.Array
  phi0: jax.Array


class Params(NamedTuple):
  """Exponential coupling ``f = α e^{γφ}``: only ``λ = γ`` enters the flow."""
  gamma: jax.Array


class Solution(NamedTuple):
  """A trajectory sampled on ``ln_T`` (GeV); arrays have a trailing sample axis."""
  ln_T: jax.Array
  x: jax.Array
  log_abs_u: jax.Array
  sign_u: jax.Array
  phi: jax.Array
  w: jax.Array
  omega_r: jax.Array
  gamma: jax.Array
  ok: jax.Array          # the solver reached T_max


@float64
def initial_condition(alpha_gev2, gamma, T0_gev, x0=0.0, phi0=0.0, g_star=10.75
                      ) -> InitialCondition:
  """Physical boundary condition: radiation domination at ``T0`` with ``H0 = H_std(T0)``.

  ``alpha_gev2`` is ``α`` in GeV⁻² (see :func:`cosmo.degb.thermal.km2_to_gev_inv2`); ``u0 =
  8 α γ e^{γφ0} H0²``. Requires ``|u0| ≪ 1`` and ``|x0| ≪ 1`` for the RD start to hold.
  """
  g_fn = thermal.make_g_star(g_star)
  T0 = jnp.asarray(T0_gev, dtype=float)
  H0 = thermal.hubble_standard(T0, g_fn(T0))
  u0 = 8.0 * jnp.asarray(alpha_gev2) * jnp.asarray(gamma) * jnp.exp(gamma * jnp.asarray(phi0)) * H0 ** 2
  x0, u0, phi0 = jnp.broadcast_arrays(jnp.asarray(x0, dtype=float), u0,
                                      jnp.asarray(phi0, dtype=float))
  return InitialCondition(x0, jnp.log(jnp.abs(u0)), jnp.sign(u0), phi0)


X_SCALE = 100.0  # |x| beyond which the clock slows down (see _sigma_field)
_GATE_WIDTH = 1e-2


def _sigma_field(sigma, state, args):
  """Right-hand side in the regularised clock ``σ``: ``ds/dσ = 1/max(1, |x|/X_SCALE)``.

  Jumps between attractors (e.g. from ``w = -1/3`` to the scaling solution) pass through
  ``|x| ~ |u|^{1/2}`` (up to 10¹³) within ``Δ ln T ~ 10⁻¹³``, below the float64 resolution of
  ``ln T``; in ``σ`` the passage takes ``O(1)`` and adaptive steps stay resolvable. While
  ``|x| ≤ X_SCALE`` the clock is ``s`` itself, so saved values are the solver's own.
  """
  del sigma
  x, log_abs_u, _, s = state
  sign_u, lam, ln_T0, g_fn, s_max = args
  dx, dlog, _ = equations.log_chart_flow(x, log_abs_u, sign_u, lam)
  dN_ds = -(1.0 + thermal.dlng_dlnT(g_fn, jnp.exp(ln_T0 + s)) / 3.0)
  # The clock stops (continuously) just past s_max, so a fixed σ range suffices for every
  # trajectory; the path in (s, state) space is unchanged, only its parametrisation.
  gate = jnp.clip((s_max + _GATE_WIDTH - s) / _GATE_WIDTH, 0.0, 1.0)
  ds_dsigma = gate / jnp.maximum(1.0, jnp.abs(x) / X_SCALE)
  rate = dN_ds * ds_dsigma
  return jnp.stack([dx * rate, dlog * rate, equations.SQRT6 * x * rate, ds_dsigma])


def _state_derivative_in_s(state, args):
  x, log_abs_u, phi, s = state
  sign_u, lam, ln_T0, g_fn, _ = args
  dx, dlog, _ = equations.log_chart_flow(x, log_abs_u, sign_u, lam)
  dN_ds = -(1.0 + thermal.dlng_dlnT(g_fn, jnp.exp(ln_T0 + s)) / 3.0)
  return jnp.stack([dx * dN_ds, dlog * dN_ds, equations.SQRT6 * x * dN_ds])


def sigma_max_for(gamma, s_max):
  """A clock range that always reaches ``s_max``.

  Scaling solutions have ``|x| ≤ 1 + 10/(√6 |γ|)``; a jump through ``|x|`` up to ``x_peak``
  costs ``≈ ln(x_peak/X_SCALE)/(√6 |γ|)`` extra clock (``x_peak ≤ 10¹⁸``).
  """
  abs_gamma = jnp.maximum(jnp.abs(gamma), 0.02)
  x_s = 1.0 + 10.0 / (6.0 ** 0.5 * abs_gamma)
  return s_max * jnp.maximum(1.0, x_s / X_SCALE) + 40.0 / (6.0 ** 0.5 * abs_gamma) + 10.0


def clock_knots(s_max, sigma_max, n_save, n_extra, xp=jnp):
  """Output grid in ``s`` and the clock values where the state is recorded.

  The first ``n_save`` knots are the output grid itself (exact while the clock equals
  ``s``); ``n_extra`` more, quadratically spaced from ``s_max`` to ``sigma_max``, cover the
  clock a jump or a large-``|x|`` era adds (dense where that offset is small).
  """
  s_grid = xp.linspace(0.0, s_max, n_save)
  extra = s_max + (sigma_max - s_max) * xp.linspace(0.0, 1.0, n_extra + 1)[1:] ** 2
  return s_grid, xp.concatenate([s_grid, extra])


def hermite_resample(s_knots, y_knots, dy_knots, s_grid, xp=jnp):
  """Cubic Hermite interpolation of samples ``y(s)`` (with slopes) onto ``s_grid``.

  ``s_knots`` is non-decreasing; repeated knots (after the clock stops) are skipped.
  ``xp``: ``jax.numpy`` or ``numpy``.
  """
  idx = xp.clip(xp.searchsorted(s_knots, s_grid, side="right") - 1, 0, s_knots.shape[0] - 2)
  s0, s1 = s_knots[idx], s_knots[idx + 1]
  h = xp.where(s1 > s0, s1 - s0, 1.0)
  t = xp.clip((s_grid - s0) / h, 0.0, 1.0)[:, None]
  y0, y1 = y_knots[idx], y_knots[idx + 1]
  m0, m1 = dy_knots[idx] * h[:, None], dy_knots[idx + 1] * h[:, None]
  t2, t3 = t * t, t * t * t
  return ((2 * t3 - 3 * t2 + 1) * y0 + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * y1
          + (t3 - t2) * m1)


@float64
def integrate(ic: InitialCondition, params: Params, T_range, *, n_save: int = 256,
              n_extra: int = 128, g_star=10.75, rtol: float = 1e-10, atol: float = 1e-12,
              max_steps: int = 1024, solver: str = "dopri8") -> Solution:
  """Integrates one trajectory from ``T_range[0]`` (RD) to ``T_range[1]`` (GeV), high-T-ward.

  The ODE is solved in the regularised clock of :func:`_sigma_field` with ``ln T`` as a state,
  stopped just past ``T_max``, in one adaptive solve with dense output; the solver's
  interpolant is read on the ``n_save`` output points plus ``n_extra`` clock values and
  resampled onto ``n_save`` points uniform in ``ln T`` by cubic Hermite interpolation (slopes
  from the vector field; exact where the clock was not slowed).
  ``solver``: ``"dopri8"`` (explicit, 8th order: fewest steps at tight tolerances),
  ``"tsit5"`` (explicit, 5th order) or ``"kvaerno5"`` (stiff, implicit). ``max_steps`` bounds
  the solve and sizes the dense-output buffer, whose upkeep dominates the cost of a vmapped
  solve on CPU (400 benchmark histories: 1.18 s CPU at 4096, 0.38 s at 1024, 0.28 s at 640);
  Dopri8 needs 140 steps on average and at most 525 on the benchmark's 10,000 histories. A
  history that runs out of steps comes back with ``ok=False``. Compiled once per static configuration; see
  :func:`integrate_batch` for many at once.
  """
  static = _static_config(T_range, n_save, n_extra, g_star, rtol, atol, max_steps, solver)
  return _integrate_jit(ic, params, **static)


@float64
def integrate_batch(ic: InitialCondition, params: Params, T_range, *, chunk_size=None,
                    **kwargs) -> Solution:
  """:func:`integrate` over the leading axis of ``ic`` and ``params``, in vmapped chunks.

  A vmapped adaptive solve runs until its slowest member is done: every member pays for the
  largest step count in its chunk. ``chunk_size`` members share one solve (``jax.lax.map``
  with ``batch_size``, one compiled call); ``None`` picks :func:`default_chunk_size`. Members
  are grouped by :func:`expected_stiffness_order` first (results come back in input order).
  """
  defaults = dict(n_save=256, n_extra=128, g_star=10.75, rtol=1e-10, atol=1e-12,
                  max_steps=1024, solver="dopri8")
  defaults.update(kwargs)
  static = _static_config(T_range, **defaults)
  n = int(np.shape(params.gamma)[0])
  chunk = default_chunk_size(n) if chunk_size is None else int(chunk_size)
  if chunk < 1:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  return _integrate_batch_jit(ic, params, chunk=min(chunk, n), **static)


def expected_stiffness_order(ic: InitialCondition, params: Params):
  """A permutation that puts trajectories with similar step-size histories next to each other.

  The costly stretches of a flow are the jumps out of kination (``|x|`` up to ~10¹³) and the
  approach to them; whether a history heads for kination first is set by the signs of ``u``
  and ``x0``, when it gets there by the decade of ``|x0|`` (``x`` grows from ``x0`` at a rate
  common to the radiation era), and how long a jump takes by ``γ`` (it costs
  ``~ln(x_peak)/(√6|γ|)`` of clock). Sorting by ``(sign u, sign x0, ⌊log₁₀|x0|⌋, γ)`` cut the
  lockstep waste (sum over chunks of the largest step count, over the total) at 32 per chunk
  from 2.12 (random order) to 1.25 on the benchmark's 10,000 initial conditions (1.32 without
  the ``γ`` key; 1.004 would need the step counts themselves).
  """
  x0 = jnp.asarray(ic.x0)
  decade = jnp.floor(jnp.log10(jnp.abs(x0) + 1e-300))
  return jnp.lexsort((jnp.asarray(params.gamma), decade, jnp.sign(x0), jnp.asarray(ic.sign_u)))


def default_chunk_size(n: int, backend: str | None = None) -> int:
  """Trajectories per vmapped solve: small on CPU, large on accelerators.

  On CPU the vmapped lanes cost compute, so lockstep waste (each lane runs to the chunk's
  largest step count) is paid in full, while each loop iteration also has a fixed cost; on
  the benchmark's 400 sorted trajectories the CPU time per trajectory was 1.16, 0.97, 0.85,
  0.88, 0.86 and 1.50 ms for chunks of 8, 16, 32, 64, 128 and 400. A GPU runs the lanes in
  parallel, so one chunk should fill it; 2048 keeps the dense-output buffers
  (``chunk × max_steps × stages``) to a few GB.
  """
  backend = backend or jax.default_backend()
  return min(n, 32 if backend == "cpu" else 2048)


def _static_config(T_range, n_save, n_extra, g_star, rtol, atol, max_steps, solver):
  T0, T1 = (float(t) for t in T_range)
  if not (T1 > T0 > 0):
    raise ValueError(f"T_range must satisfy 0 < T0 < T_max, got {T_range}")
  if solver not in _SOLVERS:
    raise ValueError(f"solver must be one of {sorted(_SOLVERS)}, got {solver!r}")
  thermal.make_g_star(g_star)  # validates
  return dict(T0=T0, T1=T1, n_save=int(n_save), n_extra=int(n_extra),
              g_star=g_star if isinstance(g_star, str) else float(g_star), rtol=float(rtol),
              atol=float(atol), max_steps=int(max_steps), solver=solver)


_SOLVERS = {"dopri8": diffrax.Dopri8, "tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}
_STATIC = ("T0", "T1", "n_save", "n_extra", "g_star", "rtol", "atol", "max_steps", "solver")


def _integrate_core(ic, params, *, T0, T1, n_save, n_extra, g_star, rtol, atol, max_steps,
                    solver):
  g_fn = thermal.make_g_star(g_star)
  s_max = float(np.log(T1 / T0))
  lam = jnp.asarray(params.gamma, dtype=float)
  sigma_max = sigma_max_for(lam, s_max)
  s_grid, knots = clock_knots(s_max, sigma_max, n_save, n_extra)
  args = (jnp.asarray(ic.sign_u, dtype=float), lam, float(np.log(T0)), g_fn, s_max)
  # One array, not a tuple of scalars: the solver's per-step bookkeeping (stages, error norm,
  # dense-output writes) is a handful of ops on it instead of one set per leaf.
  y0 = jnp.stack([jnp.asarray(ic.x0, dtype=float), jnp.asarray(ic.log_abs_u0, dtype=float),
                  jnp.asarray(ic.phi0, dtype=float), jnp.zeros(())])
  # One solve over the whole clock range read through its dense output: SaveAt(ts=knots)
  # runs an inner loop per knot and per-knot restarts clip ~400 extra steps, both several
  # times slower. ForwardMode uses plain lax while-loops (no checkpointing bookkeeping).
  sol = diffrax.diffeqsolve(diffrax.ODETerm(_sigma_field), _SOLVERS[solver](), t0=0.0,
                            t1=knots[-1], dt0=None, y0=y0, args=args,
                            saveat=diffrax.SaveAt(dense=True),
                            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                            max_steps=max_steps, adjoint=diffrax.ForwardMode(), throw=False)
  ys = jax.vmap(sol.evaluate)(knots)
  states = ys[:, :3]
  s_knots = ys[:, 3]
  ok = (sol.result == diffrax.RESULTS.successful) & (s_knots[-1] >= s_max)
  return _resample(states, s_knots, s_grid, args, ic.sign_u, lam, float(np.log(T0)), ok)


def _resample(states, s_knots, s_grid, args, sign_u, lam, ln_T0, ok):
  slopes = jax.vmap(lambda st, s: _state_derivative_in_s((*st, s), args))(states, s_knots)
  x, log_abs_u, phi = hermite_resample(s_knots, states, slopes, s_grid).T
  _, _, eps = equations.log_chart_flow(x, log_abs_u, sign_u, lam)
  u = sign_u * jnp.exp(log_abs_u)
  return Solution(ln_T=ln_T0 + s_grid, x=x, log_abs_u=log_abs_u,
                  sign_u=jnp.broadcast_to(sign_u, x.shape), phi=phi, w=-1.0 - 2.0 / 3.0 * eps,
                  omega_r=equations.omega_r(x, u), gamma=jnp.broadcast_to(lam, x.shape), ok=ok)


_integrate_jit = jax.jit(_integrate_core, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "chunk"))
def _integrate_batch_jit(ic, params, *, chunk, **static):
  order = expected_stiffness_order(ic, params)
  inverse = jnp.argsort(order)
  ic, params = jax.tree.map(lambda a: jnp.asarray(a)[order], (ic, params))
  sol = jax.lax.map(lambda a: _integrate_core(*a, **static), (ic, params), batch_size=chunk)
  return jax.tree.map(lambda a: a[inverse], sol)


@float64
def integrate_scipy(ic: InitialCondition, params: Params, T_range, *, n_save: int = 256,
                    n_extra: int = 128, rtol: float = 1e-10, atol: float = 1e-12,
                    method: str = "LSODA") -> Solution:
  """The same regularised flow with ``scipy.integrate.solve_ivp`` (scalar Python RHS, g_* const).

  An independent reference for tests and the benchmark: same clock, same knots, same
  resampling (in numpy); one trajectory per call.
  """
  from scipy.integrate import solve_ivp
  static = _static_config(T_range, n_save, n_extra, 10.75, rtol, atol, 1, "tsit5")
  T0, T1 = static["T0"], static["T1"]
  s_max = math.log(T1 / T0)
  sign_u, lam = float(ic.sign_u), float(params.gamma)
  sigma_max = float(sigma_max_for(lam, s_max))
  s_grid, knots = clock_knots(s_max, sigma_max, n_save, n_extra, xp=np)
  rhs = functools.partial(_scalar_sigma_field, sign_u=sign_u, lam=lam, s_max=s_max)
  y0 = [float(ic.x0), float(ic.log_abs_u0), float(ic.phi0), 0.0]
  out = solve_ivp(rhs, (0.0, sigma_max), y0, method=method, rtol=rtol, atol=atol, t_eval=knots)
  ok = out.status == 0 and out.y.shape[1] == knots.size and out.y[3, -1] >= s_max
  ys = out.y if out.y.shape[1] == knots.size else np.full((4, knots.size), np.nan)
  states, s_knots = ys[:3].T, ys[3]
  dx, dlog, _ = equations.log_chart_flow(states[:, 0], states[:, 1], sign_u, lam, xp=np)
  slopes = -np.stack([dx, dlog, equations.SQRT6 * states[:, 0]], axis=-1)   # dN/ds = -1
  x, log_abs_u, phi = hermite_resample(s_knots, states, slopes, s_grid, xp=np).T
  _, _, eps = equations.log_chart_flow(x, log_abs_u, sign_u, lam, xp=np)
  ones = np.ones_like(x)
  return Solution(ln_T=math.log(T0) + s_grid, x=x, log_abs_u=log_abs_u, sign_u=sign_u * ones,
                  phi=phi, w=-1.0 - 2.0 / 3.0 * eps,
                  omega_r=equations.omega_r(x, sign_u * np.exp(log_abs_u)), gamma=lam * ones,
                  ok=np.asarray(ok))


def _scalar_sigma_field(_, z, sign_u, lam, s_max):
  """:func:`_sigma_field` for constant g_* in plain Python floats (scipy's per-call RHS)."""
  x, log_abs_u, _, s = z
  if log_abs_u <= 0.0:
    u = sign_u * math.exp(log_abs_u)
    d = 2.0 + 2.0 * _S6 * u * x + 3.0 * u * u
    dx = (2.0 * x ** 3 - 2.0 * x - _S6 * u - 7.0 * _S6 * u * x * x + 6.0 * lam * u * x ** 3
          - 3.0 * _S6 * lam * u * u * x * x) / d
    dlog = -(8.0 + 4.0 * x * x + 6.0 * u * u - 2.0 * _S6 * lam * x
             - 3.0 * _S6 * lam * u * u * x) / d
  else:
    r = sign_u * math.exp(-log_abs_u)
    d = 3.0 + 2.0 * _S6 * x * r + 2.0 * r * r
    dx = (-3.0 * _S6 * lam * x * x + r * (6.0 * lam * x ** 3 - 7.0 * _S6 * x * x - _S6)
          + r * r * (2.0 * x ** 3 - 2.0 * x)) / d
    dlog = -(6.0 - 3.0 * _S6 * lam * x + r * r * (8.0 + 4.0 * x * x - 2.0 * _S6 * lam * x)) / d
  gate = min(max((s_max + _GATE_WIDTH - s) / _GATE_WIDTH, 0.0), 1.0)
  rate = -gate / max(1.0, abs(x) / X_SCALE)          # dN/dσ with dN/ds = -1
  return [dx * rate, dlog * rate, _S6 * x * rate, -rate]


_S6 = math.sqrt(6.0)


# ---- path classification ------------------------------------------------------------

ATTRACTOR_NAMES = ("w=-1/3", "kination", "scaling")


def high_temperature_attractors(gamma, sign_u) -> set[str]:
  """The attractors towards high T on the side ``sign(u) = sign_u`` (see fixed_points)."""
  side = sign_u * np.sign(gamma)
  out = set()
  if side < 0:
    out.add("w=-1/3")
  if gamma ** 2 > 6:
    out.add("kination")
  elif side > 0 and gamma != 0:
    out.add("scaling")
  return out


def _fixed_w_values(gamma, sign_u) -> dict[str, float]:
  """``w`` of the critical points a flow can shadow on the side ``sign(u) = sign_u``.

  The scaling solution counts only on its own side of ``u = 0`` (``u`` keeps its sign).
  """
  candidates = {"w=-1/3": -1.0 / 3.0, "radiation": 1.0 / 3.0, "kination": 1.0}
  x_s = scaling_x(gamma)
  if np.isfinite(x_s) and np.sign(x_s ** 2 - 1) * np.sign(x_s) == sign_u:
    candidates["scaling"] = scaling_w(gamma)
  return candidates


def _nearest_fixed_w(w, gamma, sign_u, tol):
  """Name of the fixed point whose ``w`` is within ``tol`` of ``w`` (or None)."""
  name, value = min(_fixed_w_values(gamma, sign_u).items(), key=lambda kv: abs(kv[1] - w))
  return name if abs(value - w) < tol else None


@float64
def classify_path(solution: Solution, *, tol: float = 0.02, min_plateau_efolds: float = 1.5
                  ) -> dict:
  """Final attractor and meta-stable plateaus of one trajectory (numpy, on the host).

  A plateau is a run of at least ``min_plateau_efolds`` in ``ln T`` where ``w`` stays within
  ``tol`` of one value; the last run that reaches ``T_max`` is the attractor (named by the
  fixed point with that ``w``, or ``"unsettled"``). Earlier plateaus at the ``w`` of a critical
  point, other than the initial radiation era, are listed in ``plateaus``.

  arXiv:2405.15998 (abstract) calls five of its eight paths a *swift* transition to the
  attractor and three *convoluted*: the system "follows a meta-stable equation of state at
  intermediate temperatures before eventually jumping to the real attractor". We make that
  precise as: a plateau is ``metastable`` when its ``w`` lies outside the interval between
  radiation's ``w = 1/3`` and the attractor's ``w`` (by more than ``tol``), i.e. ``w(T)`` must
  turn back to reach the attractor; a plateau on the way (kination's ``w = 1`` between 1/3 and
  a scaling ``w_s > 1``) only delays a monotone, swift transition. ``swift`` is True when no
  plateau is meta-stable. Returns ``{"final", "plateaus", "metastable", "swift", "path",
  "w_final"}`` where ``path`` is e.g. ``"RD -> kination -> w=-1/3"``.
  """
  ln_T = np.asarray(solution.ln_T, dtype=float)
  w = np.asarray(solution.w, dtype=float)
  gamma = float(np.asarray(solution.gamma).reshape(-1)[0])
  sign_u = float(np.asarray(solution.sign_u).reshape(-1)[0])
  if not bool(np.asarray(solution.ok).all()) or not np.all(np.isfinite(w)):
    return {"final": "failed", "plateaus": [], "metastable": [], "swift": False, "path": "failed",
            "w_final": float("nan")}
  runs = _plateaus(ln_T, w, tol, min_plateau_efolds)
  final = "unsettled"
  if runs and runs[-1][1] == len(w) - 1:
    final = _nearest_fixed_w(runs[-1][2], gamma, sign_u, 2 * tol) or "unsettled"
    if final not in high_temperature_attractors(gamma, sign_u):
      final = "unsettled"     # e.g. still creeping along a saddle at T_max
    runs = runs[:-1]
  names = []
  for start, _, value in runs:
    # a meta-stable era shadows a critical point; slow drifts elsewhere are not plateaus
    name = _nearest_fixed_w(value, gamma, sign_u, 2 * tol)
    if name is None or (start == 0 and name == "radiation"):
      continue
    if not names or names[-1] != name:
      names.append(name)
  if names and names[-1] == final:
    names = names[:-1]
  values = _fixed_w_values(gamma, sign_u)
  w_end = values.get(final, float(w[-1]))
  lo, hi = min(1.0 / 3.0, w_end) - tol, max(1.0 / 3.0, w_end) + tol
  metastable = [name for name in names if not lo <= values[name] <= hi]
  return {"final": final, "plateaus": names, "metastable": metastable, "swift": not metastable,
          "path": " -> ".join(["RD", *names, final]), "w_final": float(w[-1])}


def _plateaus(ln_T, w, tol, min_len):
  """Maximal runs ``(start, end, median w)`` with ``max - min ≤ 2 tol`` and length ≥ min_len."""
  runs, start = [], 0
  n = len(w)
  while start < n:
    end, lo, hi = start, w[start], w[start]
    while end + 1 < n and max(hi, w[end + 1]) - min(lo, w[end + 1]) <= 2 * tol:
      end += 1
      lo, hi = min(lo, w[end]), max(hi, w[end])
    if ln_T[end] - ln_T[start] >= min_len:
      runs.append((start, end, float(np.median(w[start:end + 1]))))
      start = end + 1
    else:
      start += 1
  return runs


def unstack(solution: Solution, i: int) -> Solution:
  """The ``i``-th trajectory of a batched :class:`Solution`."""
  return Solution(*[np.asarray(leaf)[i] for leaf in solution])
