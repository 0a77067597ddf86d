"""Straightforward networkx versions of SCAN, the references for tests and benchmarks.

:func:`scan_networkx` is a direct transcription of the sequential algorithm of Xu et al.
(2007) as cdlib's ``scan`` runs it (which the SPA code calls): visit nodes in ``order``,
grow a cluster from each unclassified core by breadth-first search through eps-neighbours.
One similarity per neighbour pair, computed with Python sets: slow on purpose.
:func:`scan_paper_networkx` transcribes the SPA paper's own Eq. 3-4 the same way.
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


def scan_paper_networkx(g: nx.Graph, eps: float = 0.5, mu: int = 3) -> list[list]:
  """Communities of the SPA paper's SCAN (arXiv 2312.04307, Eq. 3-4): an edge ``(i, j)`` links
  its ends when ``S(i, j) = |N(i) ∩ N(j)| / sqrt(|N(i)| |N(j)|) >= eps`` and
  ``|N(i) ∩ N(j)| >= mu`` (open neighbourhoods); communities are the connected components of
  the linked edges, as sorted node lists ordered by their smallest node."""
  linked = nx.Graph()
  for i, j in g.edges:
    shared = len(set(g.neighbors(i)) & set(g.neighbors(j)))
    if shared >= mu and shared / math.sqrt(g.degree(i) * g.degree(j)) >= eps:
      linked.add_edge(i, j)
  return sorted(sorted(c) for c in nx.connected_components(linked))
