import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graph_al import gnn
from graph_al.datasets import karate_graph, sbm_graph
from graph_al.gnn import GNNConfig
from graph_al.kmeans import kmeans_select
from graph_al.pagerank import graph_pagerank
from graph_al.strategies import (STRATEGIES, QueryConfig, _allocate, _percentile,
                                 _propagated_features, select_nodes)


def test_group_confined_kmeans_picks_one_node_per_blob():
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
  points = np.concatenate([c + 0.3 * rng.normal(size=(25, 2)) for c in centres])
  blob = np.repeat(np.arange(4), 25)
  chosen, _ = kmeans_select(jnp.asarray(points), jnp.zeros(100, jnp.int32),
                            jnp.zeros(4, jnp.int32), jax.random.key(0), 20)
  assert sorted(blob[np.asarray(chosen)]) == [0, 1, 2, 3]
  # Confined: two centres in group 1 (blobs 0-1), two in group 0 (blobs 2-3).
  groups = (blob < 2).astype(np.int32)
  chosen, _ = kmeans_select(jnp.asarray(points), jnp.asarray(groups),
                            jnp.array([0, 0, 1, 1], jnp.int32), jax.random.key(1), 20)
  chosen = np.asarray(chosen)
  assert np.all(groups[chosen] == [0, 0, 1, 1])
  assert sorted(blob[chosen]) == [0, 1, 2, 3]


def test_allocate_is_proportional_and_exact():
  quota = _allocate(np.array([50, 30, 15, 5]), 20)
  assert quota.sum() == 20 and quota.tolist() == [10, 6, 3, 1]
  assert _allocate(np.array([1, 1, 100]), 5).tolist() == [0, 0, 5]
  assert _allocate(np.array([2, 2]), 4).tolist() == [2, 2]


def test_every_strategy_returns_distinct_nodes_per_seed():
  graph = sbm_graph(seed=2)
  quick = GNNConfig(epochs=5)
  for strategy in STRATEGIES:
    chosen = select_nodes(strategy, graph, 12, [0, 1], QueryConfig(age_rounds=2), quick)
    assert chosen.shape == (2, 12), strategy
    assert all(np.unique(row).size == 12 for row in chosen), strategy
  degree = select_nodes("degree", graph, 5, [0])[0]
  assert np.all(graph.degrees()[degree] >= np.sort(graph.degrees())[-5])
  with pytest.raises(ValueError, match="unknown strategy"):
    select_nodes("coreset", graph, 5, [0])
  with pytest.raises(ValueError, match="budget"):
    select_nodes("random", graph, 500, [0])


def test_uncertainty_keeps_random_third_and_adds_unlabelled_nodes():
  graph = karate_graph()
  chosen = select_nodes("uncertainty", graph, 9, [3], gnn_config=GNNConfig(epochs=5))[0]
  initial = np.random.default_rng(3).choice(34, 3, replace=False)
  np.testing.assert_array_equal(chosen[:3], initial)
  assert np.unique(chosen).size == 9


def test_propagated_features_are_two_hop_gcn_smoothing():
  graph = sbm_graph(seed=4)
  a = graph.adjacency().toarray() + np.eye(graph.num_nodes)
  inv_sqrt = 1.0 / np.sqrt(a.sum(1))
  a_hat = inv_sqrt[:, None] * a * inv_sqrt[None, :]
  expected = a_hat @ a_hat @ graph.features.toarray()
  np.testing.assert_allclose(_propagated_features(graph, 2, None), expected, rtol=1e-4,
                             atol=1e-5)


def test_featprop_covers_every_block_of_a_separable_sbm():
  # Two-hop smoothing averages away the feature noise inside each dense block, so k-means
  # with one centre per block finds the blocks (Wu et al. 2019): one query node per class.
  graph = sbm_graph(seed=5)
  chosen = select_nodes("featprop", graph, 5, [0, 1, 2], QueryConfig(kmeans_dims=None))
  for row in chosen:
    assert sorted(graph.labels[row].tolist()) == [0, 1, 2, 3, 4]


def test_age_with_full_centrality_weight_picks_top_pagerank_unlabelled_nodes():
  # basef = 1 makes gamma ~ Beta(1, 0.005), i.e. gamma ~ 1: AGE's score is the centrality
  # percentile alone (Cai et al. 2017, Eq. 5), so each round takes the highest-PageRank nodes.
  graph = sbm_graph(seed=2)   # the graph and GNN config of the test above: no recompilation
  config = QueryConfig(age_rounds=1, age_basef=1.0)
  chosen = select_nodes("age", graph, 12, [0, 1], config, GNNConfig(epochs=5))
  pagerank = graph_pagerank(graph, config.alpha)
  for seed, row in zip([0, 1], chosen):
    initial = np.random.default_rng(seed).choice(graph.num_nodes, 4, replace=False)
    np.testing.assert_array_equal(row[:4], initial)
    rest = np.setdiff1d(np.arange(graph.num_nodes), initial)
    expected = rest[np.lexsort((rest, -pagerank[rest]))][:8]
    assert set(row[4:].tolist()) == set(expected.tolist())


def test_age_percentiles_rank_candidates_only():
  scores = np.array([0.3, 0.1, 0.9, 0.5, 0.7])
  ranks = _percentile(scores, np.array([0, 2, 3]))
  np.testing.assert_allclose(ranks[[0, 3, 2]], [0, 1 / 3, 2 / 3])
  np.testing.assert_array_equal(ranks[[1, 4]], 0.0)


def test_uncertainty_adds_the_most_uncertain_nodes_of_a_model_trained_on_the_third():
  graph = sbm_graph(seed=2)
  config = GNNConfig(epochs=5)
  chosen = select_nodes("uncertainty", graph, 12, [5], gnn_config=config)[0]
  initial = chosen[:4]
  inputs = gnn.gnn_inputs(graph, config)
  mask = np.zeros((1, graph.num_nodes), bool)
  mask[0, initial] = True
  logits = np.asarray(gnn.predict(gnn.train(inputs, mask, jax.vmap(jax.random.key)(
      jnp.asarray([5 + 7919])), config), inputs))[0].astype(np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  entropy = -(p * np.log(p)).sum(-1)
  entropy[initial] = -np.inf
  assert set(chosen[4:].tolist()) == set(np.argsort(-entropy)[:8].tolist())
