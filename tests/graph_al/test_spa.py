import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graph_al.datasets import karate_graph
from graph_al.reference import scan_networkx
from graph_al.scan import visiting_order
from graph_al.spa import spa_from_scores, spa_query
from tests.graph_al.test_scan import _disjoint_union


def _notebook_selection(pagerank, communities, budget):
  """The public notebook's loop (SCANPageRankOptimized.query), transcribed with lists, on
  ``communities`` in SCAN's discovery order."""
  # cdlib's Clustering.__init__: ``sorted(communities, key=len, reverse=True)``.
  communities = sorted(communities, key=len, reverse=True)
  selected, remaining = [], budget
  for community in communities:
    ranked = sorted(community, key=lambda v: (-pagerank[v], v))
    quota = max(1, remaining // len(communities))
    selected.extend(ranked[:quota])
    remaining -= quota
  if len(selected) < budget:
    order = sorted(range(len(pagerank)), key=lambda v: (-pagerank[v], v))
    selected.extend([v for v in order if v not in selected][:budget - len(selected)])
  return selected[:budget]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 60), k=st.integers(0, 12), data=st.data())
def test_selection_is_exactly_budget_distinct_nodes(n, k, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
  pagerank = rng.random(n)
  labels = rng.integers(-1, k, n) if k else np.full(n, -1)
  budget = data.draw(st.integers(1, n))
  for variant, head_order, singletons in (("paper", "pagerank", False), ("paper", "size", False),
                                          ("public", "pagerank", False),
                                          ("paper", "pagerank", True), ("paper", "size", True)):
    chosen = spa_from_scores(pagerank, labels, budget, variant, head_order, singletons)
    assert chosen.shape == (budget,) and np.unique(chosen).size == budget
    assert chosen.min() >= 0 and chosen.max() < n


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 60), k=st.integers(1, 12), data=st.data())
def test_public_variant_matches_the_notebook_loop(n, k, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
  pagerank = rng.random(n)
  labels = rng.integers(-1, k, n)
  budget = data.draw(st.integers(1, n))
  communities = [np.flatnonzero(labels == c).tolist() for c in range(k)]
  communities = [c for c in communities if c]
  ids = np.full(n, -1)
  for i, c in enumerate(communities):   # renumber so community ids are in discovery order
    ids[c] = i
  np.testing.assert_array_equal(spa_from_scores(pagerank, ids, budget, "public"),
                                _notebook_selection(pagerank, communities, budget))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 60), k=st.integers(0, 12), data=st.data())
def test_paper_variant_matches_algorithm_1_written_as_loops(n, k, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
  pagerank = rng.integers(0, 8, n).astype(float)   # many ties: broken by node id
  labels = rng.integers(-1, k, n) if k else np.full(n, -1)
  budget = data.draw(st.integers(1, n))
  def key(v):
    return (-pagerank[v], v)
  heads = [min(np.flatnonzero(labels == c).tolist(), key=key) for c in set(labels.tolist()) - {-1}]
  for singletons in (False, True):
    # Hubs and outliers as one-node communities: each is a head of its own.
    candidates = heads + (np.flatnonzero(labels < 0).tolist() if singletons else [])
    expected = sorted(candidates, key=key)[:budget]
    expected += [v for v in sorted(range(n), key=key) if v not in expected][:budget - len(expected)]
    np.testing.assert_array_equal(spa_from_scores(pagerank, labels, budget,
                                                  singletons=singletons), expected)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 60), k=st.integers(0, 12), data=st.data())
def test_size_head_order_matches_largest_communities_first_written_as_loops(n, k, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
  pagerank = rng.integers(0, 8, n).astype(float)   # ties in PageRank and in community sizes
  labels = rng.integers(-1, k, n) if k else np.full(n, -1)
  budget = data.draw(st.integers(1, n))
  def key(v):
    return (-pagerank[v], v)
  communities = [np.flatnonzero(labels == c).tolist() for c in set(labels.tolist()) - {-1}]
  heads = [(len(c), min(c, key=key)) for c in communities]
  heads = [h for _, h in sorted(heads, key=lambda sh: (-sh[0], key(sh[1])))]
  expected = heads[:budget]
  expected += [v for v in sorted(range(n), key=key) if v not in expected][:budget - len(expected)]
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, budget, head_order="size"),
                                expected)


def test_size_head_order_on_a_hand_worked_example():
  pagerank = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.8, 0.05, 0.7, 0.2])
  labels = np.array([0, 0, 1, 1, 1, -1, 2, -1, 2])
  # Sizes 2, 3, 2; heads 0, 2, 8. Largest first: 2; then the size-2 tie by head PageRank: 0
  # (0.9) before 8 (0.2); then the global fill: 5, 7.
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 2, head_order="size"), [2, 0])
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 5, head_order="size"),
                                [2, 0, 8, 5, 7])
  # The default keeps the heads of highest PageRank instead.
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 2), [0, 2])
  # With hubs and outliers as communities of their own, 5 (0.8) is a head and beats 2 (0.5).
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 3, singletons=True), [0, 5, 7])
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 5, head_order="size",
                                                singletons=True), [2, 0, 8, 5, 7])


def test_paper_variant_takes_each_community_head_then_global_pagerank():
  pagerank = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.8, 0.05, 0.7])
  labels = np.array([0, 0, 1, 1, 1, -1, 2, -1])
  # Heads: 0 (community 0), 2 (community 1), 6 (community 2); then 5, 7 by PageRank.
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 5), [0, 2, 6, 5, 7])
  # Fewer slots than communities: the heads with the highest PageRank.
  np.testing.assert_array_equal(spa_from_scores(pagerank, labels, 2), [0, 2])


