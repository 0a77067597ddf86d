"""The cosmo benchmark's report notes follow the data its sections actually read."""
from benchmarks.bench_cosmo import _data_notes


def test_mock_run_does_not_describe_the_shared_data():
  notes = " ".join(_data_notes({"qso": "embedded:mock-qso(n=1)", "grb": "embedded:mock-grb(n=1)"}))
  assert "QSO and GRB: embedded mock" in notes
  assert "Konus-Wind" not in notes and "DESI" not in notes


def test_shared_data_run_names_its_catalogues_and_caveats():
  notes = " ".join(_data_notes({"qso": "/data/cosmo/qso.txt", "grb": "/data/cosmo/grb.txt",
                                "desi_bao": "/data/cosmo/desi.txt"}))
  assert "Konus-Wind" in notes and "DESI DR2 BAO" in notes and "mock" not in notes
