"""Straightforward networkx versions of SCAN, the references for tests and benchmarks.

:func:`scan_networkx` is a direct transcription of the sequential algorithm of Xu et al.
(2007) as cdlib's ``scan`` runs it (which the SPA code calls): visit nodes in ``order``,
grow a cluster from each unclassified core by breadth-first search through eps-neighbours.
One similarity per neighbour pair, computed with Python sets: slow on purpose.
"""

from __future__ import annotations

import math
from collections import deque

import networkx as nx


def structural_similarity_networkx(g: nx.Graph, u, v) -> float:
  closed_u = set(g.neighbors(u)) | {u}
  closed_v = set(g.neighbors(v)) | {v}
  return len(closed_u & closed_v) / math.sqrt(len(closed_u) * len(closed_v))


def scan_networkx(g: nx.Graph, eps: float = 0.5, mu: int = 3, order=None,
                  count_self: bool = False) -> list[list]:
  """Clusters (lists of nodes, in creation order) of sequential SCAN visiting ``order``;
  ``count_self``: ``u``'s eps-neighbourhood is taken in its closed neighbourhood, so holds
  ``u`` itself (Xu et al.), else only adjacent nodes (cdlib)."""
  def eps_neighbours(u):
    candidates = list(g.neighbors(u)) + ([u] if count_self else [])
    return [v for v in candidates if structural_similarity_networkx(g, u, v) >= eps]

  classified = set()
  clusters = []
  for seed in (list(g.nodes) if order is None else order):
    if seed in classified or len(eps_neighbours(seed)) < mu:
      continue
    cluster = [seed]
    classified.add(seed)
    queue = deque(eps_neighbours(seed))
    while queue:
      u = queue.popleft()
      if u not in classified:
        classified.add(u)
        cluster.append(u)
      reachable = eps_neighbours(u)
      if len(reachable) < mu:
        continue
      for v in reachable:
        if v not in classified:
          classified.add(v)
          cluster.append(v)
          queue.append(v)
    clusters.append(cluster)
  return clusters
