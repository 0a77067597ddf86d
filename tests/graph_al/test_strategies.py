import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graph_al.datasets import karate_graph, sbm_graph
from graph_al.gnn import GNNConfig
from graph_al.kmeans import kmeans_select
from graph_al.strategies import STRATEGIES, QueryConfig, _allocate, select_nodes


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
