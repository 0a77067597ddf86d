"""``jaxrepro cosmo degb fixed-points|paths|bbn`` (arXiv:2405.15998)."""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from jaxrepro.cli import add_common_args
from cosmo.degb.precision import float64

T0_GEV = 1e-3          # boundary condition: standard radiation domination at BBN
ALPHA_KM2 = 1.0        # |α| of the path scan (GW170817-sized coupling)
# |α| of the BBN scan: up to where the w = -1/3 era starts at a few MeV (u0 ~ 1e-3 at T0), the
# largest couplings that leave BBN in radiation domination; the T_RH bound grows as T_*^{1/2}.
ALPHA_RANGE_KM2 = (1e-4, 1e8)


def register(cosmo_subparsers: argparse._SubParsersAction) -> None:
  """Adds ``degb`` and its subcommands under ``jaxrepro cosmo``."""
  degb = cosmo_subparsers.add_parser(
      "degb", help="dilaton-Einstein-Gauss-Bonnet cosmology at high T (arXiv:2405.15998)")
  sub = degb.add_subparsers(dest="degb_command", metavar="COMMAND", required=True)

  fp = sub.add_parser("fixed-points", help="critical points, eigenvalues and stability")
  fp.add_argument("--gamma", type=float, default=1.0, help="coupling exponent γ of f = α e^{γφ}")
  add_common_args(fp, data_help="unused (no input data)")
  fp.set_defaults(func=float64(_cmd_fixed_points))

  paths = sub.add_parser("paths", help="flow many histories to high T, classify into paths")
  paths.add_argument("--grid", type=int, default=24, help="grid points per axis (γ and x0)")
  paths.add_argument("--t-max", type=float, default=1e16, help="highest temperature, GeV")
  paths.add_argument("--g-star", default="sm", help="constant g_* or 'sm' (default)")
  add_common_args(paths, data_help="unused (no input data)")
  paths.set_defaults(func=float64(_cmd_paths))

  bbn = sub.add_parser("bbn", help="GW enhancement and the BBN upper bound on T_RH")
  bbn.add_argument("--grid", type=int, default=12, help="grid points per axis (γ and |α|)")
  bbn.add_argument("--t-max", type=float, default=1e16, help="highest temperature, GeV")
  bbn.add_argument("--delta-neff", type=float, default=0.3, help="BBN bound on ΔN_eff")
  bbn.add_argument("--alpha-range", type=float, nargs=2, default=ALPHA_RANGE_KM2,
                   metavar=("LO", "HI"), help="|α| range in km² (log grid)")
  bbn.add_argument("--g-star", default="sm", help="constant g_* or 'sm' (default)")
  add_common_args(bbn, data_help="unused (no input data)")
  bbn.set_defaults(func=float64(_cmd_bbn))


def _g_star(value):
  if value == "sm":
    return "sm"
  try:
    return float(value)
  except ValueError:
    raise ValueError(f"--g-star must be a number or 'sm', got {value!r}") from None


def _finish(report, args, out_files=()):
  if args.out:
    report.write(args.out)
  if args.json:
    report.write_json(args.json)
  print(report.markdown())
  for f in out_files:
    print(f"wrote {f}")
  return 0


def _cmd_fixed_points(args) -> int:
  from jaxrepro.bench import Report
  from cosmo.degb import fixed_points, stability
  from cosmo.degb.fixed_points import residual
  points = []
  for p in fixed_points(args.gamma):
    st = stability(p, args.gamma)
    points.append({"name": p.name, "x": p.x, "u": str(p.u) if np.isinf(p.u) else p.u,
                   "w": p.w, "omega_r": str(p.omega_r) if np.isinf(p.omega_r) else p.omega_r,
                   "eigenvalues_towards_high_T": [complex(e).real for e in st["eigenvalues"]],
                   "kind": st["kind"], "note": st["note"], "residual": residual(p, args.gamma)})
  report = Report(name="degb_fixed_points", command=f"jaxrepro cosmo degb fixed-points --gamma {args.gamma}",
                  config={"gamma": args.gamma}, data="none (analytic)",
                  metrics={"points": points,
                           "attractors": [p["name"] for p in points if p["kind"] == "attractor"]})
  files = []
  if args.out:
    from cosmo.degb import plots
    files.append(plots.phase_portrait(args.gamma, Path(args.out) / f"phase_portrait_gamma{args.gamma:g}.png"))
  return _finish(report, args, files)


