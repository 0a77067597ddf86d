import networkx as nx
import numpy as np
import pytest

from graph_al.datasets import karate_graph
from graph_al.reference import (scan_networkx, scan_paper_networkx,
                                structural_similarity_networkx)
from graph_al.graph import make_graph
from graph_al.scan import EPS_GRID, eps_squared_floor, scan, structural_similarity


def _disjoint_union(graphs):
  """All ``graphs`` side by side as one graph: SCAN clusters each component on its own, so
  one compiled program covers every test graph."""
  offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
  edges = np.concatenate([np.stack([g.senders, g.receivers], 1) + o
                          for g, o in zip(graphs, offsets)])
  n = int(offsets[-1])
  return make_graph("union", edges, np.eye(n, dtype=np.float32),
                    np.concatenate([g.labels for g in graphs]))


def _tie_graph():
  """Nodes 0 and 1: degree 9 each (closed 10) with 5 common neighbours, so sigma = 0.7."""
  edges = [(0, 1)] + [(u, c) for u in (0, 1) for c in range(2, 7)]
  edges += [(0, x) for x in (7, 8, 9)] + [(1, x) for x in (10, 11, 12)]
  return make_graph("tie", np.array(edges), np.eye(13), np.zeros(13, int))


@pytest.fixture
def union_graph(small_graphs):
  return _disjoint_union(small_graphs + [karate_graph(), _tie_graph()])


def _labels_from_clusters(clusters, n):
  labels = np.full(n, -1)
  for i, cluster in enumerate(clusters):
    labels[cluster] = i
  return labels


def test_structural_similarity_matches_set_formula(union_graph):
  graph = union_graph
  g = graph.to_networkx()
  expected = [structural_similarity_networkx(g, u, v)
              for u, v in zip(graph.senders.tolist(), graph.receivers.tolist())]
  np.testing.assert_allclose(structural_similarity(graph), expected, rtol=1e-12)


@pytest.mark.parametrize("eps,mu,count_self", [(0.5, 3, False), (0.4, 2, False),
                                               (0.7, 2, False), (0.7, 1, False),
                                               (0.3, 4, False), (0.5, 3, True), (0.7, 2, True),
                                               (0.3, 4, True)])
def test_scan_equals_sequential_bruteforce_for_each_visiting_order(union_graph, eps, mu,
                                                                   count_self):
  graph = union_graph
  g = graph.to_networkx()
  for seed in range(3):
    order = np.random.default_rng(seed).permutation(graph.num_nodes)
    result = scan(graph, eps, mu, count_self=count_self, order=order)
    expected = scan_networkx(g, eps, mu, order.tolist(), count_self=count_self)
    np.testing.assert_array_equal(result.labels, _labels_from_clusters(expected, graph.num_nodes))
    assert result.num_clusters == len(expected) > 0   # dense enough to grow clusters
    assert result.eps == eps


def test_counting_self_differs_from_cdlib_rule_and_equals_it_with_mu_lowered(union_graph):
  graph = union_graph
  g = graph.to_networkx()
  order = np.random.default_rng(5).permutation(graph.num_nodes).tolist()
  xu = scan_networkx(g, 0.5, 3, order, count_self=True)
  assert xu != scan_networkx(g, 0.5, 3, order)
  assert xu == scan_networkx(g, 0.5, 2, order)


def _networkx_modularity(g, clusters):
  """Modularity with every unclustered node a community of its own, by networkx."""
  clustered = {v for c in clusters for v in c}
  return nx.community.modularity(g, [set(c) for c in clusters] +
                                 [{v} for v in g.nodes if v not in clustered])


@pytest.mark.parametrize("count_self", [False, True])
def test_auto_eps_maximizes_modularity_over_the_grid(union_graph, count_self):
  graph = union_graph
  g = graph.to_networkx()
  order = np.random.default_rng(2).permutation(graph.num_nodes)
  result = scan(graph, "auto", 3, count_self=count_self, order=order)
  scores = [_networkx_modularity(g, scan_networkx(g, eps, 3, order.tolist(), count_self))
            for eps in EPS_GRID]
  best = int(np.argmax(scores))
  assert result.eps == EPS_GRID[best]
  assert 0 < best < EPS_GRID.size - 1   # an interior maximum, not a grid edge
  expected = scan_networkx(g, EPS_GRID[best], 3, order.tolist(), count_self)
  np.testing.assert_array_equal(result.labels, _labels_from_clusters(expected, graph.num_nodes))
  # Another grid value whose modularity is lower by more than float32 rounding is not chosen.
  assert max(scores) - sorted(set(np.round(scores, 6)))[-2] > 1e-5
  with pytest.raises(ValueError, match="auto"):
    scan(graph, "best", 3)


def test_cores_hubs_and_outliers_follow_their_definitions(union_graph):
  graph = union_graph
  g = graph.to_networkx()
  result = scan(graph, 0.4, 2, seed=1)
  assert result.is_hub.any() and result.is_outlier.any()
  for v in g.nodes:
    eps_neighbours = [u for u in g.neighbors(v)
                      if structural_similarity_networkx(g, v, u) >= 0.4]
    assert result.is_core[v] == (len(eps_neighbours) >= 2)
    if result.labels[v] < 0:
      touching = {result.labels[u] for u in g.neighbors(v) if result.labels[u] >= 0}
      assert result.is_hub[v] == (len(touching) >= 2)
      assert result.is_outlier[v] == (len(touching) < 2)
    else:
      assert not result.is_hub[v]


