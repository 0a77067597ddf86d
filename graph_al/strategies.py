"""SPA and the paper's baselines (arXiv 2312.04307, Sec. 4): one-shot queries of ``b`` nodes.

- ``spa``: :mod:`graph_al.spa` (``QueryConfig.spa_variant``, ``spa_head_order``,
  ``spa_singletons``, ``spa_pagerank``; SCAN's ``scan_semantics``: :mod:`graph_al.scan`);
  ``spa_public``: SPA with the public notebook's selection rule, whatever ``spa_variant`` says.
- ``random``: uniform without replacement.  ``degree`` / ``pagerank``: the top-``b`` nodes.
- ``featprop`` (Wu et al. 2019): k-means with ``b`` centres on propagated features
  ``Â^k X``, the node nearest each centre. Deviation: to keep 10 seeds x 5 budgets cheap on
  CPUs, k-means runs on the top ``kmeans_dims`` principal components (randomized PCA) of ``Â^k X`` (None: all).
- ``graphpart`` (Ma et al., TMLR 2023): greedy-modularity partitions (networkx's
  Clauset-Newman-Moore, as GraphPart's code), the budget split over partitions in proportion
  to their size, k-means on ``Â^k X`` inside each partition. Citation graphs have hundreds of
  connected components that modularity merging cannot join: the ``max_parts - 1`` largest
  communities are partitions and all remaining nodes form one more.
- ``uncertainty``: ``b // 3`` random labels, a GNN trained on them, then the rest by maximum
  predictive entropy (the SPA notebook's protocol).
- ``age`` (Cai et al. 2017): from the same ``b // 3`` random labels, ``age_rounds`` rounds
  of train-and-query with score ``alpha * entropy + beta * density + gamma * centrality``
  (percentiles among unlabelled nodes; density from k-means on the softmax outputs with one
  centre per class, centrality = PageRank), ``gamma ~ Beta(1, 1.005 - basef^t)`` and
  ``alpha = beta = (1 - gamma) / 2``, ``t`` = nodes labelled so far (AGE adds one per epoch).

Every strategy takes a list of seeds and returns ``[len(seeds), b]`` distinct node ids; the
GNN-based ones train their models for all seeds at once (``vmap``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from graph_al import gnn
from graph_al.kmeans import kmeans_select
from graph_al.pagerank import graph_pagerank
from graph_al.scan import check_semantics
from graph_al.spa import HEAD_ORDERS, PAGERANKS, VARIANTS, spa_query

STRATEGIES = ("spa", "spa_public", "random", "degree", "pagerank", "age", "featprop", "graphpart",
              "uncertainty")


@dataclasses.dataclass(frozen=True)
class QueryConfig:
  """SPA's defaults are the paper's (eps 0.5, mu 3) and the public code's (alpha 0.95);
  ``eps="auto"``, ``count_self`` and ``scan_semantics``: see :mod:`graph_al.scan`."""
  eps: float | str = 0.5
  mu: int = 3
  count_self: bool = False
  scan_semantics: str = "cdlib"
  alpha: float = 0.95
  spa_variant: str = "paper"
  spa_head_order: str = "pagerank"
  spa_singletons: bool = False
  spa_pagerank: str = "global"
  propagation_hops: int = 2
  kmeans_dims: int | None = 64
  kmeans_iterations: int = 30
  graphpart_max_parts: int = 14
  age_rounds: int = 4
  age_basef: float = 0.9

  def __post_init__(self):
    if self.spa_variant not in VARIANTS:
      raise ValueError(f"spa_variant must be one of {VARIANTS}, got {self.spa_variant!r}")
    if self.spa_head_order not in HEAD_ORDERS:
      raise ValueError(f"spa_head_order must be one of {HEAD_ORDERS}, "
                       f"got {self.spa_head_order!r}")
    if self.spa_pagerank not in PAGERANKS:
      raise ValueError(f"spa_pagerank must be one of {PAGERANKS}, got {self.spa_pagerank!r}")
    if self.spa_pagerank == "paper" and self.spa_variant != "paper":
      raise ValueError("spa_pagerank='paper' reads Algorithm 1, so needs spa_variant='paper'")
    check_semantics(self.scan_semantics, self.count_self)
    if not (self.eps == "auto" or isinstance(self.eps, (int, float)) and 0 < self.eps <= 1) \
        or self.mu < 1:
      raise ValueError(f"need 0 < eps <= 1 or eps='auto', and mu >= 1, got eps={self.eps!r}, "
                       f"mu={self.mu}")
    if not 0 < self.alpha < 1:
      raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


def _top(scores: np.ndarray, budget: int) -> np.ndarray:
  """Highest scores first, ties by node id."""
  return np.lexsort((np.arange(scores.shape[0]), -scores))[:budget]


@functools.lru_cache(maxsize=8)
def _propagated_features(graph, hops: int, dims: int | None) -> np.ndarray:
  """``Â^hops X`` (GCN normalization), optionally projected on its top principal axes."""
  n = graph.num_nodes
  a_hat = graph.adjacency() + sp.identity(n, format="csr", dtype=np.float32)
  inv_sqrt = 1.0 / np.sqrt(np.asarray(a_hat.sum(1)).ravel())
  a_hat = sp.diags(inv_sqrt) @ a_hat @ sp.diags(inv_sqrt)
  x = graph.features
  for _ in range(hops):
    x = a_hat @ x
  x = np.asarray(x.todense(), np.float32)
  if dims is None or dims >= min(x.shape):
    return x
  centred = x - x.mean(0)
  # Randomized PCA (Halko et al. 2011): a range finder with two power iterations.
  sketch = centred @ np.random.default_rng(0).normal(size=(x.shape[1], dims + 10))
  for _ in range(2):
    sketch = centred @ (centred.T @ np.linalg.qr(sketch)[0])
  basis = np.linalg.qr(sketch)[0]
  _, _, vt = np.linalg.svd(basis.T @ centred, full_matrices=False)
  return (centred @ vt[:dims].T).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _modularity_partitions(graph, max_parts: int) -> np.ndarray:
  import networkx as nx
  communities = nx.community.greedy_modularity_communities(
      graph.to_networkx(), cutoff=max_parts, best_n=max_parts)
  communities = sorted(communities, key=len, reverse=True)
  parts = np.full(graph.num_nodes, max_parts - 1, np.int32)
  for i, community in enumerate(communities[:max_parts - 1]):
    parts[list(community)] = i
  return parts


def _allocate(sizes: np.ndarray, budget: int) -> np.ndarray:
  """Largest-remainder split of ``budget`` in proportion to ``sizes``, never above a size."""
  exact = budget * sizes / sizes.sum()
  quota = np.minimum(np.floor(exact).astype(np.int64), sizes)
  for i in np.argsort(-(exact - quota), kind="stable"):
    if quota.sum() == budget:
      break
    if quota[i] < sizes[i]:
      quota[i] += 1
  while quota.sum() < budget:   # rare: rounding met full partitions
    quota[np.argmax(sizes - quota)] += 1
  return quota


def _kmeans_nodes(points: np.ndarray, groups: np.ndarray, centre_groups: np.ndarray,
                  seeds: Sequence[int], iterations: int) -> tuple[np.ndarray, np.ndarray]:
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  select = jax.vmap(kmeans_select, in_axes=(None, None, None, 0, None))
  chosen, centres = select(jnp.asarray(points), jnp.asarray(groups),
                           jnp.asarray(centre_groups), keys, iterations)
  return np.asarray(chosen), np.asarray(centres)


def _entropy(logits: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def _random_initial(n: int, count: int, seeds: Sequence[int]) -> np.ndarray:
  return np.stack([np.random.default_rng(s).choice(n, count, replace=False) for s in seeds])


def _train_on(graph, labelled: np.ndarray, seeds: Sequence[int], gnn_config: gnn.GNNConfig):
  inputs = gnn.gnn_inputs(graph, gnn_config)
  masks = np.zeros((len(seeds), graph.num_nodes), bool)
  np.put_along_axis(masks, labelled, True, axis=1)
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds) + 7919)  # init keys apart from queries
  return np.asarray(gnn.predict(gnn.train(inputs, masks, keys, gnn_config), inputs)), masks


def _percentile(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
  """Rank of each score among the candidates' scores, in [0, 1); 0 off the candidates."""
  ranks = np.zeros(scores.shape)
  order = np.argsort(scores[candidates], kind="stable")
  ranks[candidates[order]] = np.arange(order.size) / max(order.size, 1)
  return ranks


