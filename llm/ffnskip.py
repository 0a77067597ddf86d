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

A :class:`SkipRule` implements ``llm.model.FFNGate``; it is a pytree whose numbers (the method
included) are arrays, so calibrating it, switching method or warm-up does not recompile. The
model skips a layer's MLP with ``lax.cond`` when no token of the batch needs it: with batch 1
every skip saves the MLP's weight reads and FLOPs (its matmuls exist only inside the cond's
"run" branch; ``tests/llm/test_ffnskip.py`` checks the jaxpr and the compiled HLO). Batch-1
decoding is bound by reading weights, so a fraction ``s`` of FFN blocks skipped speeds it up by
at most ``1 / (1 - s * share)``, ``share`` being the FFN part of the weights read per token
(``llm.skip_eval.ffn_weight_share``: 0.59 for SmolLM2-135M, so <= 1.17x at s = 0.25) or, as
measured, of the decode time (``llm.skip_eval.ffn_time_share``: ~0.57 on a 2-core CPU).
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
  """FFN gate; see the module docstring. Middle region: ``cold_start <= layer < cold_end``.

  The method is an array (an index into ``METHODS``) and every field is always present, so all
  rules with the same cold regions share one compiled program.
  """
  num_layers: int = struct.field(pytree_node=False)
  cold_start: int = struct.field(pytree_node=False)
  cold_end: int = struct.field(pytree_node=False)
  k: int = struct.field(pytree_node=False)
  method_id: jax.Array  # index into METHODS
  threshold: jax.Array  # adaptive: skip after cos >= threshold (> 1: never)
  skip_prob: jax.Array  # random: P(skip) per middle-region FFN
  static_layers: jax.Array  # static: (num_layers,) bool, layers always skipped
  key: jax.Array  # random: PRNG key (per decode step)
  active: jax.Array  # False during warm-up: the full model runs (broadcasts to (batch, seq))

  @classmethod
  def create(cls, method: str, num_layers: int, cold_start: int, cold_end: int, k: int = 1, *,
             threshold: float = 2.0, skip_prob: float = 0.0, static_layers=None,
             key: jax.Array | None = None) -> "SkipRule":
    if method not in METHODS:
      raise ValueError(f"unknown skip method {method!r}; choose from {METHODS}")
    if not 0 <= cold_start <= cold_end <= num_layers:
      raise ValueError(f"need 0 <= cold_start ({cold_start}) <= cold_end ({cold_end})"
                       f" <= num_layers ({num_layers})")
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    static = (jnp.zeros(num_layers, bool) if static_layers is None
              else jnp.asarray(static_layers, bool))
    return cls(num_layers, cold_start, cold_end, k, jnp.int32(METHODS.index(method)),
               jnp.float32(threshold), jnp.float32(skip_prob), static,
               jax.random.key(0) if key is None else key, jnp.asarray(True))

  @property
  def method(self) -> str:
    return METHODS[int(self.method_id)]

  # ---- llm.model.FFNGate -----------------------------------------------------------------

  def init(self, batch_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``(FFNs still to skip (adaptive), uniform draws (num_layers, *batch_shape) (random))``.

    The random baseline's draws for all layers come from one call here rather than one per
    layer, which would add a threefry loop per layer to every decode step of every method."""
    draws = jax.random.uniform(self.key, (self.num_layers, *batch_shape))
    return jnp.zeros(batch_shape, jnp.int32), draws

  def decide(self, layer: int, state: tuple[jax.Array, jax.Array]) -> jax.Array:
    remaining, draws = state
    run_all = jnp.ones(remaining.shape, bool)
    if not self.cold_start <= layer < self.cold_end:
      return run_all
    adaptive = remaining == 0
    random = draws[layer] >= self.skip_prob
    static = jnp.broadcast_to(~self.static_layers[layer], remaining.shape)
    run = jnp.select([self.method_id == 0, self.method_id == 1], [adaptive, random], static)
    return jnp.where(self.active, run, run_all)

  def update(self, layer: int, state: tuple[jax.Array, jax.Array], ran: jax.Array,
             cosine: jax.Array) -> tuple[jax.Array, jax.Array]:
    remaining, draws = state
    if not self.cold_start <= layer < self.cold_end:
      return state
    adaptive = jnp.where(ran, jnp.where(cosine >= self.threshold, self.k, 0), remaining - 1)
    return jnp.where(self.method_id == 0, adaptive, remaining), draws


def full_rule(num_layers: int) -> SkipRule:
  """A rule that never skips but still reports every layer's cosine (for statistics)."""
  return SkipRule.create("adaptive", num_layers, 0, num_layers, threshold=2.0)


def adaptive_rule(num_layers: int, cold_start: int, cold_end: int, threshold: float,
                  k: int = 1) -> SkipRule:
  return SkipRule.create("adaptive", num_layers, cold_start, cold_end, k, threshold=threshold)


def random_rule(num_layers: int, cold_start: int, cold_end: int, ratio: float, key: jax.Array,
                k: int = 1) -> SkipRule:
  """Skips a fraction ``ratio`` of all FFN blocks at random within the middle region."""
  middle = cold_end - cold_start
  prob = min(1.0, ratio * num_layers / max(middle, 1))
  return SkipRule.create("random", num_layers, cold_start, cold_end, k, skip_prob=prob, key=key)


def static_rule(num_layers: int, cold_start: int, cold_end: int, ratio: float,
                layer_scores: np.ndarray, k: int = 1) -> SkipRule:
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
  return SkipRule.create("static", num_layers, cold_start, cold_end, k, static_layers=mask)


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
  """``ffn_ran`` ``(..., num_layers)`` bool; ``weights`` ``(...)`` selects/weights tokens.
  With no token selected (e.g. every token inside the warm-up) the ratios are NaN: nothing
  was measured, and 0/0 must not read as "everything skipped"."""
  ran = np.asarray(ffn_ran, np.float64)
  ran = ran.reshape(-1, ran.shape[-1])
  w = np.ones(len(ran)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  if w.sum() == 0:
    nothing = np.full(ran.shape[-1], np.nan)
    return SkipStats(nothing, float("nan"))
  per_layer = 1.0 - (w @ ran) / w.sum()
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
  return rule.replace(active=jnp.asarray(active), key=key)
