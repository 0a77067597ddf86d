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

``pagerank`` says which PageRank Algorithm 1's steps use. ``"global"`` (default): one
PageRank of the whole graph for both the heads (step 5) and the fill (steps 10-12).
``"paper"``: the paper's text read literally (arXiv 2312.04307, Algorithm 1: "5: Calculate
PageRank scores for all nodes in C_i with damping factor alpha 6: Find node n_max in C_i with
the highest PageRank score ... 10: Calculate PageRank for all nodes in G \\ S 11: Sort nodes
in G \\ S by PageRank in descending order"): each head is the argmax (ties: lowest node id) of
the PageRank of the subgraph induced by its community, and the fill ranks the nodes of
``G \\ S`` by the PageRank of the subgraph they induce (:func:`graph_al.pagerank.part_pagerank`,
same alpha and solver). With more communities than budget, which heads to keep is still
``head_order``'s rule on the GLOBAL PageRank of the heads: our choice, the paper is silent
on ``k > b``. Measured with and without the paper's SCAN (``semantics="paper"``), no
combination meets the targets on both Cora and CiteSeer (README, graph_al, ninth session).

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
from typing import Callable, NamedTuple

import jax
import numpy as np

from graph_al.pagerank import pagerank, part_pagerank
from graph_al.scan import (ScanResult, check_semantics, eps_squared_grid, edge_triangles,
                           modularity_scan, scan_result, visiting_order, wedge_count)

VARIANTS = ("paper", "public")
HEAD_ORDERS = ("pagerank", "size")
PAGERANKS = ("global", "paper")


class SpaQuery(NamedTuple):
  selected: np.ndarray     # int64 [budget], distinct node ids in selection order
  pagerank: np.ndarray     # float [N]
  clusters: ScanResult


def spa_from_scores(pagerank: np.ndarray, labels: np.ndarray, budget: int,
                    variant: str = "paper", head_order: str = "pagerank",
                    singletons: bool = False, *, head_scores: np.ndarray | None = None,
                    fill_scores: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> np.ndarray:
  """Selects ``budget`` distinct nodes from PageRank scores and community labels (-1: none,
  else ids in SCAN's discovery order); ``head_order`` (paper variant only) ranks the
  community heads when they outnumber the budget; ``singletons`` makes every node labelled
  -1 a community of its own, numbered after the others in node order (module docstring).

  Paper variant only: ``head_scores`` picks each community's head (its highest-scoring
  member, ties by node id; default ``pagerank``), and ``fill_scores(chosen)`` returns the
  scores that rank the other nodes for the fill (default ``pagerank``); ties by node id.
  """
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
  if variant != "paper" and (head_scores is not None or fill_scores is not None):
    raise ValueError("head_scores and fill_scores apply to the paper variant only")
  position = np.empty(n, np.int64)
  position[by_rank] = np.arange(n)
  if variant == "paper":
    # A community's head is its best member by head_scores (ties: lowest id), and `first`
    # its position in the global ranking.
    head_scores = pagerank if head_scores is None else head_scores
    members = np.flatnonzero(labels >= 0)
    ranked = members[np.lexsort((members, -head_scores[members], labels[members]))]
    first = np.full(num_communities, n)
    leads = np.r_[True, labels[ranked][1:] != labels[ranked][:-1]] if ranked.size else \
        np.zeros(0, bool)
    first[labels[ranked[leads]]] = position[ranked[leads]]
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
    chosen_positions = position[chosen]
  if chosen.size < budget and fill_scores is not None:
    by_rank = np.argsort(-fill_scores(chosen), kind="stable")
    chosen_positions = np.flatnonzero(np.isin(by_rank, chosen))
  unchosen = np.ones(n, bool)
  unchosen[chosen_positions] = False
  fill = by_rank[unchosen][:budget - chosen.size]
  return np.concatenate([chosen, fill]).astype(np.int64)


@functools.partial(jax.jit, static_argnames=("num_nodes", "num_wedges", "semantics",
                                             "community_pagerank"))
def _device_part(senders, receivers, order, num_nodes: int, num_wedges: int, eps_squared, mu,
                 count_self, alpha, semantics: str = "cdlib", community_pagerank: bool = False):
  """SCAN and PageRank (and, if asked, each community's own PageRank) in one device program:
  one dispatch, one transfer back."""
  triangles = edge_triangles(senders, receivers, num_nodes, num_wedges)
  clusters = modularity_scan(senders, receivers, triangles, order, num_nodes, eps_squared, mu,
                             count_self, semantics)
  scores, _ = pagerank(senders, receivers, num_nodes, alpha)   # as graph_pagerank_async
  within = part_pagerank(senders, receivers, clusters[0][0], num_nodes, alpha) \
      if community_pagerank else None
  return clusters, scores, within


def spa_query(graph, budget: int, *, eps: float | str = 0.5, mu: int = 3,
              count_self: bool = False, alpha: float = 0.95, seed: int = 0,
              variant: str = "paper", head_order: str = "pagerank",
              singletons: bool = False, semantics: str = "cdlib",
              pagerank: str = "global") -> SpaQuery:
  """SCAN + PageRank + selection: the whole SPA query (SCAN's ``eps``, ``mu``,
  ``count_self`` and ``semantics`` as :func:`graph_al.scan.scan`; ``pagerank``: see the
  module docstring). ``SpaQuery.pagerank`` is always the global PageRank."""
  check_semantics(semantics, count_self)
  if pagerank not in PAGERANKS:
    raise ValueError(f"pagerank must be one of {PAGERANKS}, got {pagerank!r}")
  if pagerank == "paper" and variant != "paper":
    raise ValueError("pagerank='paper' reads Algorithm 1, so needs variant='paper'")
  order = visiting_order(graph.num_nodes, seed)
  eps_values, eps_squared = eps_squared_grid(eps)
  clusters, scores, within = jax.device_get(_device_part(
      *graph.device_edges, order, graph.num_nodes, wedge_count(graph), eps_squared, mu,
      count_self, alpha, semantics, pagerank == "paper"))
  clusters = scan_result(*clusters, eps_values)
  fill_scores = None
  if pagerank == "paper":
    def fill_scores(chosen):
      rest = np.zeros(graph.num_nodes, np.int32)
      rest[chosen] = -1
      return np.asarray(part_pagerank(*graph.device_edges, rest, graph.num_nodes, alpha))
  return SpaQuery(spa_from_scores(scores, clusters.labels, budget, variant, head_order,
                                  singletons, head_scores=within, fill_scores=fill_scores),
                  scores, clusters)
