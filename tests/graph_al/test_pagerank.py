import jax.numpy as jnp
import networkx as nx
import numpy as np

from graph_al.datasets import karate_graph
from graph_al.graph import make_graph
from graph_al.pagerank import graph_pagerank, pagerank


def _networkx(g, alpha, tol=1e-10):
  scores = nx.pagerank(g, alpha=alpha, tol=tol, max_iter=10_000, weight=None)
  return np.array([scores[v] for v in sorted(g.nodes)])


def test_undirected_pagerank_matches_networkx_with_isolated_nodes():
  rng = np.random.default_rng(0)
  upper = np.triu(rng.random((60, 60)) < 0.05, k=1)
  upper[:, :3] = upper[:3, :] = False          # three isolated (dangling) nodes
  graph = make_graph("g", np.argwhere(upper), np.eye(60), np.zeros(60, int))
  for alpha in (0.85, 0.95):
    np.testing.assert_allclose(graph_pagerank(graph, alpha, tol=1e-9, max_iter=2000),
                               _networkx(graph.to_networkx(), alpha), atol=1e-6)
  karate = karate_graph()
  # Same stopping rule (sum |x' - x| < N tol, tol 1e-6) as networkx: same iterate.
  np.testing.assert_allclose(graph_pagerank(karate), _networkx(karate.to_networkx(), 0.95, 1e-6),
                             atol=1e-6)


def test_directed_pagerank_with_dangling_nodes_matches_networkx():
  g = nx.gnp_random_graph(80, 0.04, seed=3, directed=True)
  g.add_nodes_from(range(80))
  edges = np.array(g.edges, np.int32)
  assert (np.bincount(edges[:, 0], minlength=80) == 0).any()  # dangling nodes present
  scores, iterations = pagerank(jnp.asarray(edges[:, 0]), jnp.asarray(edges[:, 1]), 80, 0.9,
                                1e-10, 5000)
  np.testing.assert_allclose(np.asarray(scores), _networkx(g, 0.9), atol=1e-6)
  assert 0 < int(iterations) < 5000
  assert abs(float(scores.sum()) - 1.0) < 1e-5


def test_part_pagerank_equals_networkx_on_each_induced_subgraph():
  from graph_al.pagerank import part_pagerank
  rng = np.random.default_rng(1)
  upper = np.triu(rng.random((70, 70)) < 0.08, k=1)
  graph = make_graph("g", np.argwhere(upper), np.eye(70), np.zeros(70, int))
  g = graph.to_networkx()
  # Parts of uneven sizes (one a single node, so dangling), some nodes left out.
  part = rng.integers(-1, 5, 70)
  part[part == 4] = -1
  part[7] = 4
  scores = np.asarray(part_pagerank(*graph.device_edges, jnp.asarray(part), 70, 0.95, 1e-9,
                                    2000))
  for p in range(5):
    nodes = np.flatnonzero(part == p)
    sub = g.subgraph(nodes.tolist())
    assert p == 4 or any(sub.degree(v) == 0 for v in sub)   # dangling nodes inside parts
    expected = nx.pagerank(sub, alpha=0.95, tol=1e-10, max_iter=10_000, weight=None)
    np.testing.assert_allclose(scores[nodes], [expected[v] for v in nodes], atol=1e-6)
  assert np.all(scores[part < 0] == 0)
  # One part holding every node is the whole graph's PageRank.
  np.testing.assert_allclose(
      np.asarray(part_pagerank(*graph.device_edges, jnp.zeros(70, jnp.int32), 70, 0.95)),
      graph_pagerank(graph), atol=1e-6)
