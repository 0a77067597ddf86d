"""Benchmark ``cosmo_omegam``: profile likelihoods of Omega_m in QSO and GRB data (arXiv 2405.19953).

1. A 200-point Omega_m profile of the full quasar sample: the jitted, vmapped pipeline
   against a numpy + ``scipy.optimize.minimize`` loop over the grid (same likelihood, written
   here; distances by ``scipy.integrate.cumulative_trapezoid``), in the same process:
   max |Delta chi^2| difference and the wall-time ratio (target >= 10x, < 0.01).
2. NUTS effective samples per second against ``emcee`` on the same GRB posterior (the full
   run adds the QSO posterior; the NumPyro model's potential, jitted and vmapped over
   walkers for emcee), same process, measured the same way for both (see
   ``_nuts_vs_emcee``; target >= 3x).
3. DESI DR2 BAO alone as a low-redshift cross-check, against the published fit.
4. The tension figures: full QSO and GRB samples (Delta chi^2 and profile distribution,
   Omega_m <= 2 and <= 10) with a mock calibration, and the z_min sweeps, against the
   paper's 7.9 sigma (QSO) and 3.9 sigma (GRB).

Run: ``python -m benchmarks.bench_cosmo [--quick]`` or ``jaxrepro bench cosmo_omegam``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, optimize

from jaxrepro.bench import Report, benchmark, benchmark_main, doc_summary, time_fn

PAPER_SIGMA = {"qso": 7.9, "grb": 3.9}
SWEEPS = {"qso": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "grb": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]}


def _reference_profile(cat, grid):
  """numpy + scipy.optimize.minimize over the grid, warm-started from the previous point."""
  z_fine = np.linspace(0.0, cat.z.max(), 4001)
  log4pi, mpc_cm = np.log10(4 * np.pi), 3.0856775814913673e24

  def log_dl(omega_m):
    dc = integrate.cumulative_trapezoid(1 / np.sqrt(omega_m * (1 + z_fine) ** 3 + 1 - omega_m),
                                        z_fine, initial=0.0)
    return np.log10((1 + cat.z) * np.interp(cat.z, z_fine, dc) * 299792.458 / 70.0 * mpc_cm)

  def chi2(nu, log_d):
    beta_pivot, gamma, ln_delta = nu
    model = beta_pivot - 30.5 * gamma + gamma * cat.x + (gamma - 1) * (log4pi + 2 * log_d)
    var = cat.sigma_y ** 2 + gamma ** 2 * cat.sigma_x ** 2 + np.exp(2 * ln_delta)
    return np.sum((cat.y - model) ** 2 / var + np.log(2 * np.pi * var))

  x, values = np.array([26.5, 0.6, -1.5]), []
  for omega_m in grid:
    result = optimize.minimize(chi2, x, args=(log_dl(omega_m),), method="BFGS")
    x = result.x
    values.append(result.fun)
  return np.array(values)


def _profile_speed(cat, quick):
  from cosmo.likelihoods import get_probe
  from cosmo.profile import profile_likelihood
  probe, grid = get_probe("qso"), np.linspace(0.0, 2.0, 200)
  ours = time_fn(profile_likelihood, probe, cat, grid, repeats=3 if quick else 5)
  chi2 = np.asarray(profile_likelihood(probe, cat, grid).chi2)
  start = time.perf_counter()
  ref = _reference_profile(cat, grid)
  ref_seconds = time.perf_counter() - start
  delta, delta_ref = chi2 - chi2.min(), ref - ref.min()
  return {"grid_points": 200, "n_objects": int(cat.z.size),
          "max_abs_delta_chi2_difference": float(np.max(np.abs(delta - delta_ref))),
          "max_abs_chi2_difference": float(np.max(np.abs(chi2 - ref))),
          "ours_below_scipy_everywhere": bool(np.all(chi2 <= ref + 1e-6)),
          "speedup": ref_seconds / ours.median}, {
          "profile_jax_s": ours.as_dict(), "profile_scipy_s": ref_seconds}


def _nuts_sampler(model, args, laplace, chains, warmup, draws, seed, vectorized=False):
  """NUTS as ``cosmo.bayes.run_nuts`` runs it (dense mass adapted in coordinates whitened
  by the Laplace covariance, every chain from the mode, warm-up then draws), written as one
  jitted ``lax.scan`` over numpyro's NUTS kernel so that one compilation serves repeated,
  timed runs (``MCMC.run`` re-traces its loop on every call). Chains run one after another
  (``lax.map``) or, ``vectorized``, in lockstep (``vmap``, numpyro's
  ``chain_method="vectorized"``). Returns () -> (constrained draws {site: (chains, warmup +
  draws)}, leapfrog steps per iteration (chains, warmup + draws))."""
  from numpyro.infer.util import constrain_fn

  from cosmo.bayes import nuts_kernel, whiten
  whitened = whiten(laplace)
  kernel = nuts_kernel(whitened)
  state = kernel.init(jax.random.key(seed), warmup,
                      jnp.zeros(whitened.dimension, next(iter(laplace.mode.values())).dtype))
  state = jax.vmap(lambda k: state._replace(rng_key=k))(jax.random.split(state.rng_key, chains))

  def chain(state):
    def step(s, _):
      s = kernel.sample(s, (), {})
      draw = constrain_fn(model, args, {}, whitened.to_unconstrained(s.z),
                          return_deterministic=True)
      return s, ({k: v[0] for k, v in draw.items()}, s.num_steps)
    return jax.lax.scan(step, state, None, length=warmup + draws)[1]

  run = jax.jit(lambda s: jax.vmap(chain)(s) if vectorized else jax.lax.map(chain, s))
  return lambda: jax.block_until_ready(run(state))


def _min_ess(draws):
  """numpyro's multi-chain ESS of each site ((chains, draws) arrays), and the minimum."""
  from numpyro.diagnostics import effective_sample_size
  ess = {k: float(effective_sample_size(np.asarray(v))) for k, v in draws.items()}
  return min(ess.values()), ess


