"""``jaxrepro cosmo degb ...`` end to end (in-process)."""

import json

import pytest

from jaxrepro.cli import main


def test_fixed_points_command(tmp_path):
  out = tmp_path / "fp.json"
  assert main(["cosmo", "degb", "fixed-points", "--gamma", "3.0", "--json", str(out),
               "--out", str(tmp_path)]) == 0
  report = json.loads(out.read_text())
  assert report["command"].startswith("jaxrepro cosmo degb fixed-points")
  kinds = {p["name"]: p["kind"] for p in report["metrics"]["points"]}
  assert kinds["kination+"] == "attractor" and kinds["radiation"] == "repeller"
  assert (tmp_path / "phase_portrait_gamma3.png").stat().st_size > 10_000
  assert set(report) >= {"command", "config", "data", "metrics", "timings", "env"}


@pytest.mark.slow
def test_paths_and_bbn_commands(tmp_path):
  paths_json, bbn_json = tmp_path / "paths.json", tmp_path / "bbn.json"
  assert main(["cosmo", "degb", "paths", "--grid", "3", "--t-max", "1e12", "--g-star", "10.75",
               "--json", str(paths_json), "--out", str(tmp_path)]) == 0
  metrics = json.loads(paths_json.read_text())["metrics"]
  assert metrics["n_failed"] == 0 and sum(metrics["counts_by_sign_alpha_and_path"].values()) == 2 * 3 * 3
  assert (tmp_path / "path_map.png").exists() and (tmp_path / "w_of_T.png").exists()
  assert main(["cosmo", "degb", "bbn", "--grid", "2", "--t-max", "1e14", "--json", str(bbn_json),
               "--out", str(tmp_path)]) == 0
  bbn = json.loads(bbn_json.read_text())["metrics"]
  assert bbn["n_w_minus_third_bounded"] >= 1 and 1e6 < bbn["T_RH_bound_median_GeV"] < 1e12
  assert (tmp_path / "bbn_T_RH_bound.png").exists()


def test_bad_input_exits_2(capsys):
  assert main(["cosmo", "degb", "paths", "--grid", "1"]) == 2
  assert "grid" in capsys.readouterr().err
  assert main(["cosmo", "degb", "bbn", "--g-star", "lots"]) == 2
  assert main(["cosmo", "degb", "bbn", "--alpha-range", "10", "1"]) == 2


@pytest.mark.slow
def test_paths_grid_reproduces_five_swift_and_three_metastable(tmp_path):
  """arXiv:2405.15998: eight paths, five swift and three with a meta-stable intermediate w."""
  out = tmp_path / "paths.json"
  assert main(["cosmo", "degb", "paths", "--grid", "12", "--json", str(out)]) == 0
  metrics = json.loads(out.read_text())["metrics"]
  assert metrics["n_failed"] == 0
  assert (metrics["n_distinct_paths"], metrics["n_swift"], metrics["n_metastable"]) == (8, 5, 3)
  assert "alpha>0: RD -> kination -> scaling" in metrics["swift_paths"]
  assert "alpha<0: RD -> kination -> w=-1/3" in metrics["metastable_paths"]
