"""FFN-SkipLLM: input-adaptive skipping of feed-forward blocks during decoding.

Jaiswal et al. 2024, "FFN-SkipLLM: A Hidden Gem for Autoregressive Decoding with Adaptive Feed
Forward Skipping" (arXiv:2404.03865; no official code). Sec. 3 observes that the FFN blocks of
the middle layers barely change the hidden state (cosine similarity between the state entering
and leaving an FFN block close to 1) and that such layers come in runs; Sec. 4 (Algorithm 1):

- the first ``warmup_tokens`` generated tokens run the full model (they act as attention sinks);
- layers before ``cold_start`` and from ``cold_end`` on always run their FFN ("cold regions");
- in between, after each FFN that runs, cos(h, h + FFN(norm(h))) is compared with ``threshold``;
  once it reaches it, the next ``k`` FFN blocks are skipped, then the rule checks again.
  Attention always runs, so the KV cache stays complete. Decisions are per token.

Baselines of Table 3 in the same code path: ``random`` skips each middle-region FFN with a fixed
probability (per token), ``static`` skips a fixed set of layers for every token.

A :class:`SkipRule` implements ``llm.model.FFNGate``; it is a pytree whose numbers are arrays
(``threshold``, ``skip_prob``, ``static_layers``, ``key``, ``active``), so calibrating it or
switching warm-up off does not recompile. The model skips a layer's MLP with ``lax.cond`` when no
token of the batch needs it: with batch 1 every skip saves its compute.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

METHODS = ("adaptive", "random", "static")


@struct.dataclass
class SkipRule:
  """FFN gate; see the module docstring. Middle region: ``cold_start <= layer < cold_end``."""
  method: str = struct.field(pytree_node=False)
  num_layers: int = struct.field(pytree_node=False)
  cold_start: int = struct.field(pytree_node=False)
  cold_end: int = struct.field(pytree_node=False)
  k: int = struct.field(pytree_node=False, default=1)
  threshold: jax.Array = 2.0  # adaptive: skip after cos >= threshold (> 1: never)
  skip_prob: jax.Array = 0.0  # random: P(skip) per middle-region FFN
  static_layers: jax.Array | None = None  # static: (num_layers,) bool, layers always skipped
  key: jax.Array | None = None  # random: PRNG key of this step
  active: jax.Array = True  # False during warm-up: the full model runs

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"unknown skip method {self.method!r}; choose from {METHODS}")
    if not 0 <= self.cold_start <= self.cold_end <= self.num_layers:
      raise ValueError(f"need 0 <= cold_start ({self.cold_start}) <= cold_end ({self.cold_end})"
                       f" <= num_layers ({self.num_layers})")
    if self.k < 1:
      raise ValueError(f"k must be >= 1, got {self.k}")

  # ---- llm.model.FFNGate -----------------------------------------------------------------

  def init(self, batch_shape: tuple[int, ...]) -> jax.Array:
    return jnp.zeros(batch_shape, jnp.int32)  # adaptive: FFNs still to skip

  def decide(self, layer: int, remaining: jax.Array) -> jax.Array:
    run_all = jnp.ones(remaining.shape, bool)
    if not self.cold_start <= layer < self.cold_end:
      return run_all
    if self.method == "adaptive":
      run = remaining == 0
    elif self.method == "random":
      u = jax.random.uniform(jax.random.fold_in(self.key, layer), remaining.shape)
      run = u >= self.skip_prob
    else:
      run = jnp.broadcast_to(~self.static_layers[layer], remaining.shape)
    return jnp.where(self.active, run, run_all)

  def update(self, layer: int, remaining: jax.Array, ran: jax.Array, cosine: jax.Array
             ) -> jax.Array:
    if self.method != "adaptive" or not self.cold_start <= layer < self.cold_end:
      return remaining
    return jnp.where(ran, jnp.where(cosine >= self.threshold, self.k, 0), remaining - 1)


def full_rule(num_layers: int) -> SkipRule:
  """A rule that never skips but still reports every layer's cosine (for statistics)."""
  return SkipRule("adaptive", num_layers, 0, num_layers, threshold=jnp.float32(2.0))


