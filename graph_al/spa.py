"""SPA: structural-clustering PageRank active learning (Fajri et al., IDA 2024, arXiv 2312.04307).

One-shot query with no initial labels: cluster the graph with SCAN, rank nodes by PageRank,
then (Algorithm 1) take the highest-PageRank node of each community and fill the rest of the
budget with the highest global PageRank nodes not yet chosen. The paper does not say which
representatives to keep when there are more communities than budget (SCAN finds 193 on Cora,
230 on CiteSeer, so this is the usual case): here the ``b`` representatives with the highest
PageRank. (Keeping the largest communities' instead measured CiteSeer 42.9 / 56.6 / 60.4 at
b = 10 / 20 / 40 against 47.4 / 48.8 / 55.0, Cora 32.8 / 48.9 / 59.8 against 27.4 / 40.7 / 73.3:
no better overall, and further from the paper's CiteSeer figures.)

``variant="public"`` reproduces the selection of the public notebook
(rickymaulanafajri/SPA, ``SCANPageRankOptimized.query``): communities in discovery order each
give their top ``max(1, remaining // k)`` nodes with ``remaining`` shrinking as it goes, the
list is cut to ``b`` (so with ``k > b`` the first ``b`` communities *in SCAN's random visiting
order* win), then filled by global PageRank. The notebook re-runs SCAN in a ``while`` loop
when the budget is not used up; cdlib marks the graph's nodes as classified on the first run,
so a second run finds no communities and that loop never ends. Here one pass is followed
directly by the global fill.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

from graph_al.pagerank import pagerank
from graph_al.scan import (ScanResult, eps_squared_floor, edge_triangles, scan_device,
                           scan_result, visiting_order, wedge_count)

VARIANTS = ("paper", "public")


class SpaQuery(NamedTuple):
  selected: np.ndarray     # int64 [budget], distinct node ids in selection order
  pagerank: np.ndarray     # float [N]
  clusters: ScanResult


def spa_from_scores(pagerank: np.ndarray, labels: np.ndarray, budget: int,
                    variant: str = "paper") -> np.ndarray:
  """Selects ``budget`` distinct nodes from PageRank scores and community labels (-1: none)."""
  n = pagerank.shape[0]
  if not 0 < budget <= n:
    raise ValueError(f"budget must be in [1, {n}], got {budget}")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  # Global ranking: descending PageRank, ties by node id (a stable sort).
  by_rank = np.argsort(-pagerank, kind="stable")
  if variant == "paper":
    # A community's head is its first member in the global ranking.
    rank_labels = labels[by_rank]
    in_community = np.flatnonzero(rank_labels >= 0)
    first = np.full(int(labels.max(initial=-1)) + 1, n)
    np.minimum.at(first, rank_labels[in_community], in_community)
    chosen_positions = np.sort(first[first < n])[:budget]
    chosen = by_rank[chosen_positions]
  else:
    members = np.flatnonzero(labels >= 0)
    # Community members sorted by (community, descending PageRank, node id).
    ranked = members[np.lexsort((members, -pagerank[members], labels[members]))]
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
                 alpha):
  """SCAN and PageRank in one device program: one dispatch, one transfer back."""
  triangles = edge_triangles(senders, receivers, num_nodes, num_wedges)
  clusters = scan_device(senders, receivers, triangles, order, num_nodes, eps_squared, mu)
  # Symmetric edges: reading each (u, v) as v -> u leaves them sorted by receiver.
  scores, _ = pagerank(receivers, senders, num_nodes, alpha, receivers_sorted=True)
  return clusters, scores


def spa_query(graph, budget: int, *, eps: float = 0.5, mu: int = 3, alpha: float = 0.95,
              seed: int = 0, variant: str = "paper") -> SpaQuery:
  """SCAN + PageRank + selection: the whole SPA query."""
  order = visiting_order(graph.num_nodes, seed)
  clusters, scores = jax.device_get(_device_part(
      *graph.device_edges, order, graph.num_nodes, wedge_count(graph), eps_squared_floor(eps),
      mu, alpha))
  clusters = scan_result(*clusters)
  return SpaQuery(spa_from_scores(scores, clusters.labels, budget, variant), scores, clusters)
