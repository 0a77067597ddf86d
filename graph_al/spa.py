"""SPA: structural-clustering PageRank active learning (Fajri et al., IDA 2024, arXiv 2312.04307).

One-shot query with no initial labels: cluster the graph with SCAN, rank nodes by PageRank,
then (Algorithm 1) take the highest-PageRank node (the head) of each community and fill the
rest of the budget with the highest global PageRank nodes not yet chosen.

The paper does not say which heads to keep when there are more communities than budget
(SCAN finds 193 on Cora, 230 on CiteSeer, so this is the usual case). ``head_order``:

- ``"pagerank"`` (default): the ``b`` heads of highest PageRank. Algorithm 1 ranks nodes by
  PageRank and nothing else, and its fill step keeps that ranking when communities run out;
  this rule is that same ranking applied to the heads.
- ``"size"``: heads of the largest communities first (ties: higher head PageRank). This is
  what the authors' notebook does in effect: cdlib's ``Clustering.__init__``
  (``cdlib/classes/clustering.py``, base of ``NodeClustering``) sorts communities by
  size, largest first, and with ``k > b`` the notebook takes one node from each of the first
  ``b``. The sort is a convention of cdlib's result class, not a step of the method.

Measured (GCN, 10 seeds, macro-F1 at b = 10 / 20 / 40 / 80): ``"pagerank"`` Cora 27.4 / 40.5 /
73.3 / 80.9, CiteSeer 47.5 / 48.8 / 55.1 / 62.6; ``"size"`` Cora 33.2 / 48.8 / 59.8 / 70.8,
CiteSeer 42.9 / 56.6 / 60.4 / 64.3. Only ``"pagerank"`` stays within 3 points of the paper's
CiteSeer figures (46.3 / 57.1 / 60.8 at 20 / 40 / 80); neither beats Degree/PageRank (43.8 /
57.2) on Cora at b = 10 / 20 (README, graph_al section, for two more rules and for the SCAN
variants and ``singletons``).

``singletons=True`` reads SCAN's hubs and outliers as communities of one node each (SCAN
leaves them out of every cluster; Algorithm 1 only says "each community"), so each is its own
head and competes with the cluster heads by PageRank; by default they enter only through the
global fill.

``variant="public"`` reproduces the selection of the public notebook
(rickymaulanafajri/SPA, ``SCANPageRankOptimized.query``): communities in cdlib's order
(largest first, ties in SCAN's discovery order) each give their top ``max(1, remaining // k)``
nodes with ``remaining`` shrinking as it goes, the list is cut to ``b``, then filled by
global PageRank. The notebook re-runs SCAN in a ``while`` loop when the budget is not used
up; cdlib marks the graph's nodes as classified on the first run, so a second run finds no
communities and that loop never ends. Here one pass is followed directly by the global fill.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

from graph_al.pagerank import pagerank
from graph_al.scan import (ScanResult, eps_squared_grid, edge_triangles, modularity_scan,
                           scan_result, visiting_order, wedge_count)

VARIANTS = ("paper", "public")
HEAD_ORDERS = ("pagerank", "size")


class SpaQuery(NamedTuple):
  selected: np.ndarray     # int64 [budget], distinct node ids in selection order
  pagerank: np.ndarray     # float [N]
  clusters: ScanResult


def spa_from_scores(pagerank: np.ndarray, labels: np.ndarray, budget: int,
                    variant: str = "paper", head_order: str = "pagerank",
                    singletons: bool = False) -> np.ndarray:
  """Selects ``budget`` distinct nodes from PageRank scores and community labels (-1: none,
  else ids in SCAN's discovery order); ``head_order`` (paper variant only) ranks the
  community heads when they outnumber the budget; ``singletons`` makes every node labelled
  -1 a community of its own, numbered after the others in node order (module docstring)."""
  n = pagerank.shape[0]
  if not 0 < budget <= n:
    raise ValueError(f"budget must be in [1, {n}], got {budget}")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  if head_order not in HEAD_ORDERS:
    raise ValueError(f"head_order must be one of {HEAD_ORDERS}, got {head_order!r}")
  if singletons:
    unlabelled = labels < 0
    labels = labels.copy()
    labels[unlabelled] = labels.max(initial=-1) + 1 + np.arange(np.count_nonzero(unlabelled))
  # Global ranking: descending PageRank, ties by node id (a stable sort).
  by_rank = np.argsort(-pagerank, kind="stable")
  num_communities = int(labels.max(initial=-1)) + 1
  sizes = np.bincount(labels[labels >= 0], minlength=num_communities)
  if variant == "paper":
    # A community's head is its first member in the global ranking.
    rank_labels = labels[by_rank]
    in_community = np.flatnonzero(rank_labels >= 0)
    first = np.full(num_communities, n)
    np.minimum.at(first, rank_labels[in_community], in_community)
    if head_order == "pagerank":
      heads = np.sort(first[first < n])
    else:   # largest community first, ties by the head's PageRank rank
      heads = first[np.lexsort((first, -sizes))][:np.count_nonzero(sizes)]
    chosen_positions = heads[:budget]
    chosen = by_rank[chosen_positions]
  else:
    # cdlib returns SCAN's communities sorted by size, largest first (a stable sort: ties
    # in discovery order); the notebook loops over them in that order.
    community_rank = np.empty(num_communities, np.int64)
    community_rank[np.lexsort((np.arange(num_communities), -sizes))] = np.arange(num_communities)
    members = np.flatnonzero(labels >= 0)
    # Community members sorted by (community's rank, descending PageRank, node id).
    ranked = members[np.lexsort((members, -pagerank[members],
                                 community_rank[labels[members]]))]
    starts = np.flatnonzero(np.r_[True, np.diff(labels[ranked]) != 0]) if ranked.size else \
        np.zeros(0, np.int64)
    ends = np.r_[starts[1:], ranked.size]
    remaining, picks, k = budget, [], starts.size
    for start, end in zip(starts, ends):   # one step per community, as the notebook
      quota = max(1, remaining // k)
      picks.append(ranked[start:min(start + quota, end)])
      remaining -= quota
    chosen = np.concatenate(picks)[:budget] if picks else np.zeros(0, np.int64)
    chosen_positions = np.argsort(by_rank)[chosen]
  unchosen = np.ones(n, bool)
  unchosen[chosen_positions] = False
  fill = by_rank[unchosen][:budget - chosen.size]
  return np.concatenate([chosen, fill]).astype(np.int64)


@functools.partial(jax.jit, static_argnames=("num_nodes", "num_wedges"))
def _device_part(senders, receivers, order, num_nodes: int, num_wedges: int, eps_squared, mu,
                 count_self, alpha):
  """SCAN and PageRank in one device program: one dispatch, one transfer back."""
  triangles = edge_triangles(senders, receivers, num_nodes, num_wedges)
  clusters = modularity_scan(senders, receivers, triangles, order, num_nodes, eps_squared, mu,
                             count_self)
  scores, _ = pagerank(senders, receivers, num_nodes, alpha)   # as graph_pagerank_async
  return clusters, scores


def spa_query(graph, budget: int, *, eps: float | str = 0.5, mu: int = 3,
              count_self: bool = False, alpha: float = 0.95, seed: int = 0,
              variant: str = "paper", head_order: str = "pagerank",
              singletons: bool = False) -> SpaQuery:
  """SCAN + PageRank + selection: the whole SPA query (SCAN's ``eps``, ``mu`` and
  ``count_self`` as :func:`graph_al.scan.scan`)."""
  order = visiting_order(graph.num_nodes, seed)
  eps_values, eps_squared = eps_squared_grid(eps)
  clusters, scores = jax.device_get(_device_part(
      *graph.device_edges, order, graph.num_nodes, wedge_count(graph), eps_squared, mu,
      count_self, alpha))
  clusters = scan_result(*clusters, eps_values)
  return SpaQuery(spa_from_scores(scores, clusters.labels, budget, variant, head_order,
                                  singletons), scores, clusters)
