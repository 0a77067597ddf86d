"""Two-layer GCN (Kipf & Welling 2017) and GraphSAGE-mean (Hamilton et al. 2017) on jraph.

The graph travels as a ``jraph.GraphsTuple`` whose ``edges`` hold the propagation weights:
for the GCN, ``D^-1/2 (A + I) D^-1/2`` with self-edges added (:func:`gcn_graph`); for
GraphSAGE, ``1 / deg`` over the neighbours (:func:`mean_graph`). Node features are sparse
bag-of-words (Cora: 1.3% nonzero), so the first layer multiplies them as COO triples
(:class:`SparseFeatures`) with a gather and ``segment_sum``: O(nnz * hidden) instead of
O(N * F * hidden). As in the SPA/GraphPart code (PyG ``GCNConv``), dropout acts on the
hidden layer only and the bias is added after propagation.

Training (:func:`train`) is one jitted function ``vmap``-ped over a batch of (label mask,
PRNG key) pairs, so the 10 seeds of a budget train as one program: Adam with coupled L2
weight decay like ``torch.optim.Adam(weight_decay=...)``, full-batch cross-entropy on the
masked nodes, a fixed number of epochs, the last epoch's model (no validation set).
The loss of a 2-layer GNN depends only on the labelled nodes' 2-hop receptive field, so each
model trains on that subgraph (:func:`receptive_fields`): the same loss and gradients as on
the whole graph, at a fraction of the cost when few nodes are labelled (XLA:CPU's scatters
dominate an epoch; 10 models, 300 epochs, 40 random labels on Cora: 8.3 s instead of 30 s).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from flax import nnx

MODELS = ("gcn", "sage")


class SparseFeatures(NamedTuple):
  """A sparse ``[N, F]`` feature matrix as row-sorted COO triples."""
  rows: jax.Array      # int32 [nnz], sorted
  cols: jax.Array      # int32 [nnz]
  values: jax.Array    # float32 [nnz]
  num_nodes: int
  num_features: int

  @classmethod
  def from_scipy(cls, matrix) -> SparseFeatures:
    coo = matrix.tocsr().tocoo()
    return cls(jnp.asarray(coo.row, jnp.int32), jnp.asarray(coo.col, jnp.int32),
               jnp.asarray(coo.data, jnp.float32), int(matrix.shape[0]), int(matrix.shape[1]))

  def __matmul__(self, weight: jax.Array) -> jax.Array:
    return jax.ops.segment_sum(self.values[:, None] * weight[self.cols], self.rows,
                               self.num_nodes, indices_are_sorted=True)


jax.tree_util.register_pytree_node(
    SparseFeatures, lambda f: ((f.rows, f.cols, f.values), (f.num_nodes, f.num_features)),
    lambda aux, children: SparseFeatures(*children, *aux))


def _graphs_tuple(senders: np.ndarray, receivers: np.ndarray, weights: np.ndarray,
                  num_nodes: int, node_ids: np.ndarray | None = None) -> jraph.GraphsTuple:
  """``nodes``: the nodes' ids in the whole graph (None: ``arange``), which seed dropout."""
  return jraph.GraphsTuple(
      nodes=None if node_ids is None else jnp.asarray(node_ids, jnp.int32),
      edges=jnp.asarray(weights, jnp.float32), senders=jnp.asarray(senders),
      receivers=jnp.asarray(receivers), n_node=jnp.asarray([num_nodes]),
      n_edge=jnp.asarray([senders.shape[0]]), globals=None)


def gcn_graph(graph) -> jraph.GraphsTuple:
  """Self-edges added, edges weighted by ``1 / sqrt(deg(u) deg(v))`` with ``deg`` counting them."""
  n = graph.num_nodes
  nodes = np.arange(n, dtype=np.int32)
  senders = np.concatenate([graph.senders, nodes])
  receivers = np.concatenate([graph.receivers, nodes])
  degree = graph.degrees().astype(np.float64) + 1.0
  weights = 1.0 / np.sqrt(degree[senders] * degree[receivers])
  order = np.argsort(receivers, kind="stable")  # sorted receivers: faster segment_sum
  return _graphs_tuple(senders[order], receivers[order], weights[order], n)


