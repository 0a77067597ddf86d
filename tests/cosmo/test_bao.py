import numpy as np
import pytest
from scipy import integrate, optimize

from cosmo.bao import (DESI_DR2_H_RD_MPC, DESI_DR2_OMEGA_M, QUANTITIES, BaoData, bao_profile,
                       h_rd_mpc, load_bao)
from cosmo.intervals import summarize_profile

pytestmark = pytest.mark.usefixtures("x64")


def _quad_prediction(z, quantity, omega_m, alpha):
  """D/r_d from scipy.integrate.quad, written from the textbook definitions."""
  e = np.sqrt(omega_m * (1 + z) ** 3 + 1 - omega_m)
  d_c = integrate.quad(lambda x: 1 / np.sqrt(omega_m * (1 + x) ** 3 + 1 - omega_m), 0, z,
                       epsabs=0, epsrel=1e-12)[0]
  return {"DM_over_rs": alpha * d_c, "DH_over_rs": alpha / e,
          "DV_over_rs": alpha * (z * d_c ** 2 / e) ** (1 / 3), "F_AP": d_c * e}[quantity]


def _synthetic():
  rng = np.random.default_rng(0)
  z = np.array([0.3, 0.5, 0.5, 0.9, 1.3, 2.3, 2.3, 2.3])
  names = ["DV_over_rs", "DM_over_rs", "DH_over_rs", "DM_over_rs", "DH_over_rs", "DH_over_rs",
           "DM_over_rs", "F_AP"]
  truth = [_quad_prediction(zi, q, 0.32, 29.0) for zi, q in zip(z, names)]
  root = rng.normal(size=(8, 8)) * 0.05
  covariance = root @ root.T + np.diag((0.01 * np.asarray(truth)) ** 2)
  value = rng.multivariate_normal(truth, covariance)
  return BaoData(z, value, np.array([QUANTITIES.index(q) for q in names]), covariance), names


def test_profile_matches_quad_and_scipy_minimize():
  data, names = _synthetic()
  precision = np.linalg.inv(data.covariance)
  grid = np.array([0.1, 0.315, 0.7, 1.5])
  chi2, alpha = map(np.asarray, bao_profile(data, grid))
  for omega_m, ours, our_alpha in zip(grid, chi2, alpha):
    def chi2_of(a):
      r = data.value - np.array([_quad_prediction(zi, q, omega_m, a)
                                 for zi, q in zip(data.z, names)])
      return r @ precision @ r
    ref = optimize.minimize_scalar(chi2_of, bracket=(20.0, 40.0), tol=1e-12)
    assert ours == pytest.approx(ref.fun, rel=1e-7, abs=1e-7)
    assert our_alpha == pytest.approx(ref.x, rel=1e-6)


def test_desi_dr2_reproduces_the_published_fit(cosmo_data):
  data = load_bao(cosmo_data / "desi_bao/dr2_data.csv", cosmo_data / "desi_bao/dr2_covariance.txt")
  grid = np.linspace(0.2, 0.4, 401)
  chi2, alpha = map(np.asarray, bao_profile(data, grid))
  summary = summarize_profile(grid, chi2)
  omega, sigma = DESI_DR2_OMEGA_M
  assert summary["best_omega_m"] == pytest.approx(omega, abs=0.1 * sigma)
  low, high = summary["interval_delta_chi2_1"]
  assert 0.5 * (high - low) == pytest.approx(sigma, rel=0.05)
  assert float(h_rd_mpc(alpha[np.argmin(chi2)])) == pytest.approx(DESI_DR2_H_RD_MPC[0],
                                                                   abs=0.2 * DESI_DR2_H_RD_MPC[1])


def test_loader_rejects_malformed_files(tmp_path):
  data, cov = tmp_path / "d.csv", tmp_path / "c.txt"
  cov.write_text("1 0\n0 1\n")
  data.write_text("z,value,quantity\n0.5,13.6,DM_over_rs\n0.5,21.9,DA_over_rs\n")
  with pytest.raises(ValueError, match="line 3: unknown quantity 'DA_over_rs'"):
    load_bao(data, cov)
  data.write_text("z,value,quantity\n-0.5,13.6,DM_over_rs\n0.5,21.9,DH_over_rs\n")
  with pytest.raises(ValueError, match="line 2: negative redshift"):
    load_bao(data, cov)
  data.write_text("z,value,quantity\n0.5,abc,DM_over_rs\n0.5,21.9,DH_over_rs\n")
  with pytest.raises(ValueError, match="line 2: column 'value' is not a number"):
    load_bao(data, cov)
  data.write_text("z,value\n0.5,13.6\n")
  with pytest.raises(ValueError, match=r"line 1: missing column\(s\) \['quantity'\]"):
    load_bao(data, cov)
  data.write_text("z,value,quantity\n0.5,13.6,DM_over_rs\n0.5,21.9,DH_over_rs\n0.7,17,DM_over_rs\n")
  with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, 3\)"):
    load_bao(data, cov)
  data.write_text("z,value,quantity\n0.5,13.6,DM_over_rs\n0.5,21.9,DH_over_rs\n")
  cov.write_text("1 2\n2 1\n")
  with pytest.raises(ValueError, match="not positive definite"):
    load_bao(data, cov)
