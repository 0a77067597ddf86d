import json

import pytest

from jaxrepro import cli, data


@pytest.fixture
def no_shared_data(monkeypatch, tmp_path):
  """A fresh machine: no ../shared/data and no $JAXREPRO_DATA."""
  monkeypatch.setattr(data, "shared_data_dir", lambda: tmp_path / "absent")
  monkeypatch.delenv(data.DATA_ENV, raising=False)


def test_omegam_profile_on_embedded_mock(no_shared_data, tmp_path, capsys):
  out, report = tmp_path / "out", tmp_path / "r.json"
  code = cli.main(["--quiet", "cosmo", "omegam", "--data", "qso", "--quick", "--zmin", "0,1.5",
                   "--json", str(report), "--out", str(out)])
  assert code == 0
  result = json.loads(report.read_text())
  assert result["data"].startswith("embedded:mock-qso(n=2421, seed=0, Omega_m=0.315")
  rows = result["metrics"]["subsamples"]
  assert [r["label"] for r in rows] == ["z>0", "z>1.5"]
  assert rows[0]["n"] == 2421 and rows[1]["n"] < 2421
  for row in rows:
    assert set(row) >= {"n", "z_eff_mean", "z_eff_median", "best_omega_m", "interval_delta_chi2_1",
                        "delta_chi2_at_planck", "sigma_at_planck", "profile_distribution"}
  # drawn at Omega_m = 0.315: no significant tension with Planck
  assert rows[0]["sigma_at_planck"] < 3.5
  assert rows[0]["interval_delta_chi2_1"][0] < 0.315 + 0.3
  for png in ("omegam_qso_vs_zeff.png", "profiles_qso.png", "cosmo_omegam.md"):
    assert (out / png).stat().st_size > 0
  assert "embedded:mock-qso" in capsys.readouterr().out


def test_omegam_rejects_bad_input(tmp_path, capsys):
  bad = tmp_path / "bad.txt"
  bad.write_text("Name z logFUV e_logFUV logFX e_logFX\nq1 -1 -27 0.01 -31 0.03\n")
  assert cli.main(["cosmo", "omegam", "--data", str(bad)]) == 2
  assert "line 2: negative redshift" in capsys.readouterr().err
  assert cli.main(["cosmo", "omegam", "--data", "qso", "--bins", "equal"]) == 2
  assert cli.main(["cosmo", "omegam", "--omega-range", "0.5,2"]) == 2
  assert "must start at" in capsys.readouterr().err


def test_omegam_bao_reproduces_desi_dr2(cosmo_data, tmp_path):
  """--data bao: the full DESI DR2 set gives the published BAO-only fit (arXiv 2503.14738,
  Omega_m = 0.2975 +- 0.0086); a z cut keeps only the measurements above it."""
  from cosmo.bao import DESI_DR2_OMEGA_M
  report = tmp_path / "bao.json"
  assert cli.main(["--quiet", "cosmo", "omegam", "--data", "bao", "--zmin", "0,0.6",
                   "--json", str(report), "--out", str(tmp_path / "out")]) == 0
  result = json.loads(report.read_text())
  assert result["data"].endswith("dr2_data.csv")
  full, high = result["metrics"]["subsamples"]
  omega, sigma = DESI_DR2_OMEGA_M
  assert full["n"] == 13 and full["best_omega_m"] == pytest.approx(omega, abs=0.1 * sigma)
  low, up = full["interval_delta_chi2_1"]
  assert 0.5 * (up - low) == pytest.approx(sigma, rel=0.05)
  assert high["n"] == 10 and high["z_eff_mean"] > full["z_eff_mean"]
  assert (tmp_path / "out" / "omegam_bao_vs_zeff.png").stat().st_size > 0


def test_omegam_bao_embedded_mock_and_bad_method(no_shared_data, tmp_path, capsys):
  report = tmp_path / "bao.json"
  assert cli.main(["--quiet", "cosmo", "omegam", "--data", "bao", "--quick",
                   "--json", str(report)]) == 0
  result = json.loads(report.read_text())
  assert result["data"].startswith("embedded:mock-bao(n=13, seed=0, Omega_m=0.315")
  (row,) = result["metrics"]["subsamples"]
  assert row["sigma_at_planck"] < 3.5  # drawn at Planck's Omega_m
  assert row["h_rd_mpc_at_best_grid_point"] == pytest.approx(101.54, rel=0.05)
  assert cli.main(["cosmo", "omegam", "--data", "bao", "--method", "bayes"]) == 2
  assert "--data bao takes --method profile" in capsys.readouterr().err