def mean_graph(graph) -> jraph.GraphsTuple:
  """Neighbour edges weighted ``1 / deg(receiver)``; isolated nodes aggregate zeros."""
  degree = np.maximum(graph.degrees(), 1).astype(np.float64)
  order = np.argsort(graph.receivers, kind="stable")
  senders, receivers = graph.senders[order], graph.receivers[order]
  return _graphs_tuple(senders, receivers, 1.0 / degree[receivers], graph.num_nodes)


def propagate(graph: jraph.GraphsTuple, h: jax.Array) -> jax.Array:
  """``sum_u w(u, v) h[u]`` into every node ``v``."""
  return jax.ops.segment_sum(graph.edges[:, None] * h[graph.senders], graph.receivers,
                             h.shape[0], indices_are_sorted=True)


@dataclasses.dataclass(frozen=True)
class GNNConfig:
  """Defaults follow the SPA notebook (GraphPart's settings): 2 layers, 16 hidden units,
  Adam lr 0.01, weight decay 5e-4, 300 epochs, dropout 0 (the notebook's default)."""
  model: str = "gcn"
  hidden: int = 16
  dropout: float = 0.0
  learning_rate: float = 0.01
  weight_decay: float = 5e-4
  epochs: int = 300

  def __post_init__(self):
    if self.model not in MODELS:
      raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.epochs < 1 or self.hidden < 1:
      raise ValueError("epochs and hidden must be positive")


def _glorot(rngs: nnx.Rngs, fan_in: int, fan_out: int) -> nnx.Param:
  return nnx.Param(nnx.initializers.glorot_uniform()(rngs.params(), (fan_in, fan_out)))


def _dropout(h: jax.Array, rate: float, key: jax.Array | None,
             graph: jraph.GraphsTuple) -> jax.Array:
  """Inverted dropout; node ``v``'s mask comes from ``fold_in(key, id of v)``, so a model's
  masks are the same on the whole graph and on any subgraph holding ``v``."""
  if key is None or rate == 0.0:
    return h
  ids = jnp.arange(h.shape[0]) if graph.nodes is None else graph.nodes
  keep = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - rate,
                                                 h.shape[1:]))(ids)
  return jnp.where(keep, h / (1.0 - rate), 0.0)


class GCN(nnx.Module):
  """``softmax(Â relu(Â X W1 + b1) W2 + b2)`` logits, ``Â`` from :func:`gcn_graph`."""

  def __init__(self, num_features: int, num_classes: int, config: GNNConfig, *,
               rngs: nnx.Rngs):
    self.config = config
    self.w1 = _glorot(rngs, num_features, config.hidden)
    self.b1 = nnx.Param(jnp.zeros((config.hidden,)))
    self.w2 = _glorot(rngs, config.hidden, num_classes)
    self.b2 = nnx.Param(jnp.zeros((num_classes,)))

  def embed(self, graph: jraph.GraphsTuple, features: SparseFeatures,
            dropout_key: jax.Array | None = None) -> jax.Array:
    h = jax.nn.relu(propagate(graph, features @ self.w1[...]) + self.b1[...])
    return _dropout(h, self.config.dropout, dropout_key, graph)

  def __call__(self, graph, features, dropout_key=None) -> jax.Array:
    h = self.embed(graph, features, dropout_key)
    return propagate(graph, h @ self.w2[...]) + self.b2[...]


