import numpy as np
import pytest

from graph_al.graph import make_graph


def random_graph(n, p, seed, num_classes=3):
  rng = np.random.default_rng(seed)
  upper = np.triu(rng.random((n, n)) < p, k=1)
  return make_graph(f"er{seed}", np.argwhere(upper), np.eye(n, dtype=np.float32),
                    rng.integers(0, num_classes, n))


@pytest.fixture
def small_graphs():
  """Dense-ish random graphs (so SCAN finds clusters) plus planted cliques."""
  graphs = [random_graph(n, p, seed) for seed, (n, p) in enumerate(
      [(12, 0.4), (20, 0.3), (30, 0.2), (40, 0.15), (25, 0.5)])]
  blocks = np.repeat(np.arange(4), 8)
  rng = np.random.default_rng(9)
  adj = np.triu(np.where(blocks[:, None] == blocks[None], rng.random((32, 32)) < 0.8,
                         rng.random((32, 32)) < 0.05), k=1)
  graphs.append(make_graph("planted", np.argwhere(adj), np.eye(32), blocks))
  return graphs