def test_spa_query_on_karate_uses_scan_communities():
  graph = karate_graph()
  query = spa_query(graph, 8, seed=0)
  clusters = scan_networkx(graph.to_networkx(), 0.5, 3, visiting_order(34, 0).tolist())
  assert query.clusters.num_clusters == len(clusters) > 0
  for c, members in enumerate(clusters):
    assert set(np.flatnonzero(query.clusters.labels == c)) == set(members)
  heads = {max(members, key=lambda v: (query.pagerank[v], -v)) for members in clusters}
  assert heads <= set(query.selected.tolist())


def test_bad_budget_or_variant_is_rejected():
  with pytest.raises(ValueError, match="budget"):
    spa_from_scores(np.ones(3), np.zeros(3, int), 4)
  with pytest.raises(ValueError, match="variant"):
    spa_from_scores(np.ones(3), np.zeros(3, int), 2, "other")
  with pytest.raises(ValueError, match="head_order"):
    spa_from_scores(np.ones(3), np.zeros(3, int), 2, head_order="other")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 60), k=st.integers(0, 12), data=st.data())
def test_head_and_fill_scores_match_algorithm_1_written_as_loops(n, k, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
  pagerank = rng.integers(0, 8, n).astype(float)   # many ties: broken by node id
  head_scores = rng.integers(0, 8, n).astype(float)
  fill_table = rng.integers(0, 8, n).astype(float)
  labels = rng.integers(-1, k, n) if k else np.full(n, -1)
  budget = data.draw(st.integers(1, n))
  calls = []
  def fill_scores(chosen):
    calls.append(sorted(chosen.tolist()))
    return fill_table
  # Step 6: each community's head by its own scores; k > b: the heads of highest global
  # PageRank; steps 10-12: the other nodes by the fill scores.
  heads = [min(np.flatnonzero(labels == c).tolist(), key=lambda v: (-head_scores[v], v))
           for c in set(labels.tolist()) - {-1}]
  expected = sorted(heads, key=lambda v: (-pagerank[v], v))[:budget]
  expected += sorted(set(range(n)) - set(expected),
                     key=lambda v: (-fill_table[v], v))[:budget - len(expected)]
  chosen = spa_from_scores(pagerank, labels, budget, head_scores=head_scores,
                           fill_scores=fill_scores)
  np.testing.assert_array_equal(chosen, expected)
  assert calls == ([sorted(expected[:len(heads)])] if len(heads) < budget else [])


def _networkx_algorithm_1(g, labels, global_pagerank, budget):
  """Algorithm 1 with networkx: each community's head by the PageRank of its induced
  subgraph, heads kept by global PageRank when they outnumber the budget, the fill by the
  PageRank of the subgraph induced by the other nodes; ties by node id. Returns the heads
  kept, the fill and the fill's PageRank."""
  def pagerank_of(nodes):
    return nx.pagerank(g.subgraph(nodes), alpha=0.95, tol=1e-10, max_iter=10_000)
  heads = []
  for c in range(labels.max(initial=-1) + 1):
    scores = pagerank_of(np.flatnonzero(labels == c).tolist())
    heads.append(min(scores, key=lambda v: (-scores[v], v)))
  heads = sorted(heads, key=lambda v: (-global_pagerank[v], v))[:budget]
  scores = pagerank_of(sorted(set(g.nodes) - set(heads)))
  return heads, sorted(scores, key=lambda v: (-scores[v], v))[:budget - len(heads)], scores


def test_paper_pagerank_steps_match_networkx_on_induced_subgraphs(small_graphs):
  # One graph of four components (one compiled query program): 4 communities under cdlib's
  # SCAN, 13 under the paper's at eps 0.3, mu 2, so budgets 3 / 12 / 30 both cut the heads
  # (k > b) and fill.
  graph = _disjoint_union(small_graphs[1:4] + [karate_graph()])
  g = graph.to_networkx()
  fills = truncations = 0
  for semantics in ("cdlib", "paper"):
    for budget in (3, 12, 30):
      query = spa_query(graph, budget, eps=0.3, mu=2, semantics=semantics, pagerank="paper",
                        seed=1)
      selected = query.selected.tolist()
      assert len(selected) == len(set(selected)) == budget
      heads, fill, scores = _networkx_algorithm_1(g, query.clusters.labels, query.pagerank,
                                                  budget)
      assert selected[:len(heads)] == heads
      # float32 against float64: at every fill position, the same PageRank up to rounding.
      np.testing.assert_allclose([scores[v] for v in selected[len(heads):]],
                                 [scores[v] for v in fill], atol=1e-6)
      fills += len(fill) > 0
      truncations += query.clusters.num_clusters > budget
  assert fills >= 3 and truncations >= 2


def test_paper_pagerank_options_are_checked():
  graph = karate_graph()
  with pytest.raises(ValueError, match="pagerank"):
    spa_query(graph, 4, pagerank="local")
  with pytest.raises(ValueError, match="variant"):
    spa_query(graph, 4, pagerank="paper", variant="public")
  with pytest.raises(ValueError, match="paper variant"):
    spa_from_scores(np.ones(3), np.zeros(3, int), 2, "public", head_scores=np.ones(3))