def _uncertainty(graph, budget, seeds, gnn_config) -> np.ndarray:
  initial = _random_initial(graph.num_nodes, budget // 3, seeds)
  logits, masks = _train_on(graph, initial, seeds, gnn_config)
  entropy = np.where(masks, -np.inf, np.asarray(_entropy(jnp.asarray(logits))))
  rest = np.stack([_top(e, budget - initial.shape[1]) for e in entropy])
  return np.concatenate([initial, rest], axis=1)


def _age(graph, budget, seeds, config: QueryConfig, gnn_config) -> np.ndarray:
  centrality = graph_pagerank(graph, config.alpha)
  labelled = _random_initial(graph.num_nodes, budget // 3, seeds)
  rngs = [np.random.default_rng(s + 1) for s in seeds]
  remaining = budget - labelled.shape[1]
  rounds = max(1, min(config.age_rounds, remaining))
  for r in range(rounds):
    take = remaining // rounds + (r < remaining % rounds)
    if take == 0:
      continue
    logits, masks = _train_on(graph, labelled, seeds, gnn_config)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
    entropy = np.asarray(_entropy(jnp.asarray(logits)))
    picks = []
    for i in range(len(seeds)):
      candidates = np.flatnonzero(~masks[i])
      # k-means on the softmax outputs, one centre per class: distance to the nearest centre.
      _, centres = _kmeans_nodes(probs[i], np.zeros(graph.num_nodes, np.int32),
                                 np.zeros(graph.num_classes, np.int32), [seeds[i]],
                                 config.kmeans_iterations)
      dist = np.min(np.linalg.norm(probs[i][:, None, :] - centres[0][None], axis=-1), axis=1)
      density = 1.0 / (1.0 + dist)
      t = labelled.shape[1]
      gamma = rngs[i].beta(1.0, 1.005 - config.age_basef**t)
      alpha = beta = (1.0 - gamma) / 2.0
      score = (alpha * _percentile(entropy[i], candidates)
               + beta * _percentile(density, candidates)
               + gamma * _percentile(centrality, candidates))
      picks.append(_top(np.where(masks[i], -np.inf, score), take))
    labelled = np.concatenate([labelled, np.stack(picks)], axis=1)
  return labelled


def select_nodes(strategy: str, graph, budget: int, seeds: Sequence[int],
                 config: QueryConfig = QueryConfig(),
                 gnn_config: gnn.GNNConfig = gnn.GNNConfig()) -> np.ndarray:
  """``[len(seeds), budget]`` distinct node ids chosen by ``strategy`` for each seed."""
  n = graph.num_nodes
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
  if not 0 < budget <= n:
    raise ValueError(f"budget must be in [1, {n}], got {budget}")
  seeds = list(seeds)
  if strategy in ("spa", "spa_public"):
    variant = "public" if strategy == "spa_public" else config.spa_variant
    return np.stack([spa_query(graph, budget, eps=config.eps, mu=config.mu,
                               count_self=config.count_self, alpha=config.alpha,
                               seed=s, variant=variant,
                               head_order=config.spa_head_order,
                               singletons=config.spa_singletons,
                               semantics=config.scan_semantics,
                               pagerank="global" if variant == "public" else config.spa_pagerank
                               ).selected for s in seeds])
  if strategy == "random":
    return _random_initial(n, budget, seeds)
  if strategy in ("degree", "pagerank"):
    scores = graph.degrees() if strategy == "degree" else graph_pagerank(graph, config.alpha)
    return np.tile(_top(scores.astype(np.float64), budget), (len(seeds), 1))
  if strategy == "uncertainty":
    return _uncertainty(graph, budget, seeds, gnn_config)
  if strategy == "age":
    return _age(graph, budget, seeds, config, gnn_config)
  points = _propagated_features(graph, config.propagation_hops, config.kmeans_dims)
  if strategy == "featprop":
    groups = np.zeros(n, np.int32)
    return _kmeans_nodes(points, groups, np.zeros(budget, np.int32), seeds,
                         config.kmeans_iterations)[0]
  parts = _modularity_partitions(graph, config.graphpart_max_parts)
  quota = _allocate(np.bincount(parts, minlength=config.graphpart_max_parts), budget)
  centre_parts = np.repeat(np.arange(quota.size, dtype=np.int32), quota)
  return _kmeans_nodes(points, parts, centre_parts, seeds, config.kmeans_iterations)[0]