def _nuts_run(model, args, laplace, chains, warmup, draws, seed, repeats, vectorized=False):
  start = time.perf_counter()
  sample = _nuts_sampler(model, args, laplace, chains, warmup, draws, seed, vectorized)
  constrained, steps = sample()
  first_s = time.perf_counter() - start  # tracing, compilation and one run
  timing = time_fn(sample, warmup=0, repeats=repeats)
  ess_min, ess = _min_ess({k: np.asarray(v)[:, warmup:] for k, v in constrained.items()})
  steps = np.asarray(steps)
  depth = np.ceil(np.log2(steps + 1))  # a tree of depth d takes up to 2^d - 1 leapfrog steps
  return {"chains": chains, "chain_method": "vectorized (vmap)" if vectorized
          else "sequential (lax.map)", "warmup": warmup, "draws": draws,
          "ess_min": ess_min, "ess": ess, "seconds": timing.median, "runs_s": timing.as_dict(),
          "seconds_first_run_including_compile": first_s, "ess_per_s": ess_min / timing.median,
          "leapfrog_steps_per_draw": float(steps[:, warmup:].mean()),
          "leapfrog_steps_per_warmup_iteration": float(steps[:, :warmup].mean()),
          "tree_depth_mean_draws": float(depth[:, warmup:].mean()),
          "tree_depth_max_draws": int(depth[:, warmup:].max()),
          "tree_depth_max_warmup": int(depth[:, :warmup].max()),
          "seconds_per_leapfrog_step": timing.median / float(steps.sum()),
          "median_omega_m": float(np.median(np.asarray(constrained["omega_m"])[:, warmup:]))}