def adaptive_rule(num_layers: int, cold_start: int, cold_end: int, threshold: float,
                  k: int = 1) -> SkipRule:
  return SkipRule("adaptive", num_layers, cold_start, cold_end, k,
                  threshold=jnp.float32(threshold))


def random_rule(num_layers: int, cold_start: int, cold_end: int, ratio: float, key: jax.Array
                ) -> SkipRule:
  """Skips a fraction ``ratio`` of all FFN blocks at random within the middle region."""
  middle = cold_end - cold_start
  prob = min(1.0, ratio * num_layers / max(middle, 1))
  return SkipRule("random", num_layers, cold_start, cold_end, skip_prob=jnp.float32(prob),
                  key=key)


def static_rule(num_layers: int, cold_start: int, cold_end: int, ratio: float,
                layer_scores: np.ndarray) -> SkipRule:
  """Always skips the ``round(ratio * num_layers)`` middle-region layers whose FFN changes the
  state least (highest mean calibration cosine): the same layers adaptive skipping favours,
  chosen once instead of per token."""
  n = int(round(ratio * num_layers))
  middle = np.arange(cold_start, cold_end)
  if n > len(middle):
    raise ValueError(f"cannot skip {n} of {len(middle)} middle-region layers")
  chosen = middle[np.argsort(-np.asarray(layer_scores)[middle], kind="stable")[:n]]
  mask = np.zeros(num_layers, bool)
  mask[chosen] = True
  return SkipRule("static", num_layers, cold_start, cold_end, static_layers=jnp.asarray(mask))


def cold_regions(mean_cosine: np.ndarray, quantile: float = 0.5) -> tuple[int, int]:
  """Cold start/end from per-layer mean cosine (Sec. 3, Fig. 2): the middle region spans from the
  first to the last layer whose mean cosine reaches the ``quantile`` of all layers' means, so
  the low-similarity layers at both ends always run."""
  mean_cosine = np.asarray(mean_cosine)
  level = np.quantile(mean_cosine, quantile)
  warm = np.nonzero(mean_cosine >= level)[0]
  return int(warm[0]), int(warm[-1]) + 1


class SkipStats(NamedTuple):
  """Per-layer skip fraction and overall fraction of FFN blocks skipped."""
  per_layer: np.ndarray
  ratio: float


def skip_stats(ffn_ran: np.ndarray, weights: np.ndarray | None = None) -> SkipStats:
  """``ffn_ran`` ``(..., num_layers)`` bool; ``weights`` ``(...)`` selects/weights tokens."""
  ran = np.asarray(ffn_ran, np.float64)
  ran = ran.reshape(-1, ran.shape[-1])
  w = np.ones(len(ran)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  per_layer = 1.0 - (w @ ran) / max(w.sum(), 1e-12)
  return SkipStats(per_layer, float(per_layer.mean()))


def calibrate_threshold(skip_ratio_fn, target: float, *, lo: float = 0.5, hi: float = 1.0,
                        iters: int = 14) -> tuple[float, float]:
  """Bisects ``threshold`` so that ``skip_ratio_fn(threshold)`` (non-increasing in it) is
  closest to ``target``; returns ``(threshold, achieved ratio)``."""
  if not 0.0 <= target < 1.0:
    raise ValueError(f"target skip ratio must be in [0, 1), got {target}")
  if target == 0.0:
    return 2.0, skip_ratio_fn(2.0)
  best = (hi, skip_ratio_fn(hi))
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    ratio = skip_ratio_fn(mid)
    if abs(ratio - target) < abs(best[1] - target):
      best = (mid, ratio)
    if ratio > target:
      lo = mid
    else:
      hi = mid
  return best


def gate_ffn_rule(rule: SkipRule | None, active: Any, key: jax.Array | None) -> SkipRule | None:
  """``rule`` for one decode step: warm-up flag and this step's random key."""
  if rule is None:
    return None
  return rule.replace(active=jnp.asarray(active), key=key if rule.method == "random" else None)
