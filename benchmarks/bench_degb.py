"""dEGB flows: 10,000 vmapped diffrax trajectories vs a scipy ``solve_ivp`` (LSODA) loop.

arXiv:2405.15998: the path classification integrates many histories from radiation
domination at T0 = 1 MeV to 10¹⁶ GeV. Both solvers integrate the same regularised ODE
(:mod:`cosmo.degb.flows`) from the same initial conditions with the same rtol/atol, knots
and resampling; we report the max deviation of final states and of w(T), path agreement,
and the wall-time ratio (diffrax timed after compilation, median of repeats; the scipy loop
timed once, after one warm-up trajectory). ``--quick`` runs 400 trajectories.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main, doc_summary, time_fn
from jaxrepro.progress import progress
from cosmo.degb.precision import float64

T_RANGE = (1e-3, 1e16)
RTOL, ATOL = 1e-9, 1e-11
MAX_STEPS = 1024   # sizes the dense-output buffer; Dopri8 needs at most 525 steps on these ICs


def sample_initial_conditions(n: int, seed: int = 0):
  """γ ∈ [0.1, 5] log-uniform, sign α = ±1, |α| ∈ [1e-2, 1e2] km², x0 = ±10^U(-8,-1)."""
  import jax.numpy as jnp
  from cosmo.degb import initial_condition, thermal
  rng = np.random.default_rng(seed)
  gamma = np.exp(rng.uniform(np.log(0.1), np.log(5.0), n))
  alpha = rng.choice([-1.0, 1.0], n) * thermal.km2_to_gev_inv2(10 ** rng.uniform(-2, 2, n))
  x0 = rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-8, -1, n)
  ic = initial_condition(jnp.asarray(alpha), jnp.asarray(gamma), T_RANGE[0], jnp.asarray(x0), 0.0, 10.75)
  return ic, gamma


@benchmark("degb")
@float64
def run(quick: bool, out_dir: Path) -> Report:
  import jax
  import jax.numpy as jnp
  from cosmo.degb import Params, classify_path, integrate_batch
  from cosmo.degb.flows import InitialCondition, default_chunk_size, integrate_scipy, unstack
  n = 400 if quick else 10_000
  n_save = 256
  ic, gamma = sample_initial_conditions(n)
  params = Params(jnp.asarray(gamma))

  def run_diffrax():
    return integrate_batch(ic, params, T_RANGE, n_save=n_save, g_star=10.75, rtol=RTOL, atol=ATOL,
                           max_steps=MAX_STEPS)

  start = time.perf_counter()
  sol = jax.block_until_ready(run_diffrax())     # compiles; its output is the one compared
  first_call = time.perf_counter() - start
  sol = jax.tree.map(np.asarray, sol)
  t_diffrax = time_fn(run_diffrax, warmup=0, repeats=1 if not quick else 3)

  def one(i):
    return integrate_scipy(InitialCondition(*(np.asarray(a)[i] for a in ic)), Params(gamma[i]),
                           T_RANGE, n_save=n_save, rtol=RTOL, atol=ATOL)
  one(0)  # warm-up (imports, first-call overheads)
  start = time.perf_counter()
  refs = [one(i) for i in progress(range(n), total=n, desc="scipy LSODA loop")]
  t_scipy = time.perf_counter() - start

  ok = sol.ok & np.array([bool(r.ok) for r in refs])
  w_ref = np.stack([r.w for r in refs])
  dw_all = np.abs(sol.w - w_ref)[ok]
  # Inside a jump w itself reaches ~1e17 for one grid point; compare where both |w| <= 3.
  inside = (np.abs(sol.w) <= 3) & (np.abs(w_ref) <= 3)
  dw = np.abs(sol.w - w_ref)[ok[:, None] & inside]
  final_x = np.abs(sol.x[:, -1] - np.array([r.x[-1] for r in refs]))[ok]
  final_logu = np.abs(sol.log_abs_u[:, -1] - np.array([r.log_abs_u[-1] for r in refs]))[ok]
  paths = np.array([classify_path(unstack(sol, i))["path"] == classify_path(refs[i])["path"]
                    for i in range(n)])
  per_traj_dfx = t_diffrax.median / n
  per_traj_sp = t_scipy / n
  report = Report(
      name="degb", command=f"python -m benchmarks.bench_degb{' --quick' if quick else ''}",
      config={"trajectories": n, "T_range_GeV": list(T_RANGE), "rtol": RTOL, "atol": ATOL,
              "n_save": n_save,
              "diffrax_solver": "Dopri8 + PID, dense output, float64, vmapped in chunks "
                                "sorted by expected stiffness",
              "diffrax_chunk_size": default_chunk_size(n), "diffrax_max_steps": MAX_STEPS,
              "backend": jax.default_backend(),
              "scipy_solver": "solve_ivp LSODA, scalar-float RHS, Python loop",
              "same_trajectories": True},
      data="none (sampled initial conditions, seed 0)",
      metrics={"speedup_scipy_over_diffrax": t_scipy / t_diffrax.median,
               "target_speedup": 20.0,
               "max_abs_dev_w_where_abs_w_le_3": float(dw.max()),
               "p99_abs_dev_w_where_abs_w_le_3": float(np.percentile(dw, 99)),
               "median_abs_dev_w": float(np.median(dw)),
               "fraction_of_w_samples_with_abs_w_gt_3": float(1 - inside[ok].mean()),
               "max_abs_dev_w_all_samples": float(dw_all.max()),
               "max_abs_dev_final_x": float(final_x.max()),
               "max_abs_dev_final_log_abs_u": float(final_logu.max()),
               "path_agreement": float(paths.mean()),
               "n_ok_both": int(ok.sum()), "n_diffrax_failed": int((~sol.ok).sum()),
               "n_scipy_failed": int(sum(not bool(r.ok) for r in refs))},
      timings={"diffrax_batch_s": t_diffrax.as_dict(), "diffrax_first_call_incl_compile_s": first_call,
               "scipy_loop_s": t_scipy, "diffrax_per_trajectory_s": per_traj_dfx,
               "scipy_per_trajectory_s": per_traj_sp},
      notes=["both solvers integrate the same trajectories with the same tolerances in one process",
             "timings on a shared 2-core CPU (other jobs running); the ratio is measured side by side",
             "w deviations concentrate at jumps between attractors, where |x| passes 1e12 within "
             "d lnT ~ 1e-12 and w reaches ~1e17 on the grid point inside the jump; "
             "max_abs_dev_w_all_samples includes those points"])
  return report


if __name__ == "__main__":
  benchmark_main(run, doc_summary(__doc__))
