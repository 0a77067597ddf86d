"""bench_graph_al on a machine without the Planetoid files."""

import pytest

from benchmarks.bench_graph_al import benchmark_graphs


def test_absent_planetoid_runs_the_sbm_once_under_its_own_name(tmp_path, monkeypatch):
  import jaxrepro.data
  monkeypatch.setenv("JAXREPRO_DATA", str(tmp_path))
  monkeypatch.setattr(jaxrepro.data, "shared_data_dir", lambda: tmp_path / "absent")
  graphs, notes = benchmark_graphs()
  assert list(graphs) == ["sbm"]  # never labelled cora / citeseer, nor compared with the paper
  graph, source = graphs["sbm"]
  assert source.describe() == "embedded:sbm" and graph.name == "sbm"
  assert len(notes) == 2 and all("replaced by the embedded SBM" in n for n in notes)


def test_present_planetoid_files_keep_their_names():
  from jaxrepro.data import resolve_data
  try:
    for name in ("cora", "citeseer"):
      resolve_data(f"graphs/planetoid/ind.{name}.graph")
  except FileNotFoundError as missing:
    pytest.skip(f"Planetoid files absent ({missing}); set JAXREPRO_DATA")
  graphs, notes = benchmark_graphs()
  assert list(graphs) == ["cora", "citeseer"] and notes == []
  assert graphs["cora"][0].summary()["nodes"] == 2708
  assert graphs["citeseer"][0].summary()["nodes"] == 3327