def path_scan(grid: int, t_max: float, g_star, *, alpha_km2: float = ALPHA_KM2, n_save: int = 256):
  """Integrates the (sign α) × γ × x0 grid; returns the parameter arrays, solution, labels."""
  import jax.numpy as jnp
  from cosmo.degb import Params, classify_path, initial_condition, integrate_batch, thermal
  from cosmo.degb.flows import unstack
  if grid < 2:
    raise ValueError(f"--grid must be at least 2, got {grid}")
  gammas = np.geomspace(0.1, 5.0, grid)
  x_mag = np.geomspace(1e-8, 1e-1, max(grid // 2, 1))
  x0s = np.concatenate([-x_mag[::-1], [0.0], x_mag])
  sign, gamma, x0 = (a.ravel() for a in np.meshgrid([1.0, -1.0], gammas, x0s, indexing="ij"))
  alpha = sign * thermal.km2_to_gev_inv2(alpha_km2)
  ic = initial_condition(jnp.asarray(alpha), jnp.asarray(gamma), T0_GEV, jnp.asarray(x0), 0.0, g_star)
  sol = integrate_batch(ic, Params(jnp.asarray(gamma)), (T0_GEV, t_max), n_save=n_save,
                        g_star=g_star, rtol=1e-9, atol=1e-11)
  labels = [classify_path(unstack(sol, i)) for i in range(gamma.size)]
  return {"sign_alpha": sign, "gamma": gamma, "x0": x0, "x0_axis": x0s, "gamma_axis": gammas}, sol, labels


def _cmd_paths(args) -> int:
  from jaxrepro.bench import Report
  from cosmo.degb import plots
  grid = 8 if args.quick else args.grid
  g_star = _g_star(args.g_star)
  start = time.perf_counter()
  params, sol, labels = path_scan(grid, args.t_max, g_star)
  elapsed = time.perf_counter() - start
  keyed = [f"alpha{'>' if s > 0 else '<'}0: {lab['path']}" for s, lab in zip(params["sign_alpha"], labels)]
  counts = collections.Counter(keyed)
  # α's sign splits the phase plane (u never changes sign): a path is (sign α, sequence).
  settled = {k: lab for k, lab in zip(keyed, labels) if lab["final"] not in ("failed", "unsettled")}
  distinct = sorted(settled)
  # swift vs meta-stable: see classify_path (a plateau the flow must turn back from); the
  # plain count of histories with any intermediate plateau is reported alongside.
  swift = [p for p in distinct if settled[p]["swift"]]
  metastable = [p for p in distinct if not settled[p]["swift"]]
  with_plateau = [p for p in distinct if settled[p]["plateaus"]]
  report = Report(
      name="degb_paths", command=f"jaxrepro cosmo degb paths --grid {grid} --t-max {args.t_max:g}",
      config={"grid": grid, "T0_GeV": T0_GEV, "T_max_GeV": args.t_max, "alpha_km2": ALPHA_KM2,
              "g_star": g_star, "trajectories": len(labels)},
      data="none (flows from radiation domination at T0)",
      metrics={"counts_by_sign_alpha_and_path": dict(sorted(counts.items())),
               "distinct_paths": distinct, "n_distinct_paths": len(distinct),
               "n_swift": len(swift), "n_metastable": len(metastable),
               "swift_paths": swift, "metastable_paths": metastable,
               "n_with_any_intermediate_plateau": len(with_plateau),
               "n_failed": sum(lab["final"] == "failed" for lab in labels),
               "n_unsettled": sum(lab["final"] == "unsettled" for lab in labels),
               "paper_claim": "8 paths: 5 swift, 3 with a meta-stable w"},
      timings={"integrate_and_classify_s": elapsed})
  files = []
  if args.out:
    out = Path(args.out)
    files += [plots.path_map(params, labels, out / "path_map.png"),
              plots.w_curves(sol, labels, out / "w_of_T.png"),
              plots.phase_portrait(1.0, out / "phase_portrait_gamma1.png"),
              plots.phase_portrait(3.0, out / "phase_portrait_gamma3.png")]
  return _finish(report, args, files)


def bbn_scan(grid: int, t_max: float, g_star, delta_neff: float, n_save: int = 400,
             alpha_range_km2=ALPHA_RANGE_KM2):
  """T_RH bound over γ × |α| for both signs of α (x0 = 0)."""
  import jax.numpy as jnp
  from cosmo.degb import Params, bbn_bound_TRH, classify_path, initial_condition, integrate_batch, thermal
  from cosmo.degb.flows import unstack
  if grid < 2:
    raise ValueError(f"--grid must be at least 2, got {grid}")
  gammas = np.geomspace(0.1, 5.0, grid)
  lo, hi = (float(a) for a in alpha_range_km2)
  if not 0 < lo < hi:
    raise ValueError(f"--alpha-range must satisfy 0 < LO < HI, got {lo} {hi}")
  alphas_km2 = np.geomspace(lo, hi, grid)
  sign, gamma, a_km2 = (a.ravel() for a in np.meshgrid([-1.0, 1.0], gammas, alphas_km2, indexing="ij"))
  alpha = sign * thermal.km2_to_gev_inv2(a_km2)
  ic = initial_condition(jnp.asarray(alpha), jnp.asarray(gamma), T0_GEV, 0.0, 0.0, g_star)
  sol = integrate_batch(ic, Params(jnp.asarray(gamma)), (T0_GEV, t_max), n_save=n_save,
                        g_star=g_star, rtol=1e-9, atol=1e-11)
  rows = []
  for i in range(gamma.size):
    s = unstack(sol, i)
    bound = bbn_bound_TRH(s, delta_neff_max=delta_neff, g_star=g_star)
    rows.append({"sign_alpha": sign[i], "gamma": gamma[i], "alpha_km2": a_km2[i],
                 "final": classify_path(s)["final"], **bound})
  return gammas, alphas_km2, rows


def _cmd_bbn(args) -> int:
  from jaxrepro.bench import Report
  from cosmo.degb import plots
  grid = 5 if args.quick else args.grid
  g_star = _g_star(args.g_star)
  if not args.delta_neff > 0:
    raise ValueError(f"--delta-neff must be positive, got {args.delta_neff}")
  start = time.perf_counter()
  gammas, alphas, rows = bbn_scan(grid, args.t_max, g_star, args.delta_neff,
                                  alpha_range_km2=args.alpha_range)
  elapsed = time.perf_counter() - start
  minus_third = [r for r in rows if r["final"] == "w=-1/3" and r["bounded"]]
  bounds = np.array([r["T_RH_max"] for r in minus_third])
  metrics = {"n_points": len(rows), "n_w_minus_third_bounded": len(minus_third),
             "n_bounded_other": sum(r["bounded"] and r["final"] != "w=-1/3" for r in rows),
             "paper_claim": "T_RH <~ 1e8-1e9 GeV in the w=-1/3 region", "rows": rows}
  if bounds.size:
    metrics.update(T_RH_bound_min_GeV=float(bounds.min()), T_RH_bound_median_GeV=float(np.median(bounds)),
                   T_RH_bound_max_GeV=float(bounds.max()))
  report = Report(name="degb_bbn", command=f"jaxrepro cosmo degb bbn --grid {grid} --delta-neff {args.delta_neff}",
                  config={"grid": grid, "T0_GeV": T0_GEV, "T_max_GeV": args.t_max, "g_star": g_star,
                          "delta_neff_max": args.delta_neff, "x0": 0.0,
                          "alpha_range_km2": list(args.alpha_range)},
                  data="none (flows from radiation domination at T0)", metrics=metrics,
                  timings={"integrate_and_bound_s": elapsed})
  files = []
  if args.out:
    files.append(plots.bbn_bounds(gammas, alphas, rows, args.t_max, Path(args.out) / "bbn_T_RH_bound.png"))
  return _finish(report, args, files)
