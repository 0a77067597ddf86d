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
from tests.cosmo.test_likelihoods import _numpy_log_dl, _numpy_qso

pytestmark = pytest.mark.usefixtures("x64")


def test_model_density_is_prior_times_likelihood_per_subsample():
  """Two padded subsamples (z > 1 and z <= 1): the joint log density of the sampled sites
  (Omega_m, the centred intercept, gamma, ln delta) is the sum of each subsample's flat log
  priors and -chi^2 / 2 of its own members (numpy formula, quad distances) at the intercept
  beta = centred - 2 (gamma - 1) (mean log d_L(Omega_m) - mean log d_L(0.315)), a shear
  with unit Jacobian; the deterministic site returns that beta."""
  cat = mock_catalogue("qso", n=80, seed=6)
  high = cat.z > 1.0
  weights = np.stack([high, ~high]).astype(float)
  args = model_args(cat, weights, (0.0, 2.0))
  params = {"omega_m": jnp.array([0.9, 0.3]), "beta_30.5_centred": jnp.array([26.6, 26.8]),
            "gamma": jnp.array([0.6, 0.65]), "ln_delta": jnp.array([-1.4, -1.6])}
  model = functools.partial(omegam_model, get_probe("qso"))
  got, beta_site = jax.jit(lambda p: (lambda d, t: (d, t["beta_30.5"]["value"]))(
      *log_density(model, args, {}, p)))(params)
  expected = 0.0
  for b, members in enumerate([high, ~high]):
    omega_m, centred, gamma, ln_delta = (float(params[k][b]) for k in params)
    z = cat.z[members]
    shift = np.mean(_numpy_log_dl(z, omega_m)) - np.mean(_numpy_log_dl(z, 0.315))
    beta = centred - 2.0 * (gamma - 1.0) * shift
    assert float(beta_site[b]) == pytest.approx(beta, abs=1e-8)
    expected += -0.5 * _numpy_qso(omega_m, beta, gamma, ln_delta, cat.select(members))
    expected -= np.log(2.0) + sum(np.log(hi - lo) for lo, hi in PRIORS["qso"].values())
  assert float(got) == pytest.approx(expected, rel=1e-9)


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
  approximation must return exactly those (mode by BFGS, Hessian by differences), and the
  whitened potential must be a standard normal's (unit Hessian, minimum at w = 0)."""
  import numpyro
  import numpyro.distributions as dist
  from cosmo.bayes import laplace_approximation, whiten

  rng = np.random.default_rng(1)
  design = rng.normal(size=(30, 2)) + np.array([1.0, 0.0])  # correlated columns
  y = design @ np.array([0.7, -1.2]) + 0.5 * rng.normal(size=30)

  def model(design, y):
    theta = numpyro.sample("theta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(design @ theta, 0.5).to_event(1), obs=y)

  args = (jnp.asarray(design), jnp.asarray(y))
  laplace = laplace_approximation(model, args, {"theta": jnp.zeros(2)})
  covariance = np.linalg.inv(design.T @ design / 0.25 + np.eye(2) / 100.0)
  mean = covariance @ design.T @ y / 0.25
  np.testing.assert_allclose(laplace.mode["theta"], mean, rtol=1e-6)
  np.testing.assert_allclose(laplace.covariance, covariance, rtol=1e-5)
  assert laplace.sites == ("theta",)
  whitened = whiten(laplace)
  w = jnp.zeros(whitened.dimension)
  np.testing.assert_allclose(jax.hessian(whitened.potential_fn)(w), np.eye(2), atol=1e-5)
  np.testing.assert_allclose(jax.grad(whitened.potential_fn)(w), 0.0, atol=1e-5)
  np.testing.assert_allclose(whitened.to_unconstrained(w)["theta"], mean, rtol=1e-6)


@pytest.mark.slow  # NUTS compilation and a grid integral: ~30 s on the shared machine
def test_nuts_posterior_equals_numerical_marginal_at_the_prior_edge():
  """QSO mock drawn at Omega_m = 3 with the prior U(0, 2): the posterior piles against the
  edge, where the centred intercept matters most. Reference, independent of the model's
  parameterization: the Omega_m marginal with the plain flat prior on beta, by integrating
  beta analytically (it enters the mean linearly) and (gamma, ln delta) on a grid, with
  quad distances. NUTS quantiles and means must agree within Monte Carlo error."""
  from scipy.special import logsumexp

  cat = mock_catalogue("qso", n=150, seed=2, omega_m=3.0)
  probe = get_probe("qso")
  mcmc = run_nuts(probe, cat, jax.random.key(1), init=dict(zip(
      ("omega_m",) + probe.nuisance_names, (1.5,) + probe.mock_truth)),
      num_warmup=300, num_samples=1000, num_chains=2)
  draws = {k: np.asarray(v)[..., 0] for k, v in mcmc.get_samples(group_by_chain=True).items()}
  post = summarize_posterior(draws)
  assert max(post["rhat"].values()) < 1.02 and min(post["ess"].values()) > 400

  omega = np.linspace(0.0125, 1.9875, 80)
  gamma = np.linspace(0.2, 1.0, 81)[:, None, None]
  sigma2_int = np.exp(2 * np.linspace(-3.0, -0.5, 61))[None, :, None]
  log_4pi = np.log10(4 * np.pi)
  log_marginal = np.empty((omega.size,) + gamma.shape[:1] + sigma2_int.shape[1:2])
  for i, om in enumerate(omega):
    lum = log_4pi + 2 * _numpy_log_dl(cat.z, om)  # beta enters as y - beta - rest
    rest = -30.5 * gamma + gamma * cat.x + (gamma - 1) * lum
    residual = cat.y - rest
    var = cat.sigma_y ** 2 + gamma ** 2 * cat.sigma_x ** 2 + sigma2_int
    a, b = np.sum(1 / var, -1), np.sum(residual / var, -1)
    log_marginal[i] = (-0.5 * np.sum(np.log(var) + residual ** 2 / var, -1) + 0.5 * b ** 2 / a
                       - 0.5 * np.log(a))
  log_marginal += np.log(2 * np.exp(np.linspace(-3.0, -0.5, 61)))  # flat prior on ln delta
  log_omega = logsumexp(log_marginal, axis=(1, 2))
  weight_omega = np.exp(log_omega - log_omega.max())
  weight_omega /= weight_omega.sum()
  cdf = np.cumsum(weight_omega) - 0.5 * weight_omega  # cell centres
  sd = np.sqrt(np.sum(weight_omega * omega ** 2) - np.sum(weight_omega * omega) ** 2)
  error = 4 * sd / np.sqrt(post["ess"]["omega_m"])  # 4 standard errors of a mean
  assert post["omega_m_mean"] == pytest.approx(np.sum(weight_omega * omega), abs=error + 0.01)
  for q in (0.16, 0.5):  # 0.84 sits within a grid cell of the edge
    assert post["omega_m_quantiles"][str(q)] == pytest.approx(np.interp(q, cdf, omega),
                                                              abs=1.5 * error + 0.0125)
  weight_gamma = np.exp(logsumexp(log_marginal, axis=(0, 2)) - logsumexp(log_marginal))
  assert draws["gamma"].mean() == pytest.approx(np.sum(weight_gamma * gamma.ravel()),
                                                abs=4 * draws["gamma"].std()
                                                / np.sqrt(post["ess"]["gamma"]) + 1e-3)


def test_progress_bar_follows_quiet_and_changes_no_draw(monkeypatch, capfd):
  """The bar makes numpyro step from Python instead of one compiled loop: same draws."""
  import cosmo.bayes
  cat, probe = mock_catalogue("sne", n=40, seed=3), get_probe("sne")
  # numpyro switches its bar off by itself when these are set, as they are on CI machines.
  monkeypatch.delenv("CI", raising=False)
  monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

  def draws():
    mcmc = run_nuts(probe, cat, jax.random.key(2), init={"omega_m": 0.3, "M": -19.3},
                    num_warmup=30, num_samples=30, num_chains=2)
    return np.asarray(mcmc.get_samples()["omega_m"])
  monkeypatch.setattr(cosmo.bayes, "is_quiet", lambda: True)
  quiet = draws()
  assert "sample:" not in capfd.readouterr().err
  monkeypatch.setattr(cosmo.bayes, "is_quiet", lambda: False)
  shown = draws()
  assert "sample:" in capfd.readouterr().err
  np.testing.assert_array_equal(quiet, shown)
