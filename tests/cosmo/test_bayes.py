import jax
import numpy as np
import pytest

from cosmo.bayes import run_nuts, summarize_posterior
from cosmo.intervals import summarize_profile
from cosmo.likelihoods import get_probe
from cosmo.mock_catalogue import mock_catalogue
from cosmo.profile import profile_likelihood

pytestmark = pytest.mark.usefixtures("x64")


def test_nuts_marginal_equals_profile_distribution_when_nuisance_is_linear():
  """SNe: M enters linearly with a flat prior, so marginalising it is a Gaussian integral of
  constant width and the marginal posterior of Omega_m is exactly exp(-Delta chi^2 / 2):
  NUTS must reproduce the profile distribution (no projection effect)."""
  cat = mock_catalogue("sne", n=120, seed=4)
  probe = get_probe("sne")
  grid = np.linspace(0.0, 2.0, 801)
  summary = summarize_profile(grid, np.asarray(profile_likelihood(probe, cat, grid).chi2))
  mcmc = run_nuts(probe, cat, jax.random.key(0), init={"omega_m": 0.3, "M": -19.3},
                  num_warmup=250, num_samples=500, num_chains=2)
  samples = {k: np.asarray(v)[..., 0] for k, v in mcmc.get_samples(group_by_chain=True).items()}
  post = summarize_posterior(samples)
  assert max(post["rhat"].values()) < 1.05
  assert min(post["ess"].values()) > 150
  dist = summary["profile_distribution"]
  assert post["omega_m_quantiles"]["0.5"] == pytest.approx(dist["median"], abs=0.02)
  np.testing.assert_allclose([post["omega_m_quantiles"]["0.16"], post["omega_m_quantiles"]["0.84"]],
                             dist["interval_68"], atol=0.025)
  assert abs(post["omega_m_quantiles"]["0.5"] - 0.315) < 0.15  # and near the mock's truth
