"""Graph data: Planetoid raw pickles, gnn-benchmark ``.npz``, karate club, stochastic block model.

- Planetoid (Yang et al. 2016, kimiyoung/planetoid): ``ind.<name>.{x,y,tx,ty,allx,ally,graph,
  test.index}`` are Python-2 pickles. They are read with :class:`RestrictedUnpickler`, which
  admits only the numpy/scipy/builtin types those files contain, so a crafted file cannot run
  code. Assembly follows PyTorch Geometric's ``read_planetoid_data`` (what the SPA paper used):
  test rows are reordered by ``test.index``; CiteSeer's 15 test ids that have no features get a
  zero feature row and class 0, as in PyG, giving 3,327 nodes.
- gnn-benchmark ``.npz`` (Shchur et al. 2018): CSR adjacency and attributes, integer labels.
- Embedded defaults: Zachary's karate club (networkx; labels = the two factions, one-hot
  node-id features as in Kipf & Welling's demo) and :func:`sbm_graph`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from graph_al.graph import Graph, make_graph
from jaxrepro.data import DataSource, resolve_data

PLANETOID_NAMES = ("cora", "citeseer")
EMBEDDED_NAMES = ("karate", "sbm")


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles only plain containers, numpy arrays and scipy CSR matrices."""

  _ALLOWED = {
      ("numpy", "ndarray"), ("numpy", "dtype"),
      ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
      ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
      ("scipy.sparse", "csr_matrix"),
      ("collections", "defaultdict"), ("__builtin__", "list"), ("builtins", "list"),
      # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1").
      ("_codecs", "encode"),
  }

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a data type "
                                   "that Planetoid files contain")
    if name == "_reconstruct":
      from numpy._core.multiarray import _reconstruct
      return _reconstruct
    if name == "csr_matrix":
      return sp.csr_matrix
    if name == "list":
      return list
    if name == "encode":
      import codecs
      return codecs.encode
    return super().find_class(module, name)


def restricted_load(data: bytes):
  """Loads a (Python 2 or 3) pickle through :class:`RestrictedUnpickler`."""
  return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def load_planetoid(directory: str | Path, name: str) -> Graph:
  """Reads ``ind.<name>.*`` from ``directory``."""
  directory = Path(directory)
  parts = {}
  for part in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
    path = directory / f"ind.{name}.{part}"
    if not path.exists():
      raise FileNotFoundError(f"Planetoid file {path} is missing")
    parts[part] = restricted_load(path.read_bytes())
  test_index = np.loadtxt(directory / f"ind.{name}.test.index", dtype=np.int64, ndmin=1)
  allx, tx = sp.csr_matrix(parts["allx"]), sp.csr_matrix(parts["tx"])
  ally, ty = np.asarray(parts["ally"]), np.asarray(parts["ty"])
  # As Kipf's and PyG's loaders: tx rows fill the sorted test ids (ids without a row, in
  # CiteSeer, stay zero), then row test_index[i] takes the row of sorted_index[i].
  sorted_index = np.sort(test_index)
  offset = sorted_index[0]
  span = sorted_index[-1] - offset + 1
  tx_full = sp.lil_matrix((span, tx.shape[1]), dtype=np.float32)
  tx_full[sorted_index - offset] = tx
  ty_full = np.zeros((span, ty.shape[1]), ty.dtype)
  ty_full[sorted_index - offset] = ty
  features = sp.vstack([allx, tx_full.tocsr()]).tocsr()
  one_hot = np.vstack([ally, ty_full])
  permutation = np.arange(features.shape[0])
  permutation[test_index] = sorted_index
  features, labels = features[permutation], one_hot[permutation].argmax(axis=1)
  graph_dict = parts["graph"]
  edges = np.array([(u, v) for u, nbrs in graph_dict.items() for v in nbrs], np.int64)
  return make_graph(name, edges, features, labels, num_nodes=features.shape[0])