class GraphSAGE(nnx.Module):
  """Mean aggregator: ``h' = W_self h + W_neigh mean_{u in N(v)} h_u + b`` (PyG ``SAGEConv``)."""

  def __init__(self, num_features: int, num_classes: int, config: GNNConfig, *,
               rngs: nnx.Rngs):
    self.config = config
    self.self1 = _glorot(rngs, num_features, config.hidden)
    self.neigh1 = _glorot(rngs, num_features, config.hidden)
    self.b1 = nnx.Param(jnp.zeros((config.hidden,)))
    self.self2 = _glorot(rngs, config.hidden, num_classes)
    self.neigh2 = _glorot(rngs, config.hidden, num_classes)
    self.b2 = nnx.Param(jnp.zeros((num_classes,)))

  def embed(self, graph, features, dropout_key=None) -> jax.Array:
    # The mean is linear, so aggregate the projected features: hidden-sized, not F-sized.
    h = (features @ self.self1[...] + propagate(graph, features @ self.neigh1[...])
         + self.b1[...])
    return _dropout(jax.nn.relu(h), self.config.dropout, dropout_key, graph)

  def __call__(self, graph, features, dropout_key=None) -> jax.Array:
    h = self.embed(graph, features, dropout_key)
    return h @ self.self2[...] + propagate(graph, h @ self.neigh2[...]) + self.b2[...]


def make_model(num_features: int, num_classes: int, config: GNNConfig,
               rngs: nnx.Rngs) -> nnx.Module:
  cls = GCN if config.model == "gcn" else GraphSAGE
  return cls(num_features, num_classes, config, rngs=rngs)


def model_graph(graph, config: GNNConfig) -> jraph.GraphsTuple:
  return gcn_graph(graph) if config.model == "gcn" else mean_graph(graph)


class GNNInputs(NamedTuple):
  """What a model sees of a graph: propagation graph, features, labels."""
  graph: jraph.GraphsTuple
  features: SparseFeatures
  labels: jax.Array       # int32 [N]; stacked [M, nodes] from receptive_fields
  num_classes: int


def gnn_inputs(graph, config: GNNConfig) -> GNNInputs:
  return GNNInputs(model_graph(graph, config), SparseFeatures.from_scipy(graph.features),
                   jnp.asarray(graph.labels), graph.num_classes)


class TrainedModels(NamedTuple):
  """A batch of trained models: one structure, parameters with a leading model axis."""
  graphdef: nnx.GraphDef
  params: nnx.State


def optimizer(config: GNNConfig) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.adam(config.learning_rate))


def _padded(size: int) -> int:
  """``size`` rounded up to a power of two (at least 8): a sweep of budgets then needs few
  distinct shapes, i.e. compilations (on Cora, 10 instead of 25 with 12.5% steps, for 1.45x
  instead of 1.09x padding; compiling took 12 s where training 10 models for 300 epochs
  took 8 s)."""
  return max(1 << (size - 1).bit_length(), 8)


