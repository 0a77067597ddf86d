import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density
from scipy import stats

from cosmo.bayes import PRIORS, model_args, omegam_model, run_nuts, summarize_posterior
from cosmo.intervals import summarize_profile
from cosmo.likelihoods import get_probe
from cosmo.mock_catalogue import mock_catalogue
from cosmo.profile import profile_likelihood
from tests.cosmo.test_likelihoods import _numpy_qso

pytestmark = pytest.mark.usefixtures("x64")


def test_model_density_is_prior_times_likelihood_per_subsample():
  """Two padded subsamples (z > 1 and z <= 1): the joint log density is the sum of each
  subsample's flat log priors and -chi^2 / 2 of its own members (numpy formula)."""
  cat = mock_catalogue("qso", n=80, seed=6)
  high = cat.z > 1.0
  weights = np.stack([high, ~high]).astype(float)
  args = model_args(cat, weights, (0.0, 2.0))
  params = {"omega_m": jnp.array([0.9, 0.3]), "beta_30.5": jnp.array([26.6, 26.8]),
            "gamma": jnp.array([0.6, 0.65]), "ln_delta": jnp.array([-1.4, -1.6])}
  model = functools.partial(omegam_model, get_probe("qso"))
  got = float(jax.jit(lambda p: log_density(model, args, {}, p)[0])(params))
  expected = 0.0
  for b, members in enumerate([high, ~high]):
    nu = [float(params[k][b]) for k in ("omega_m", "beta_30.5", "gamma", "ln_delta")]
    expected += -0.5 * _numpy_qso(*nu, cat.select(members))
    expected -= np.log(2.0) + sum(np.log(hi - lo) for lo, hi in PRIORS["qso"].values())
  assert got == pytest.approx(expected, rel=1e-9)


def test_posterior_summary_of_gaussian_draws_is_closed_form():
  rng = np.random.default_rng(0)
  mu, s = 0.7, 0.2
  draws = {"omega_m": rng.normal(mu, s, (4, 20000)), "gamma": rng.normal(0.6, 0.1, (4, 20000))}
  post = summarize_posterior(draws)
  for q, value in post["omega_m_quantiles"].items():
    assert value == pytest.approx(mu + s * stats.norm.ppf(float(q)), abs=0.01)
  assert post["sigma_at_planck"] == pytest.approx((mu - 0.315) / s, abs=0.05)
  assert max(post["rhat"].values()) < 1.01  # independent draws: R-hat ~ 1, ESS ~ all draws
  assert min(post["ess"].values()) > 0.8 * 80000
  stuck = {"omega_m": draws["omega_m"] + np.arange(4)[:, None]}  # chains disagree
  assert summarize_posterior(stuck)["rhat"]["omega_m"] > 2.0


@pytest.mark.slow  # NUTS compilation: ~15 s CPU, about a minute on the shared machine
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


def test_laplace_approximation_is_exact_for_a_linear_gaussian_model():
  """theta ~ N(0, 10^2 I), y ~ N(A theta, 0.5^2): the posterior is Gaussian with covariance
  (A^T A / 0.25 + I / 100)^-1 and mean cov A^T y / 0.25 (closed form); the Laplace
  approximation must return exactly those (mode by BFGS, Hessian by differences)."""
  import numpyro
  import numpyro.distributions as dist
  from cosmo.bayes import laplace_approximation, nuts_kernel

  rng = np.random.default_rng(1)
  design = rng.normal(size=(30, 2)) + np.array([1.0, 0.0])  # correlated columns
  y = design @ np.array([0.7, -1.2]) + 0.5 * rng.normal(size=30)

  def model(design, y):
    theta = numpyro.sample("theta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(design @ theta, 0.5).to_event(1), obs=y)

  args = (jnp.asarray(design), jnp.asarray(y))
  laplace = laplace_approximation(model, args, {"theta": jnp.zeros(2)})
  covariance = np.linalg.inv(design.T @ design / 0.25 + np.eye(2) / 100.0)
  np.testing.assert_allclose(laplace.mode["theta"], covariance @ design.T @ y / 0.25, rtol=1e-6)
  np.testing.assert_allclose(laplace.covariance, covariance, rtol=1e-5)
  assert laplace.sites == ("theta",)
  kernel = nuts_kernel(laplace)  # on the potential; adaptation starts from the covariance
  state = kernel.init(jax.random.key(0), 10, laplace.mode)
  np.testing.assert_allclose(state.adapt_state.inverse_mass_matrix[("theta",)], covariance,
                             rtol=1e-5)
