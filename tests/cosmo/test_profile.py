import jax
import numpy as np
import pytest
from scipy import optimize

from cosmo.intervals import best_fit, delta_chi2_interval, summarize_profile
from cosmo.likelihoods import get_probe
from cosmo.mock_catalogue import mock_catalogue
from cosmo.mocks import calibrate, delta_chi2_at, mock_profiles
from cosmo.profile import profile_likelihood
from tests.cosmo.test_likelihoods import _numpy_log_dl

pytestmark = pytest.mark.usefixtures("x64")


def test_profile_matches_scipy_minimize_per_grid_point():
  cat = mock_catalogue("qso", n=150, seed=2)
  probe = get_probe("qso")
  grid = np.array([0.1, 0.315, 1.0, 1.9])
  prof = profile_likelihood(probe, cat, grid)

  def chi2(nu, log_dl):
    beta, gamma, ln_delta = nu  # the unpivoted intercept
    model = beta + gamma * cat.x + (gamma - 1) * (np.log10(4 * np.pi) + 2 * log_dl)
    s2 = cat.sigma_y ** 2 + gamma ** 2 * cat.sigma_x ** 2 + np.exp(2 * ln_delta)
    return np.sum((cat.y - model) ** 2 / s2 + np.log(2 * np.pi * s2))

  for omega_m, ours in zip(grid, np.asarray(prof.chi2)):
    log_dl = _numpy_log_dl(cat.z, omega_m)
    ref = optimize.minimize(chi2, [8.0, 0.6, -1.5], args=(log_dl,), method="Nelder-Mead",
                            options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000})
    assert ours == pytest.approx(ref.fun, abs=1e-6)
  assert float(np.max(prof.grad_norm)) < 1e-2  # converged: chi2 agrees to 1e-6 above


def test_summary_of_a_gaussian_profile_is_closed_form():
  omega = np.linspace(0.0, 2.0, 401)
  mu, s = 1.1, 0.2
  summary = summarize_profile(omega, ((omega - mu) / s) ** 2 + 100.0)
  assert summary["best_omega_m"] == pytest.approx(mu, abs=1e-9)
  assert summary["chi2_min"] == pytest.approx(100.0, abs=1e-9)
  np.testing.assert_allclose(summary["interval_delta_chi2_1"], [mu - s, mu + s], atol=1e-4)
  assert summary["sigma_at_planck"] == pytest.approx((mu - 0.315) / s, rel=1e-6)
  dist = summary["profile_distribution"]
  np.testing.assert_allclose(dist["interval_68"], [mu - s, mu + s], atol=2e-3)
  assert dist["sigma_at_planck"] == pytest.approx((mu - 0.315) / s, rel=2e-3)


def test_boundary_profile_gives_open_interval_and_finite_distribution():
  omega = np.linspace(0.0, 2.0, 201)
  summary = summarize_profile(omega, -4.0 * omega)  # keeps falling: best fit on the edge
  assert summary["best_omega_m"] == 2.0 and summary["interval_open"] == [False, True]
  assert summary["interval_delta_chi2_1"][0] == pytest.approx(1.75, abs=1e-9)
  # R = exp(2 (Om - 2)) on [0, 2]: P(Om <= 0.315) = (e^{2*0.315} - 1) / (e^4 - 1)
  expected = (np.exp(2 * 0.315) - 1) / (np.exp(4.0) - 1)
  assert summary["profile_distribution"]["probability_beyond_planck"] == pytest.approx(expected,
                                                                                      rel=1e-3)


def test_coverage_of_delta_chi2_interval_over_mocks():
  """On mocks drawn at the truth the Delta chi^2 = 1 interval covers it ~68% of the time."""
  cat = mock_catalogue("qso", n=400, seed=5)
  grid = np.linspace(0.0, 1.5, 61)
  n_mocks = 200
  chi2, _ = mock_profiles(get_probe("qso"), cat, np.ones(400), grid, jax.random.key(1),
                          n_mocks=n_mocks)
  chi2 = np.asarray(chi2)
  covered, best = [], []
  for row in chi2:
    b, m = best_fit(grid, row)
    lo, hi, *_ = delta_chi2_interval(grid, row - m, b)
    covered.append(lo <= 0.315 <= hi)
    best.append(b)
  tolerance = 3 * np.sqrt(0.683 * 0.317 / n_mocks)
  assert abs(np.mean(covered) - 0.683) < tolerance
  assert abs(np.median(best) - 0.315) < 0.1  # recovers the truth
  # Wilks: Delta chi^2 at the truth is ~chi^2_1 (mean 1), and mocks at the truth are unremarkable
  stats = delta_chi2_at(grid, chi2)
  assert 0.75 < stats.mean() < 1.3
  result = calibrate(float(np.median(stats)), stats)
  assert 0.45 < result["p_value"] < 0.56
  assert calibrate(1e6, stats)["p_value_is_upper_bound"]
