import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
import pytest
import scipy.sparse as sp
from flax import nnx

from graph_al import gnn
from graph_al.datasets import karate_graph, sbm_graph
from graph_al.evaluation import macro_f1_accuracy


def _dense_gcn_operator(graph):
  a = graph.adjacency().toarray() + np.eye(graph.num_nodes)
  d = 1.0 / np.sqrt(a.sum(1))
  return d[:, None] * a * d[None, :]


def test_propagation_matches_dense_operators_and_jraph(small_graphs):
  for graph in small_graphs[1::3]:
    h = np.random.default_rng(0).normal(size=(graph.num_nodes, 5)).astype(np.float32)
    ours = np.asarray(gnn.propagate(gnn.gcn_graph(graph), jnp.asarray(h)))
    np.testing.assert_allclose(ours, _dense_gcn_operator(graph) @ h, rtol=1e-5, atol=1e-5)
    # jraph's own GCN layer (identity update) on the plain graph.
    plain = jraph.GraphsTuple(nodes=jnp.asarray(h), edges=None,
                              senders=jnp.asarray(graph.senders),
                              receivers=jnp.asarray(graph.receivers),
                              n_node=jnp.asarray([graph.num_nodes]),
                              n_edge=jnp.asarray([graph.senders.size]), globals=None)
    layer = jraph.GraphConvolution(lambda x: x, add_self_edges=True)
    np.testing.assert_allclose(ours, np.asarray(layer(plain).nodes), rtol=1e-5, atol=1e-5)
    a = graph.adjacency().toarray()
    mean = a / np.maximum(a.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(np.asarray(gnn.propagate(gnn.mean_graph(graph), jnp.asarray(h))),
                               mean @ h, rtol=1e-5, atol=1e-5)


def test_sparse_features_matmul_matches_dense():
  x = sp.random(30, 20, density=0.1, format="csr", random_state=1, dtype=np.float32)
  w = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
  features = gnn.SparseFeatures.from_scipy(x)
  np.testing.assert_allclose(np.asarray(features @ jnp.asarray(w)), x.toarray() @ w,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_karate_factions_are_separated_from_their_two_leaders(model):
  graph = karate_graph()
  config = gnn.GNNConfig(model=model, epochs=100, dropout=0.5 if model == "gcn" else 0.0)
  inputs = gnn.gnn_inputs(graph, config)
  mask = np.zeros((3, 34), bool)
  mask[:, [0, 33]] = True   # Mr. Hi and the officer, one label per faction
  models = gnn.train(inputs, mask, jax.vmap(jax.random.key)(jnp.arange(3)), config)
  predictions = jnp.argmax(gnn.predict(models, inputs), -1)
  _, accuracy = macro_f1_accuracy(predictions, inputs.labels, jnp.asarray(~mask), 2)
  assert np.all(np.asarray(accuracy) >= 0.8), accuracy


def test_vmapped_training_equals_training_alone():
  graph = karate_graph()
  config = gnn.GNNConfig(epochs=10, dropout=0.5)
  inputs = gnn.gnn_inputs(graph, config)
  masks = np.zeros((2, 34), bool)
  masks[0, [0, 33, 5]] = True
  masks[1, [1, 2, 30]] = True
  keys = jax.vmap(jax.random.key)(jnp.array([4, 5]))
  both = gnn.predict(gnn.train(inputs, masks, keys, config), inputs)
  alone = gnn.predict(gnn.train(inputs, masks[1:], keys[1:], config), inputs)
  np.testing.assert_allclose(np.asarray(both[1]), np.asarray(alone[0]), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="masks"):
    gnn.train(inputs, masks[:, :10], keys, config)
  with pytest.raises(ValueError, match="model"):
    gnn.GNNConfig(model="gat")


def _train_on_whole_graph(inputs, mask, key, config):
  """The training loop on the whole graph, one jitted step per epoch: the reference for
  :func:`gnn.train`, which trains on the mask's receptive field only."""
  init_key, dropout_key = jax.random.split(key)
  graphdef, params = nnx.split(gnn.make_model(inputs.features.num_features, inputs.num_classes,
                                              config, nnx.Rngs(params=init_key)))
  tx = gnn.optimizer(config)
  weights = jnp.asarray(mask, jnp.float32) / mask.sum()

  @jax.jit
  def step(params, opt_state, step_key):
    def loss(p):
      logits = nnx.merge(graphdef, p)(inputs.graph, inputs.features, step_key)
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, inputs.labels)
                     * weights)
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for step_key in jax.random.split(dropout_key, config.epochs):
    params, opt_state = step(params, opt_state, step_key)
  return nnx.merge(graphdef, params)(inputs.graph, inputs.features)


@pytest.mark.parametrize("model", ["gcn", pytest.param("sage", marks=pytest.mark.slow)])
def test_receptive_field_training_equals_whole_graph_training(model):
  graph = sbm_graph(block_size=40, p_in=0.08, p_out=0.005, seed=3)
  config = gnn.GNNConfig(model=model, epochs=12, dropout=0.5)
  inputs = gnn.gnn_inputs(graph, config)
  masks = np.zeros((2, graph.num_nodes), bool)
  masks[0, [0, 41, 90, 130, 199]] = True
  masks[1, [5, 6]] = True
  local, local_masks = gnn.receptive_fields(inputs, masks)
  assert local_masks.shape[1] < graph.num_nodes   # a strict subgraph is exercised
  np.testing.assert_array_equal(local_masks.sum(1), masks.sum(1))
  keys = jax.vmap(jax.random.key)(jnp.array([11, 12]))
  ours = gnn.predict(gnn.train(inputs, masks, keys, config), inputs)
  for i in range(2):
    reference = _train_on_whole_graph(inputs, masks[i], keys[i], config)
    np.testing.assert_allclose(np.asarray(ours[i]), np.asarray(reference), rtol=1e-4, atol=1e-4)


def _macro_f1_reference(pred, true):
  """sklearn's definition, by hand: mean over labels present in true or predicted."""
  scores = []
  for c in sorted(set(true) | set(pred)):
    tp = sum((p == c) and (t == c) for p, t in zip(pred, true))
    fp = sum((p == c) and (t != c) for p, t in zip(pred, true))
    fn = sum((p != c) and (t == c) for p, t in zip(pred, true))
    scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
  return np.mean(scores)


def test_macro_f1_matches_reference_on_evaluated_nodes():
  rng = np.random.default_rng(0)
  for _ in range(20):
    labels = rng.integers(0, 5, 50)
    predictions = np.where(rng.random(50) < 0.6, labels, rng.integers(0, 5, 50))
    evaluate = rng.random(50) < 0.7
    f1, accuracy = macro_f1_accuracy(jnp.asarray(predictions), jnp.asarray(labels),
                                     jnp.asarray(evaluate), 6)  # class 5 unused
    np.testing.assert_allclose(float(f1), _macro_f1_reference(predictions[evaluate].tolist(),
                                                              labels[evaluate].tolist()),
                               rtol=1e-5)
    np.testing.assert_allclose(float(accuracy),
                               np.mean(predictions[evaluate] == labels[evaluate]), rtol=1e-5)
