"""FFN-SkipLLM calibration and evaluation (arXiv:2404.03865, Sec. 4-5 and Table 3).

Calibration (on text disjoint from the evaluation text): per-layer mean cosine between the state
entering and leaving each FFN block sets the cold regions; the adaptive threshold is bisected to
reach a target fraction of skipped FFN blocks; random and static baselines skip the same
fraction. Evaluation: achieved skip ratio, held-out perplexity under teacher forcing with the same
rule (warm-up positions run the full model), greedy-continuation agreement with the full model,
and batch-1 decode tokens/s.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrepro.bench import time_fn
from llm import ffnskip
from llm.generate import Generator, SamplingParams, teacher_forced
from llm.model import Llama
from llm.tokenizer import Tokenizer


def token_chunks(tokenizer: Tokenizer, texts: Sequence[str], length: int, count: int
                 ) -> np.ndarray:
  """``(count, length)`` ids: the first ``length`` tokens of each of the first texts that long."""
  rows = []
  for text in texts:
    ids = tokenizer.encode(text)
    if len(ids) >= length:
      rows.append(ids[:length])
    if len(rows) == count:
      return np.asarray(rows, np.int32)
  raise ValueError(f"only {len(rows)} texts have {length} tokens; {count} needed")


def prompt_ids(tokenizer: Tokenizer, texts: Sequence[str], length: int, count: int
               ) -> list[list[int]]:
  return [list(row) for row in token_chunks(tokenizer, texts, length, count)]


def _active(rule: ffnskip.SkipRule, seq: int, warmup: int) -> ffnskip.SkipRule:
  """Teacher forcing: positions before ``warmup`` run the full model, as in decoding."""
  return rule.replace(active=(jnp.arange(seq) >= warmup)[None, :],
                      key=rule.key if rule.method == "random" else None)


def layer_cosine(split, tokens: np.ndarray) -> np.ndarray:
  """Mean over tokens of cos(h, h + FFN(norm(h))) per layer (the full model)."""
  config = nnx.merge(*split).config
  _, _, cosine = teacher_forced(split, tokens, ffnskip.full_rule(config.num_layers))
  return np.asarray(cosine).reshape(-1, config.num_layers).mean(0)


def teacher_forced_eval(split, tokens: np.ndarray, rule: ffnskip.SkipRule | None,
                        warmup: int) -> tuple[float, float]:
  """(perplexity, skip ratio over active positions) of ``tokens`` under ``rule``."""
  if rule is None:
    nll, _, _ = teacher_forced(split, tokens)
    return float(np.exp(np.mean(nll))), 0.0
  nll, ran, _ = teacher_forced(split, tokens, _active(rule, tokens.shape[1] - 1, warmup))
  weights = np.broadcast_to(np.arange(tokens.shape[1] - 1) >= warmup, ran.shape[:2])
  return float(np.exp(np.mean(nll))), ffnskip.skip_stats(np.asarray(ran), weights).ratio


@dataclasses.dataclass
class Calibration:
  layer_cosine: np.ndarray
  cold_start: int
  cold_end: int
  rules: dict[str, dict[float, ffnskip.SkipRule]]  # method -> ratio -> rule
  thresholds: dict[float, float]


def calibrate(split, tokens: np.ndarray, ratios: Sequence[float], *, k: int = 1,
              warmup: int = 0, seed: int = 0, iters: int = 12) -> Calibration:
  """Cold regions from layer statistics, then adaptive/random/static rules per target ratio."""
  config = nnx.merge(*split).config
  cosine = layer_cosine(split, tokens)
  start, end = ffnskip.cold_regions(cosine)
  rules: dict[str, dict[float, ffnskip.SkipRule]] = {m: {} for m in ffnskip.METHODS}
  thresholds = {}
  for i, ratio in enumerate(r for r in ratios if r > 0):
    def ratio_at(threshold):
      rule = ffnskip.adaptive_rule(config.num_layers, start, end, threshold, k)
      return teacher_forced_eval(split, tokens, rule, warmup)[1]
    threshold, _ = ffnskip.calibrate_threshold(ratio_at, ratio, iters=iters)
    thresholds[ratio] = threshold
    rules["adaptive"][ratio] = ffnskip.adaptive_rule(config.num_layers, start, end, threshold, k)
    rules["random"][ratio] = ffnskip.random_rule(config.num_layers, start, end, ratio,
                                                 jax.random.key(seed + i))
    rules["static"][ratio] = ffnskip.static_rule(config.num_layers, start, end, ratio, cosine)
  return Calibration(cosine, start, end, rules, thresholds)


def decode_tokens_per_second(generator: Generator, prompt: Sequence[int], new_tokens: int,
                             rule: ffnskip.SkipRule | None, warmup: int, repeats: int = 3
                             ) -> tuple[float, float]:
  """Batch-1 decode throughput (the jitted while-loop only; prefill excluded) and the fraction
  of FFN blocks skipped over all decoded tokens. No stop ids: exactly ``new_tokens`` tokens."""
  params = SamplingParams(max_new_tokens=new_tokens, warmup_tokens=warmup)
  key, warmup_arr, temperature, top_p = generator._common(params)
  logits, cache = generator.prefill([prompt], new_tokens)
  first = jnp.argmax(logits, -1).astype(jnp.int32)
  decode = generator.with_stop_ids(())._decode
  args = (generator.state, cache, first, key, rule, warmup_arr, temperature, top_p)
  timing = time_fn(decode, *args, steps=new_tokens, repeats=repeats)
  _, ran, n = decode(*args, steps=new_tokens)
  assert int(n) == new_tokens
  return (new_tokens - 1) / timing.median, ffnskip.skip_stats(np.asarray(ran)[1:]).ratio


def agreement(generator: Generator, prompts: list[list[int]], reference: list[list[int]],
              rule: ffnskip.SkipRule | None, new_tokens: int, warmup: int
              ) -> tuple[float, float]:
  """Token match rate of greedy continuations with ``reference`` (position by position over
  ``new_tokens``; stop ids are ignored) and the skip ratio over active steps."""
  out = generator.with_stop_ids(()).generate(prompts, SamplingParams(max_new_tokens=new_tokens,
                                                   warmup_tokens=warmup), rule)
  matches = [sum(a == b for a, b in zip(got, ref)) / new_tokens
             for got, ref in zip(out.tokens, reference)]
  active = np.arange(len(out.ffn_ran)) >= max(warmup, 1)
  weights = np.broadcast_to(active[:, None], out.ffn_ran.shape[:2])
  return float(np.mean(matches)), ffnskip.skip_stats(out.ffn_ran, weights).ratio