def load_npz(path: str | Path) -> Graph:
  """Reads a gnn-benchmark ``.npz`` (no pickles: ``allow_pickle=False``)."""
  path = Path(path)
  with np.load(path, allow_pickle=False) as f:
    required = {"adj_data", "adj_indices", "adj_indptr", "adj_shape", "labels"}
    missing = required - set(f.files)
    if missing:
      raise ValueError(f"{path}: not a gnn-benchmark npz, missing {sorted(missing)}")
    adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]),
                        shape=tuple(f["adj_shape"])).tocoo()
    if "attr_data" in f.files:
      features = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]),
                               shape=tuple(f["attr_shape"]))
    else:
      features = sp.identity(adj.shape[0], format="csr", dtype=np.float32)
    labels = f["labels"]
  return make_graph(path.stem, np.stack([adj.row, adj.col], 1), features, labels,
                    num_nodes=adj.shape[0])


def karate_graph() -> Graph:
  """Zachary's karate club: 34 members, 78 friendships, the two factions as classes."""
  import networkx as nx
  g = nx.karate_club_graph()
  labels = np.array([0 if g.nodes[v]["club"] == "Mr. Hi" else 1 for v in g.nodes], np.int32)
  return make_graph("karate", np.array(g.edges, np.int64), sp.identity(34, format="csr"),
                    labels)


def sbm_graph(num_blocks: int = 5, block_size: int = 40, p_in: float = 0.5,
              p_out: float = 0.01, feature_dim: int = 32, feature_noise: float = 3.0,
              seed: int = 0) -> Graph:
  """A stochastic block model with class-dependent Gaussian features.

  Nodes in the same block connect with probability ``p_in``, across blocks with ``p_out``;
  block ``c``'s features are ``N(m_c, feature_noise^2 I)`` with ``m_c ~ N(0, I)``, so
  features alone are weakly informative and the structure carries the rest. The defaults
  (5 blocks of 40, p_in 0.5, p_out 0.01: mean degree about 21.5, 90% within-block edges)
  make blocks dense enough for SCAN at eps = 0.5 to find them.
  """
  rng = np.random.default_rng(seed)
  n = num_blocks * block_size
  labels = np.repeat(np.arange(num_blocks), block_size).astype(np.int32)
  probs = np.where(labels[:, None] == labels[None, :], p_in, p_out)
  upper = np.triu(rng.random((n, n)) < probs, k=1)
  means = rng.normal(size=(num_blocks, feature_dim))
  features = means[labels] + feature_noise * rng.normal(size=(n, feature_dim))
  return make_graph("sbm", np.argwhere(upper), features.astype(np.float32), labels)


def load_graph(spec: str | None = None, *, seed: int = 0) -> tuple[Graph, DataSource]:
  """Resolves ``--data``: a name (cora, citeseer, karate, sbm), a ``.npz`` file, or a
  Planetoid directory/``ind.<name>.graph`` path; ``None`` means Cora, else karate."""
  if spec in EMBEDDED_NAMES:
    graph = karate_graph() if spec == "karate" else sbm_graph(seed=seed)
    return graph, DataSource("embedded", None, spec)
  if spec is None or spec in PLANETOID_NAMES:
    name = spec or "cora"
    embedded = "karate" if spec is None else None
    source = resolve_data(f"graphs/planetoid/ind.{name}.graph", embedded=embedded)
    if source.origin == "embedded":
      return karate_graph(), source
    return load_planetoid(source.path.parent, name), source
  source = resolve_data("", explicit=spec)
  path = source.path
  if path.suffix == ".npz":
    return load_npz(path), source
  if path.is_file() and path.name.startswith("ind."):
    return load_planetoid(path.parent, path.name.split(".")[1]), source
  if path.is_dir():
    names = sorted({p.name.split(".")[1] for p in path.glob("ind.*.graph")})
    if len(names) == 1:
      return load_planetoid(path, names[0]), source
    raise ValueError(f"--data {spec}: directory holds Planetoid sets {names}; name one file "
                     "(e.g. ind.cora.graph)")
  raise ValueError(f"--data {spec}: expected cora, citeseer, karate, sbm, a .npz file or a "
                   "Planetoid ind.<name>.graph path")