def receptive_fields(inputs: GNNInputs, masks: np.ndarray,
                     layers: int = 2) -> tuple[GNNInputs, np.ndarray]:
  """Every row of ``masks`` (bool [M, N]) as the subgraph a ``layers``-layer GNN's loss on
  the masked nodes reads: the nodes within ``layers`` hops (in ascending id order), the edges
  into nodes within ``layers - 1`` hops, and those nodes' feature rows. Subgraphs are padded
  to one size (a dummy last node takes the padding edges and features, with weight 0) and
  stacked, with their masks ([M, nodes]); ``graph.nodes`` holds the whole-graph ids."""
  graph, features = inputs.graph, inputs.features
  senders, receivers, weights = (np.asarray(a) for a in (graph.senders, graph.receivers,
                                                         graph.edges))
  rows, cols, values = (np.asarray(a) for a in (features.rows, features.cols, features.values))
  row_start = np.searchsorted(rows, np.arange(features.num_nodes + 1))
  labels = np.asarray(inputs.labels)
  fields = []
  for mask in np.asarray(masks, bool):
    reach = [mask]
    for _ in range(layers):
      grown = reach[-1].copy()
      grown[senders[reach[-1][receivers]]] = True
      reach.append(grown)
    nodes = np.flatnonzero(reach[-1])
    local = np.zeros(features.num_nodes, np.int32)
    local[nodes] = np.arange(nodes.size)
    kept = reach[-2][receivers]   # receivers stay sorted: ``local`` is increasing
    counts = row_start[nodes + 1] - row_start[nodes]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    entries = np.repeat(row_start[nodes], counts) + offsets
    fields.append((nodes, local[senders[kept]], local[receivers[kept]], weights[kept],
                   np.repeat(np.arange(nodes.size), counts), cols[entries], values[entries]))
  n = _padded(max(f[0].size for f in fields) + 1)
  e = _padded(max(f[1].size for f in fields))
  z = _padded(max(f[4].size for f in fields))

  def stack(index, size, fill, dtype):
    out = np.full((len(fields), size), fill, dtype)
    for i, f in enumerate(fields):
      out[i, :f[index].size] = f[index]
    return jnp.asarray(out)

  dummy = n - 1
  node_ids = stack(0, n, 0, np.int32)
  local_graph = jraph.GraphsTuple(
      nodes=node_ids, edges=stack(3, e, 0.0, np.float32), senders=stack(1, e, dummy, np.int32),
      receivers=stack(2, e, dummy, np.int32), n_node=jnp.full((len(fields), 1), n),
      n_edge=jnp.full((len(fields), 1), e), globals=None)
  local_features = SparseFeatures(stack(4, z, dummy, np.int32), stack(5, z, 0, np.int32),
                                  stack(6, z, 0.0, np.float32), n, features.num_features)
  local_masks = np.zeros((len(fields), n), bool)
  for i, (mask, f) in enumerate(zip(masks, fields)):
    local_masks[i, :f[0].size] = mask[f[0]]
  local_labels = jnp.asarray(labels[np.asarray(node_ids)])   # padding reads node 0: masked out
  return GNNInputs(local_graph, local_features, local_labels, inputs.num_classes), local_masks


@functools.partial(jax.jit, static_argnames=("config", "num_classes"))
def _train_batch(config: GNNConfig, num_classes: int, graphs, features, labels, masks, keys):
  """Trains on stacked subgraphs (:func:`receptive_fields`), one model per row."""
  tx = optimizer(config)

  def train_one(graph, features, labels, mask, key):
    init_key, dropout_key = jax.random.split(key)
    model = make_model(features.num_features, num_classes, config, nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model)
    weights = mask.astype(jnp.float32) / jnp.maximum(mask.sum(), 1)

    def loss_fn(p, step_key):
      logits = nnx.merge(graphdef, p)(graph, features, step_key)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(losses * weights)

    def epoch(carry, step_key):
      p, opt_state = carry
      grads = jax.grad(loss_fn)(p, step_key if config.dropout > 0 else None)
      updates, opt_state = tx.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)),
                                  jax.random.split(dropout_key, config.epochs))
    return params

  return jax.vmap(train_one)(graphs, features, labels, masks, keys)


def train(inputs: GNNInputs, masks: jax.Array, keys: jax.Array,
          config: GNNConfig) -> TrainedModels:
  """Trains one model per row of ``masks`` (bool [M, N]) with ``keys`` ([M] PRNG keys), each
  on its mask's receptive field."""
  masks = np.asarray(masks, bool)
  if masks.ndim != 2 or masks.shape[1] != inputs.labels.shape[0]:
    raise ValueError(f"masks must be [models, {inputs.labels.shape[0]}], got {masks.shape}")
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: make_model(
      inputs.features.num_features, inputs.num_classes, config, nnx.Rngs(0))))
  local, local_masks = receptive_fields(inputs, masks)
  params = _train_batch(config, inputs.num_classes, local.graph, local.features, local.labels,
                        jnp.asarray(local_masks), keys)
  return TrainedModels(graphdef, params)


@jax.jit
def _predict(graphdef, params, graph, features):
  return jax.vmap(lambda p: nnx.merge(graphdef, p)(graph, features))(params)


def predict(models: TrainedModels, inputs: GNNInputs) -> jax.Array:
  """Logits [M, N, C] of every model in the batch (no dropout)."""
  return _predict(models.graphdef, models.params, inputs.graph, inputs.features)
