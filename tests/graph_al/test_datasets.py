import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from graph_al.datasets import (RestrictedUnpickler, karate_graph, load_graph, load_npz,
                               load_planetoid, restricted_load, sbm_graph)
from graph_al.graph import make_graph
from jaxrepro.data import shared_data_dir

PLANETOID = shared_data_dir() / "graphs" / "planetoid"
NPZ = shared_data_dir() / "graphs" / "npz"
needs_planetoid = pytest.mark.skipif(not (PLANETOID / "ind.cora.graph").exists(),
                                     reason="Planetoid files not in ../shared/data/graphs")


class _RunsCode:
  def __reduce__(self):
    return (os.system, ("touch pwned_by_pickle",))


def test_restricted_unpickler_rejects_code_and_reads_data(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    restricted_load(pickle.dumps(_RunsCode()))
  assert not (tmp_path / "pwned_by_pickle").exists()
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    restricted_load(pickle.dumps(eval))
  matrix = sp.random(5, 4, density=0.5, format="csr", random_state=0)
  payload = {"m": matrix, "y": np.arange(3)}
  loaded = restricted_load(pickle.dumps(payload, protocol=2))
  np.testing.assert_array_equal(loaded["m"].toarray(), matrix.toarray())
  np.testing.assert_array_equal(loaded["y"], np.arange(3))
  assert issubclass(RestrictedUnpickler, pickle.Unpickler)


@needs_planetoid
@pytest.mark.parametrize("name,nodes,edges,features,classes", [
    ("cora", 2708, 5278, 1433, 7), ("citeseer", 3327, 4552, 3703, 6)])
def test_planetoid_matches_pyg_statistics(name, nodes, edges, features, classes):
  # PyTorch Geometric's Planetoid: Cora 2,708 nodes / 10,556 directed edges, CiteSeer
  # 3,327 / 9,104 (the SPA notebook prints 3327 and 9104).
  graph = load_planetoid(PLANETOID, name)
  assert (graph.num_nodes, graph.num_edges, graph.features.shape[1], graph.num_classes) == \
      (nodes, edges, features, classes)
  assert np.all(graph.senders != graph.receivers)


@needs_planetoid
def test_planetoid_and_npz_cora_agree_on_the_class_histogram():
  planetoid = load_planetoid(PLANETOID, "cora")
  npz = load_npz(NPZ / "cora.npz")
  assert npz.num_nodes == planetoid.num_nodes and npz.num_edges == planetoid.num_edges
  assert sorted(np.bincount(npz.labels)) == sorted(np.bincount(planetoid.labels))
  assert sorted(np.asarray(npz.features.sum(1)).ravel()) == \
      sorted(np.asarray(planetoid.features.sum(1)).ravel())


def test_validation_errors_and_normalization():
  features = np.eye(4)
  with pytest.raises(ValueError, match="out of range"):
    make_graph("g", [[0, 4]], features, np.zeros(4, int))
  with pytest.raises(ValueError, match="labels for"):
    make_graph("g", [[0, 1]], features, np.zeros(3, int), num_nodes=4)
  with pytest.raises(ValueError, match="feature rows"):
    make_graph("g", [[0, 1]], np.eye(3), np.zeros(4, int))
  with pytest.raises(ValueError, match="negative"):
    make_graph("g", [[0, 1]], features, np.array([0, -1, 0, 0]))
  graph = make_graph("g", [[0, 1], [1, 0], [0, 1], [2, 2], [1, 2]], features,
                     np.array([0, 1, 1, 0]))
  assert graph.normalization == {"self_loops_dropped": 1, "duplicate_edges_merged": 1}
  np.testing.assert_array_equal(graph.senders, [0, 1, 1, 2])
  np.testing.assert_array_equal(graph.receivers, [1, 0, 2, 1])
  assert graph.degrees()[3] == 0 and graph.summary()["isolated_nodes"] == 1


def test_embedded_defaults_and_bad_data(tmp_path):
  karate = karate_graph()
  assert (karate.num_nodes, karate.num_edges, karate.num_classes) == (34, 78, 2)
  assert np.bincount(karate.labels).tolist() == [17, 17]
  sbm = sbm_graph(seed=1)
  assert sbm.num_nodes == 5 * 40 and sbm.num_classes == 5
  same = (sbm.labels[sbm.senders] == sbm.labels[sbm.receivers]).mean()
  assert same > 0.8   # p_in >> p_out
  graph, source = load_graph("karate")
  assert source.describe() == "embedded:karate" and graph.num_nodes == 34
  with pytest.raises(FileNotFoundError):
    load_graph(str(tmp_path / "missing.npz"))
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="expected"):
    load_graph(str(tmp_path / "notes.txt"))
