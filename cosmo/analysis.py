"""Omega_m per redshift subsample by profile likelihood, mock calibration and NUTS.

The pipeline of arXiv 2405.19953: split a catalogue into high-redshift cuts or equal-count
bins (cosmo.binning), profile chi^2(Omega_m) for all of them in one vmapped call
(cosmo.profile), summarise each profile (cosmo.intervals), and optionally calibrate the
tension with mocks (cosmo.mocks) and compare with the marginal posterior (cosmo.bayes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from cosmo.bayes import run_nuts, summarize_posterior
from cosmo.binning import Subsample
from cosmo.catalogues import Catalogue
from cosmo.distances import PLANCK_OMEGA_M
from cosmo.intervals import summarize_profile
from cosmo.likelihoods import Probe
from cosmo.mocks import calibrate, delta_chi2_at, mock_profiles
from cosmo.profile import Profile, profile_likelihood
from jaxrepro.progress import progress


@dataclasses.dataclass(frozen=True)
class OmegaMConfig:
  """Grid and sampler settings; Omega_m may exceed 1 (the data drive it there)."""
  omega_min: float = 0.0
  omega_max: float = 2.0
  grid_points: int = 200
  n_mocks: int = 1000
  mock_grid_points: int = 81
  num_warmup: int = 500
  num_samples: int = 1000
  num_chains: int = 4

  def grid(self, points: int | None = None) -> np.ndarray:
    if not self.omega_min <= PLANCK_OMEGA_M < self.omega_max or self.omega_min < 0:
      raise ValueError(f"the Omega_m range [{self.omega_min}, {self.omega_max}] must start at "
                       f">= 0 and contain Planck's {PLANCK_OMEGA_M}")
    return np.linspace(self.omega_min, self.omega_max, points or self.grid_points)


def profile_subsamples(probe: Probe, cat: Catalogue, subsamples: Sequence[Subsample],
                       config: OmegaMConfig) -> tuple[Profile, list[dict[str, Any]]]:
  """Profiles of all subsamples (one compiled call) and their summaries."""
  weights = np.stack([s.weights for s in subsamples])
  profile = jax.block_until_ready(profile_likelihood(probe, cat, config.grid(), weights))
  rows = []
  for s, chi2, grad in zip(subsamples, np.asarray(profile.chi2), np.asarray(profile.grad_norm)):
    row = {"label": s.label, "n": s.n, "z_eff_mean": s.z_eff_mean, "z_eff_median": s.z_eff_median}
    row.update(summarize_profile(np.asarray(profile.omega_m), chi2))
    row["max_grad_norm"] = float(grad.max())
    row["delta_chi2_profile"] = (chi2 - row["chi2_min"]).tolist()  # on config.grid()
    rows.append(row)
  return profile, rows


def calibrate_subsamples(probe: Probe, cat: Catalogue, subsamples: Sequence[Subsample],
                         config: OmegaMConfig, key: jax.Array
                         ) -> list[tuple[dict[str, Any], np.ndarray]]:
  """Mock p-values of Delta chi^2(0.315) per subsample (on the coarser mock grid); returns
  (summary, the mocks' Delta chi^2 values) for each."""
  grid = config.grid(config.mock_grid_points)
  results = []
  for s, k in zip(progress(subsamples, desc="mocks"), jax.random.split(key, len(subsamples))):
    observed = profile_likelihood(probe, cat, grid, s.weights)
    observed_delta = float(delta_chi2_at(grid, np.asarray(observed.chi2))[0])
    chi2, truth = mock_profiles(probe, cat, s.weights, grid, k, n_mocks=config.n_mocks)
    stats = delta_chi2_at(grid, np.asarray(chi2))
    result = {"observed_delta_chi2": observed_delta,
              "truth": dict(zip(probe.nuisance_names, np.asarray(truth).tolist())),
              **calibrate(observed_delta, stats)}
    results.append((result, stats))
  return results


def bayes_subsamples(probe: Probe, cat: Catalogue, subsamples: Sequence[Subsample],
                     profile: Profile, rows: Sequence[dict[str, Any]], config: OmegaMConfig,
                     key: jax.Array) -> list[tuple[dict[str, Any], np.ndarray]]:
  """NUTS on all subsamples jointly (one compiled run; the posterior factorises), each
  started at its profile best fit; returns (summary, Omega_m draws) per subsample."""
  margin = 0.02 * (config.omega_max - config.omega_min)
  best = np.argmin(np.asarray(profile.chi2), axis=-1)
  init = {"omega_m": np.clip([r["best_omega_m"] for r in rows], config.omega_min + margin,
                             config.omega_max - margin)}
  nuisance = np.asarray(profile.nuisance)[np.arange(len(rows)), best]
  init.update({name: nuisance[:, j] for j, name in enumerate(probe.nuisance_names)})
  mcmc = run_nuts(probe, cat, key, init=init, weights=np.stack([s.weights for s in subsamples]),
                  omega_range=(config.omega_min, config.omega_max),
                  num_warmup=config.num_warmup, num_samples=config.num_samples,
                  num_chains=config.num_chains)
  draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
  divergences = np.asarray(mcmc.get_extra_fields()["diverging"]).sum()
  results = []
  for i, row in enumerate(rows):
    summary = summarize_posterior({k: v[..., i] for k, v in draws.items()})
    summary["profile_minus_marginal_median"] = (row["best_omega_m"]
                                                - summary["omega_m_quantiles"]["0.5"])
    summary["divergences_all_subsamples"] = int(divergences)
    results.append((summary, draws["omega_m"][..., i].reshape(-1)))
  return results
