import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from cosmo.catalogues import Catalogue
from cosmo.likelihoods import chi2_at, get_probe
from cosmo.mock_catalogue import mock_catalogue

pytestmark = pytest.mark.usefixtures("x64")

MPC_CM = 3.0856775814913673e24
_jitted_chi2_at = jax.jit(chi2_at, static_argnums=0)  # eager dispatch would compile every op


def _numpy_log_dl(z, omega_m):
  """log10 d_L (cm) by scipy quad, H0 = 70: an independent reference."""
  dc = np.array([quad(lambda t: 1 / np.sqrt(omega_m * (1 + t) ** 3 + 1 - omega_m), 0, zi,
                      epsabs=0, epsrel=1e-12)[0]
                 for zi in z])
  return np.log10((1 + z) * dc * 299792.458 / 70.0 * MPC_CM)


def _numpy_qso(omega_m, beta_pivot, gamma, ln_delta, cat):
  """The issue's formula, written out in numpy (beta from the pivoted intercept)."""
  beta = beta_pivot - 30.5 * gamma
  log_dl = _numpy_log_dl(cat.z, omega_m)
  model = beta + gamma * cat.x + (gamma - 1) * (np.log10(4 * np.pi) + 2 * log_dl)
  s2 = cat.sigma_y ** 2 + gamma ** 2 * cat.sigma_x ** 2 + np.exp(ln_delta) ** 2
  return np.sum((cat.y - model) ** 2 / s2 + np.log(2 * np.pi * s2))


def _numpy_grb(omega_m, a, b, ln_sig, cat):
  dl_cm = 10 ** _numpy_log_dl(cat.z, omega_m)
  e_iso = 4 * np.pi * dl_cm ** 2 * 10 ** cat.x / (1 + cat.z)
  model = a + b * (np.log10(e_iso) - 52)
  s2 = cat.sigma_y ** 2 + b ** 2 * cat.sigma_x ** 2 + np.exp(ln_sig) ** 2
  return np.sum((cat.y - model) ** 2 / s2 + np.log(2 * np.pi * s2))


def _numpy_sne(omega_m, m_abs, cat):
  mu = 5 * (_numpy_log_dl(cat.z, omega_m) - np.log10(10 * MPC_CM / 1e6))
  return np.sum((cat.y - m_abs - mu) ** 2 / cat.sigma_y ** 2 + np.log(2 * np.pi * cat.sigma_y ** 2))


REFERENCES = {"qso": _numpy_qso, "grb": _numpy_grb, "sne": _numpy_sne}


@pytest.mark.parametrize("name", ["qso", "grb", "sne"])
def test_chi2_matches_numpy_formula(name):
  cat = mock_catalogue(name, n=40, seed=3)
  probe = get_probe(name)
  for omega_m in (0.3, 1.2):
    nuisance = np.asarray(probe.mock_truth) * 1.01
    got = float(_jitted_chi2_at(probe, omega_m, jnp.asarray(nuisance), Catalogue(*map(jnp.asarray, cat))))
    # distances are exact to ~1e-9 relative, which moves chi^2 by ~2e-6 (profiles need 0.01)
    np.testing.assert_allclose(got, REFERENCES[name](omega_m, *nuisance, cat), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["qso", "grb"])
def test_gradient_matches_finite_differences(name):
  cat = Catalogue(*map(jnp.asarray, mock_catalogue(name, n=60, seed=1)))
  probe = get_probe(name)
  params = jnp.asarray([0.7, *probe.mock_truth])

  @jax.jit
  def f(p):
    return chi2_at(probe, p[0], p[1:], cat)

  grad = np.asarray(jax.jit(jax.grad(f))(params))
  h = 1e-5
  fd = np.array([(f(params + h * e) - f(params - h * e)) / (2 * h)
                 for e in np.eye(len(params))])
  np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)
