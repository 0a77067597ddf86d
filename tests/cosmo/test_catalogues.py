import numpy as np
import pytest

from cosmo.binning import equal_count_bins, parse_bins, redshift_cuts
from cosmo.catalogues import DEFAULT_FILES, catalogue_note, load_catalogue

LUSSO_HEADER = "Name z logFUV e_logFUV logFX e_logFX Group"
LUSSO_ROW = "q{} {} -27.0 0.01 -31.3 0.03 5"


def _write(tmp_path, lines, name="cat.txt"):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return path


def test_valid_table_loads(tmp_path):
  path = _write(tmp_path, [LUSSO_HEADER] + [LUSSO_ROW.format(i, 0.5 + i) for i in range(3)])
  probe, cat = load_catalogue(path)
  assert probe == "qso"
  np.testing.assert_allclose(cat.z, [0.5, 1.5, 2.5])
  np.testing.assert_allclose(cat.y, -31.3)
  assert cat.size == 3


@pytest.mark.parametrize("bad_line, message", [
    ("q9 0.7 -27.0 0.01 abc 0.03 5", "line 3: column 'logFX' is not a number: 'abc'"),
    ("q9 -0.2 -27.0 0.01 -31.0 0.03 5", "line 3: negative redshift"),
    ("q9 0.7 -27.0 0.01 nan 0.03 5", "line 3: column 'logFX' is not finite"),
    ("q9 0.7 -27.0", "line 3: 3 fields, the header has 7"),
])
def test_malformed_rows_name_the_line(tmp_path, bad_line, message):
  path = _write(tmp_path, [LUSSO_HEADER, LUSSO_ROW.format(0, 0.5), bad_line])
  with pytest.raises(ValueError, match=message):
    load_catalogue(path)


def test_missing_column_and_unknown_format(tmp_path):
  konus = _write(tmp_path, ["GRB,z,Ep_obs,Ep_obs_errlo,Sbolo_derived", "A,1.0,100,10,1e-5"],
                 "kw.csv")
  with pytest.raises(ValueError, match=r"line 1: missing column\(s\) \['Ep_obs_errhi'"):
    load_catalogue(konus)
  other = _write(tmp_path, ["a b c", "1 2 3"], "other.txt")
  with pytest.raises(ValueError, match="unrecognised catalogue header"):
    load_catalogue(other)
  with pytest.raises(FileNotFoundError):
    load_catalogue(tmp_path / "absent.txt")


def test_konus_wind_empty_peak_energy_is_dropped_but_blank_redshift_is_an_error(tmp_path):
  header = ("GRB,z,Ep_obs,Ep_obs_errlo,Ep_obs_errhi,Sbolo_derived,Sbolo_derived_errlo,"
            "Sbolo_derived_errhi")
  rows = ["A,1.0,100,10,12,1e-5,1e-6,1e-6", "B,2.0,,,,2e-5,1e-6,1e-6"]
  probe, cat = load_catalogue(_write(tmp_path, [header] + rows, "kw.csv"))
  assert probe == "grb" and cat.size == 1
  np.testing.assert_allclose(cat.y, np.log10(200.0))  # E_p,i = (1 + z) E_p,obs
  np.testing.assert_allclose(cat.sigma_y, 11 / (100 * np.log(10)))
  with pytest.raises(ValueError, match="line 3: column 'z' is empty"):
    load_catalogue(_write(tmp_path, [header, rows[0], "C,,100,10,12,1e-5,1e-6,1e-6"], "kw2.csv"))


def test_real_catalogues_load(cosmo_data):
  probe, qso = load_catalogue(cosmo_data / "lusso2020/lusso2020_table3.txt")
  assert probe == "qso" and qso.size == 2421
  assert qso.z.min() == pytest.approx(0.009) and qso.z.max() == pytest.approx(7.5413)
  probe, grb = load_catalogue(cosmo_data / "grb/konus_wind/kw_merged_amati_ready.csv")
  assert probe == "grb" and grb.size == 316  # 317 bursts, one power law without E_p
  probe, sne = load_catalogue(cosmo_data / "pantheonplus/Pantheon+SH0ES_distances.txt")
  assert probe == "sne" and sne.z.min() > 0.01


def test_binning():
  z = np.arange(14, 0, -1) / 2.0  # unsorted input
  bins = equal_count_bins(z, 3)
  assert [b.n for b in bins] == [5, 5, 4]
  assert bins[0].z_eff_mean == pytest.approx(1.5)
  assert np.sum([b.weights for b in bins], axis=0).tolist() == [1.0] * 14
  cuts = redshift_cuts(z, [0.0, 2.4], zmax=4.5)
  assert [c.n for c in cuts] == [9, 5]
  assert cuts[1].z_eff_median == pytest.approx(3.5)
  with pytest.raises(ValueError, match="has 1 objects"):
    redshift_cuts(z, [6.6])
  assert parse_bins("equal:4") == 4
  with pytest.raises(ValueError, match="equal:N"):
    parse_bins("quantile:4")


def test_catalogue_note_says_which_sample_and_whether_it_is_the_papers(cosmo_data, tmp_path):
  """Reports carry the sample: the GRB default is Konus-Wind, not the paper's A118."""
  grb = catalogue_note(cosmo_data.parent / DEFAULT_FILES["grb"])
  assert grb.startswith("Konus-Wind") and "NOT arXiv 2405.19953's A118" in grb
  assert catalogue_note(cosmo_data.parent / DEFAULT_FILES["qso"]).startswith("Lusso et al. 2020")
  with pytest.raises(ValueError, match="line 1: unrecognised catalogue header"):
    catalogue_note(_write(tmp_path, ["a b c", "1 2 3"]))