def _emcee_run(model, args, laplace, walkers, burn, steps, seed, repeats):
  """emcee on numpyro's potential (same posterior, same unconstrained parameterization),
  jitted and vmapped over walkers (``vectorize=True``; compiled before timing), walkers
  drawn from the same Laplace approximation NUTS starts from."""
  import emcee
  from jax.flatten_util import ravel_pytree
  from numpyro.infer.util import constrain_fn
  flat_mode, unravel = ravel_pytree(laplace.mode)
  log_prob = jax.jit(jax.vmap(lambda v: -laplace.potential_fn(unravel(v))))
  constrain = jax.jit(jax.vmap(lambda v: {
      k: x[0] for k, x in
      constrain_fn(model, args, {}, unravel(v), return_deterministic=True).items()}))
  rng = np.random.default_rng(seed)
  p0 = np.asarray(flat_mode) + rng.standard_normal((walkers, flat_mode.size)) @ np.linalg.cholesky(
      laplace.covariance).T
  for batch in (walkers, walkers // 2):  # the stretch move calls it on half the ensemble
    log_prob(jnp.asarray(p0[:batch])).block_until_ready()  # compile outside the timing

  def sample():
    sampler = emcee.EnsembleSampler(walkers, flat_mode.size,
                                    lambda v: np.asarray(log_prob(jnp.asarray(v))), vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(p0, burn + steps)
    return sampler

  runs = []
  for _ in range(repeats):  # time_fn's loop, keeping the (seeded, identical) last run
    start = time.perf_counter()
    sampler = sample()
    runs.append(time.perf_counter() - start)
  seconds = float(np.median(runs))
  chain = sampler.get_chain(discard=burn)  # (steps, walkers, dim), unconstrained
  constrained = {k: np.asarray(v).reshape(steps, walkers).T for k, v in
                 constrain(jnp.asarray(chain.reshape(-1, flat_mode.size))).items()}
  ess_min, ess = _min_ess(constrained)  # walkers taken as chains, as arviz does
  tau = emcee.autocorr.integrated_time(chain, quiet=True)
  return {"walkers": walkers, "burn_in": burn, "steps": steps, "ess_min": ess_min, "ess": ess,
          "emcee_integrated_time_max": float(tau.max()),
          "emcee_ess_min": float(chain.shape[0] * walkers / tau.max()),
          "seconds": seconds, "runs_s": runs, "ess_per_s": ess_min / seconds,
          "log_prob_calls": 2 * (burn + steps),  # the stretch move updates half the walkers
          "acceptance": float(np.mean(sampler.acceptance_fraction)),
          "median_omega_m": float(np.median(constrained["omega_m"]))}


def _potential_cost(catalogues, repeats):
  """Median seconds of the NUTS potential's value and gradient (the whole-sample model), in
  float64 and float32 (data and parameters cast), and of the distances alone."""
  from jax.flatten_util import ravel_pytree
  from numpyro.infer.util import potential_energy

  from cosmo.bayes import centred_intercept_name, model_args, omegam_model
  from cosmo.catalogues import Catalogue
  from cosmo.distances import comoving_distance, interpolation_plan
  from cosmo.likelihoods import get_probe
  costs = {}
  for name, cat in catalogues.items():
    model = functools.partial(omegam_model, get_probe(name))
    for dtype in (np.float64, np.float32):
      args = model_args(Catalogue(*(np.asarray(a, dtype) for a in cat)))
      probe = get_probe(name)
      point = {k: jnp.full((1,), 0.1, dtype) for k in
               ("omega_m", centred_intercept_name(probe)) + probe.nuisance_names[1:]}
      flat, unravel = ravel_pytree(point)
      value_and_grad = jax.jit(jax.value_and_grad(
          lambda x: potential_energy(model, args, {}, unravel(x))))
      costs[f"{name}_value_and_grad_{np.dtype(dtype).name}_s"] = time_fn(
          value_and_grad, flat, repeats=repeats).median
    z = jnp.asarray(cat.z)
    plan = interpolation_plan(z)
    distance_grad = jax.jit(jax.value_and_grad(lambda om: comoving_distance(z, om, plan).sum()))
    costs[f"{name}_distances_value_and_grad_s"] = time_fn(distance_grad, 0.3,
                                                          repeats=repeats).median
  return costs


def _nuts_vs_emcee(probe_name, cat, *, warmup, draws, emcee_steps, walker_counts, repeats,
                   with_vectorized, omega_range=(0.0, 2.0), seed=0):
  """ESS per second of NUTS and emcee on one posterior, measured the same way for both:
  numpyro's effective_sample_size of every site's constrained draws (NUTS chains, emcee
  walkers as chains), the minimum over sites; time = warm-up / burn-in + sampling after
  compilation (median of repeated runs), with the same warm-up fraction for both."""
  from numpyro.infer.util import unconstrain_fn

  from cosmo.bayes import centred_init, laplace_approximation, model_args, omegam_model
  from cosmo.catalogues import Catalogue
  from cosmo.distances import log10_luminosity_distance_cm
  from cosmo.likelihoods import get_probe
  from cosmo.profile import minimize_nuisance

  probe = get_probe(probe_name)
  jcat = Catalogue(*map(jnp.asarray, cat))
  start_nu = minimize_nuisance(probe, jcat, jnp.ones_like(jcat.z),
                               log10_luminosity_distance_cm(jcat.z, 0.5)).x
  init = {"omega_m": 0.5, **dict(zip(probe.nuisance_names, np.asarray(start_nu).tolist()))}
  model = functools.partial(omegam_model, probe)
  args = model_args(cat, omega_range=omega_range)
  start = time.perf_counter()
  init = centred_init(probe, args, {k: jnp.asarray([v]) for k, v in init.items()})
  laplace = laplace_approximation(model, args, unconstrain_fn(model, args, {}, init))
  laplace_s = time.perf_counter() - start
  chains = 4
  nuts = _nuts_run(model, args, laplace, chains, warmup, draws, seed, repeats)
  burn = round(emcee_steps * warmup / draws)  # the same warm-up fraction as NUTS
  runs = [_emcee_run(model, args, laplace, w, burn, emcee_steps, seed, repeats)
          for w in walker_counts]
  best = max(runs, key=lambda r: r["ess_per_s"])
  result = {
      "posterior": f"{probe_name}, n={cat.z.size}: Omega_m ~ U{tuple(omega_range)}, "
                   "cosmo.bayes.PRIORS",
      "sites": list(laplace.sites),
      "laplace_seconds": laplace_s,
      "nuts": nuts, "emcee": best, "emcee_all_walker_counts": runs,
      "ess_per_s_ratio_nuts_over_emcee": nuts["ess_per_s"] / best["ess_per_s"]}
  if with_vectorized:  # numpyro's chain_method="vectorized" on one CPU, for the record
    result["nuts_vectorized_chains"] = _nuts_run(model, args, laplace, chains, warmup, draws,
                                                 seed, 1, vectorized=True)
  return result


def _tensions(probe_name, cat, data_desc, quick, out_dir, key):
  """Full-sample figures (first row of the z_min sweep, so one compiled profile serves both)
  for Omega_m <= 2 and <= 10 (the same grid size: the grid is an argument, not a constant)."""
  from cosmo import analysis, binning, plots
  from cosmo.likelihoods import get_probe
  probe = get_probe(probe_name)
  from cosmo.cli_omegam import describe_catalogue
  figures = {"catalogue": describe_catalogue(data_desc)}
  sweep = binning.redshift_cuts(cat.z, SWEEPS[probe_name])  # SWEEPS start at z_min = 0
  for high in (2.0, 10.0):
    config = analysis.OmegaMConfig(omega_max=high, grid_points=200 if quick or high == 2.0 else 400,
                                   n_mocks=100 if quick else 1000,
                                   mock_grid_points=41 if quick else 81)
    prof, rows = analysis.profile_subsamples(probe, cat, sweep, config)
    row = rows[0]
    figures[f"full_omega_max_{high:g}"] = {
        "grid_points": config.grid_points,
        "n": row["n"], "z_eff_mean": row["z_eff_mean"], "best_omega_m": row["best_omega_m"],
        "interval_delta_chi2_1": row["interval_delta_chi2_1"],
        "sigma_delta_chi2": row["sigma_at_planck"],
        "sigma_profile_distribution": row["profile_distribution"]["sigma_at_planck"],
        "paper_sigma": PAPER_SIGMA[probe_name]}
    if high == 2.0:
      result, stats = analysis.calibrate_subsamples(probe, cat, sweep[:1], config, key)[0]
      figures["full_omega_max_2"]["mocks"] = {k: result[k] for k in (
          "n_mocks", "observed_delta_chi2", "p_value", "p_value_is_upper_bound",
          "sigma_two_sided", "wilks_p_value", "mock_mean_delta_chi2")}
      plots.plot_mock_distributions([stats], [result["observed_delta_chi2"]], ["z>0"],
                                    out_dir / f"cosmo_omegam_mocks_{probe_name}.png")
      figures["sweep"] = [{k: r[k] for k in ("label", "n", "z_eff_mean", "z_eff_median",
                                             "best_omega_m", "interval_delta_chi2_1",
                                             "sigma_at_planck")}
                          | {"sigma_profile_distribution":
                             r["profile_distribution"]["sigma_at_planck"]} for r in rows]
      plots.plot_omegam_vs_zeff(rows, out_dir / f"cosmo_omegam_{probe_name}_sweep.png",
                                f"{probe_name}: z > z_min sweep")
      plots.plot_profiles(np.asarray(prof.omega_m), np.asarray(prof.chi2),
                          [r["label"] for r in rows],
                          out_dir / f"cosmo_omegam_{probe_name}_profiles.png")
  return figures


def _desi_bao():
  """DESI DR2 BAO alone (low-redshift cross-check) against the published fit."""
  from cosmo import bao
  from cosmo.intervals import summarize_profile
  from jaxrepro.data import resolve_data
  paths = [resolve_data(f) for f in bao.DEFAULT_FILES]  # no embedded default: skipped if absent
  data = bao.load_bao(paths[0].path, paths[1].path)
  grid = np.linspace(0.1, 0.6, 501)
  chi2, alpha = map(np.asarray, bao.bao_profile(data, grid))
  summary = summarize_profile(grid, chi2)
  return {"n_measurements": int(data.z.size), "best_omega_m": summary["best_omega_m"],
          "interval_delta_chi2_1": summary["interval_delta_chi2_1"],
          "chi2_min": summary["chi2_min"],
          "h_rd_mpc": float(bao.h_rd_mpc(alpha[np.argmin(chi2)])),
          "sigma_at_planck": summary["sigma_at_planck"],
          "published_omega_m": list(bao.DESI_DR2_OMEGA_M),
          "published_h_rd_mpc": list(bao.DESI_DR2_H_RD_MPC)}, paths[0].describe()


@benchmark("cosmo_omegam")
def run(quick: bool = False, out_dir: Path = Path("reports")) -> Report:
  with jax.enable_x64(True):
    return _run(quick, Path(out_dir))


def _data_notes(data: dict[str, str]) -> list[str]:
  """What the figures can be compared with, given the data each section actually read."""
  mocks = [probe for probe in ("qso", "grb") if data[probe].startswith("embedded:")]
  notes = []
  if mocks:
    probes = " and ".join(probe.upper() for probe in mocks)
    notes.append(f"{probes}: embedded mock catalogue(s) (the shared data is absent): a "
                 "pipeline check, not comparable with the paper's figures.")
  if "grb" not in mocks:
    notes.append("GRB: Konus-Wind (316 bursts with E_p), not the paper's A118 (absent from the "
                 "shared data, see its grb/README.md): the GRB figure is not comparable with the "
                 "paper's 3.9 sigma.")
  if "desi_bao" in data:
    notes.append("DESI DR2 BAO: the covariance in the shared data was re-derived from the "
                 "paper's values (not the official file); the fit is compared with the published "
                 "Omega_m and h r_d.")
  return notes


def _run(quick: bool, out_dir: Path) -> Report:
  from cosmo.cli_omegam import load_data
  data, metrics, timings = {}, {}, {}
  catalogues = {}
  for probe_name in ("qso", "grb"):
    name, cat, desc = load_data(probe_name)
    catalogues[probe_name], data[probe_name] = cat, desc
  start = time.perf_counter()
  metrics["profile_speed_qso"], profile_timings = _profile_speed(catalogues["qso"], quick)
  timings.update(profile_timings)
  timings["profile_speed_section_s"] = time.perf_counter() - start
  start = time.perf_counter()
  metrics["potential_cost"] = _potential_cost(catalogues, 20 if quick else 100)
  if quick:
    metrics["nuts_vs_emcee"] = _nuts_vs_emcee(
        "grb", catalogues["grb"], warmup=150, draws=600, emcee_steps=2000, walker_counts=(32,),
        repeats=1, with_vectorized=False)
  else:
    metrics["nuts_vs_emcee"] = _nuts_vs_emcee(
        "grb", catalogues["grb"], warmup=250, draws=1000, emcee_steps=4000,
        walker_counts=(16, 32, 64), repeats=3, with_vectorized=True)
    # the quasars: 8x the objects, Omega_m piled against the prior edge (longer NUTS trees)
    metrics["nuts_vs_emcee_qso"] = _nuts_vs_emcee(
        "qso", catalogues["qso"], warmup=250, draws=1000, emcee_steps=4000, walker_counts=(32,),
        repeats=1, with_vectorized=False)
  timings["nuts_vs_emcee_section_s"] = time.perf_counter() - start
  key = jax.random.key(0)
  for probe_name, cat in catalogues.items():
    start = time.perf_counter()
    metrics[f"tension_{probe_name}"] = _tensions(probe_name, cat, data[probe_name], quick,
                                                 out_dir, key)
    timings[f"tension_{probe_name}_section_s"] = time.perf_counter() - start
  try:
    metrics["desi_bao"], data["desi_bao"] = _desi_bao()
  except FileNotFoundError as e:
    metrics["desi_bao"] = f"skipped: {e}"
  report = Report(name="cosmo_omegam", command="python -m benchmarks.bench_cosmo"
                  + (" --quick" if quick else ""), data=data,
                  config={"quick": quick, "omega_grid": "linspace(0, 2, 200)", "h0_fixed": 70.0},
                  metrics=metrics, timings=timings)
  report.notes += [
      "Timings on a shared 2-core CPU machine; ratios are measured side by side in one process.",
      *_data_notes(data),
      "NUTS vs emcee: the same numpyro potential (unconstrained parameterization, float64), "
      "both started from its Laplace approximation (NUTS: chains at the mode in coordinates "
      "whitened by it, then dense adaptation; emcee: walkers drawn from it); "
      "ESS = numpyro's effective_sample_size of the constrained draws (emcee walkers as "
      "chains), minimum over sites; time = warm-up/burn-in + sampling after compilation "
      "(median of repeated runs), with the same warm-up fraction for both.",
  ]
  return report


if __name__ == "__main__":
  benchmark_main(run, doc_summary(__doc__))