def test_scan_is_deterministic_given_seed_and_rejects_bad_order(small_graphs):
  graph = small_graphs[-1]
  np.testing.assert_array_equal(scan(graph, seed=3).labels, scan(graph, seed=3).labels)
  with pytest.raises(ValueError, match="permutation"):
    scan(graph, order=np.zeros(graph.num_nodes, int))


def test_planted_cliques_are_recovered(small_graphs):
  graph = small_graphs[-1]
  result = scan(graph, 0.5, 3, seed=0)
  assert result.num_clusters == 4
  clustered = result.labels >= 0
  # Each found cluster is one planted block.
  for c in range(4):
    assert len(set(graph.labels[result.labels == c])) == 1
  assert clustered.mean() > 0.9


def test_similarity_exactly_eps_counts_as_eps_neighbour(union_graph):
  # The tie component (last 13 nodes): sigma = 7 / 10 = 0.7 exactly on its first edge, which
  # float32 ``0.7 ** 2 = 0.49000001`` would miss.
  first = union_graph.num_nodes - 13
  edge = np.flatnonzero((union_graph.senders == first) & (union_graph.receivers == first + 1))
  assert structural_similarity(union_graph)[edge] == 0.7
  for eps in (0.3, 0.4, 0.5, 0.7, 0.6180339887):
    floor = eps_squared_floor(eps)
    assert floor.dtype == np.float32 and float(floor) <= eps**2 < float(
        np.nextafter(floor, np.float32(1)))
  order = np.arange(union_graph.num_nodes)
  result = scan(union_graph, 0.7, 1, order=order)
  expected = scan_networkx(union_graph.to_networkx(), 0.7, 1, order.tolist())
  assert [first, first + 1] in expected
  np.testing.assert_array_equal(result.labels,
                                _labels_from_clusters(expected, union_graph.num_nodes))


@pytest.mark.parametrize("eps,mu", [(0.5, 3), (0.3, 1), (0.4, 2), (0.6, 2), (0.25, 3)])
def test_paper_semantics_equals_bruteforce_eq_3_4(union_graph, eps, mu):
  graph = union_graph
  expected = scan_paper_networkx(graph.to_networkx(), eps, mu)
  result = scan(graph, eps, mu, semantics="paper", seed=4)
  np.testing.assert_array_equal(result.labels, _labels_from_clusters(expected, graph.num_nodes))
  assert result.num_clusters == len(expected) > 0
  assert all(len(c) >= 2 for c in expected)
  # No visiting order is involved.
  np.testing.assert_array_equal(scan(graph, eps, mu, semantics="paper", seed=9).labels,
                                result.labels)


def test_paper_semantics_on_a_hand_made_graph():
  # Two triangles {0, 1, 2} and {2, 3, 4} sharing node 2, plus the edge 4-5.
  # Open neighbourhoods: N(0) = {1, 2}, N(1) = {0, 2}, N(2) = {0, 1, 3, 4}, N(3) = {2, 4},
  # N(4) = {2, 3, 5}, N(5) = {4}. Shared counts and S: 0-1: 1 ({2}), 1/2; 0-2, 1-2, 2-3: 1,
  # 1/sqrt(8) = 0.354; 2-4: 1 ({3}), 1/sqrt(12) = 0.289; 3-4: 1, 1/sqrt(6) = 0.408;
  # 4-5: 0, 0.
  edges = np.array([(0, 1), (0, 2), (1, 2), (2, 3), (2, 4), (3, 4), (4, 5)])
  graph = make_graph("hand", edges, np.eye(6), np.zeros(6, int))
  def labels(eps, mu):
    return scan(graph, eps, mu, semantics="paper").labels.tolist()
  assert labels(0.5, 1) == [0, 0, -1, -1, -1, -1]           # only 0-1 reaches 1/2
  assert labels(0.4, 1) == [0, 0, -1, 1, 1, -1]             # and 3-4 (0.408)
  # eps 0.35: 0-1, 0-2, 1-2, 2-3 and 3-4 link; 2-4 (0.289) does not, but 2 and 4 join
  # through 3: one community of five; 5 (shared count 0) stays out.
  assert labels(0.35, 1) == [0, 0, 0, 0, 0, -1]
  assert labels(0.35, 2) == [-1] * 6                        # no edge shares 2 neighbours
  result = scan(graph, 0.4, 1, semantics="paper")
  # Node 2 touches both communities: a hub; 5 touches one: an outlier.
  assert result.is_hub.tolist() == [False, False, True, False, False, False]
  assert result.is_outlier.tolist() == [False] * 5 + [True]
  with pytest.raises(ValueError, match="semantics"):
    scan(graph, semantics="xu")
  with pytest.raises(ValueError, match="count_self"):
    scan(graph, semantics="paper", count_self=True)
