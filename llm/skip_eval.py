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
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrepro.bench import time_fn
from llm import ffnskip
from llm.generate import Generator, SamplingParams, teacher_forced
from llm.model import Llama, LlamaConfig
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
  return rule.replace(active=(jnp.arange(seq) >= warmup)[None, :])


def layer_cosine(split, tokens: np.ndarray) -> np.ndarray:
  """Mean over tokens of cos(h, h + FFN(norm(h))) per layer (the full model)."""
  config = nnx.merge(*split).config
  _, _, cosine = teacher_forced(split, tokens, ffnskip.full_rule(config.num_layers))
  return np.asarray(cosine).reshape(-1, config.num_layers).mean(0)


def layer_drop_cost(split, tokens: np.ndarray, warmup: int) -> np.ndarray:
  """Relative perplexity increase of ``tokens`` when only layer ``l``'s FFN is skipped (after
  ``warmup`` positions), per layer: which FFNs are actually near-identity for the model's
  predictions, as opposed to by the cosine of the hidden state."""
  config = nnx.merge(*split).config
  full, _ = teacher_forced_eval(split, tokens, None, warmup)
  costs = []
  for layer in range(config.num_layers):
    only = np.arange(config.num_layers) == layer
    rule = ffnskip.SkipRule.create("static", config.num_layers, 0, config.num_layers,
                                   static_layers=only)
    costs.append(teacher_forced_eval(split, tokens, rule, warmup)[0] / full - 1.0)
  return np.asarray(costs)


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
  layer_drop_cost: np.ndarray | None = None  # see layer_drop_cost (SkipEvalConfig.layer_drop)


def calibrate(split, tokens: np.ndarray, ratios: Sequence[float], *, k: int = 1,
              warmup: int = 0, seed: int = 0, iters: int = 12, layer_drop: bool = False
              ) -> Calibration:
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
                                                 jax.random.key(seed + i), k)
    rules["static"][ratio] = ffnskip.static_rule(config.num_layers, start, end, ratio, cosine, k)
  drop = layer_drop_cost(split, tokens, warmup) if layer_drop else None
  return Calibration(cosine, start, end, rules, thresholds, drop)


def decode_throughput(generator: Generator, prompt: Sequence[int], new_tokens: int,
                      rules: dict[str, ffnskip.SkipRule | None], warmup: int, rounds: int = 3,
                      warmup_overrides: dict[str, int] | None = None
                      ) -> dict[str, dict[str, float]]:
  """Batch-1 decode speed of each rule (the jitted while-loop only; prefill excluded; no stop
  ids, so exactly ``new_tokens`` tokens) and the fraction of FFN blocks skipped over all decoded
  tokens (warm-up included).

  Rules are timed in interleaved rounds so load changes on a shared machine hit them alike.
  ``tokens_per_s`` is wall clock (median over rounds); ``cpu_tokens_per_s`` uses the process's
  CPU time, which other processes competing for the cores inflate far less; ``speedup`` and
  ``cpu_speedup`` are medians over rounds of the round's ratio to the first rule's time (the
  baseline, listed first). ``warmup_overrides``: other warm-up lengths for some rules.
  """
  no_stop = generator.with_stop_ids(())
  params = SamplingParams(max_new_tokens=new_tokens, warmup_tokens=warmup)
  key, warmup_arr, temperature, top_p = no_stop._common(params)
  logits, cache = no_stop.prefill([prompt], new_tokens)
  first = jnp.argmax(logits, -1).astype(jnp.int32)
  warmups = {name: warmup_arr for name in rules}
  warmups.update({name: jnp.int32(w) for name, w in (warmup_overrides or {}).items()})
  run = {name: functools.partial(no_stop._decode, no_stop.state, cache, first, key, rule,
                                 warmups[name], temperature, top_p, steps=new_tokens)
         for name, rule in rules.items()}
  skipped = {}
  for name, fn in run.items():  # compile, and record the decisions
    _, ran, n = jax.block_until_ready(fn())
    assert int(n) == new_tokens
    skipped[name] = ffnskip.skip_stats(np.asarray(ran)[1:]).ratio
  wall = {name: [] for name in run}
  cpu = {name: [] for name in run}
  for _ in range(rounds):
    for name, fn in run.items():
      start = time.process_time()
      wall[name].append(time_fn(fn, warmup=0, repeats=1).median)
      cpu[name].append(time.process_time() - start)
  base = next(iter(run))
  paired = lambda t, name: float(np.median(np.asarray(t[base]) / np.asarray(t[name])))
  return {name: {"tokens_per_s": (new_tokens - 1) / float(np.median(wall[name])),
                 "cpu_tokens_per_s": (new_tokens - 1) / float(np.median(cpu[name])),
                 "speedup": paired(wall, name), "cpu_speedup": paired(cpu, name),
                 "skip_ratio": skipped[name]} for name in run}


NO_FFN = "no_ffn"  # timing-only rule: every FFN skipped on every token


def ffn_time_share(no_ffn: dict[str, float]) -> float:
  """Measured share of batch-1 decode CPU time spent in FFN blocks, from the timing row of the
  rule that skips them all: ``1 - t(no FFN) / t(full)``. Skipping a fraction ``s`` of the FFN
  blocks then speeds decoding up by at most ``1 / (1 - s * share)``."""
  return 1.0 - 1.0 / no_ffn["cpu_speedup"]


def ffn_weight_share(config: LlamaConfig) -> float:
  """Share of the weights read per decoded token that belong to FFN blocks (attention
  projections, FFNs and the output projection; one embedding row and the norms are negligible).
  Batch-1 decoding is bound by reading weights, so skipping a fraction ``s`` of the FFN blocks
  can at best speed it up by ``1 / (1 - s * share)``."""
  d, hd = config.hidden_size, config.head_dim
  attn = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads)
  ffn = 3 * d * config.intermediate_size
  total = config.num_layers * (attn + ffn) + config.vocab_size * d
  return config.num_layers * ffn / total


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


@dataclasses.dataclass(frozen=True)
class SkipEvalConfig:
  ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
  methods: tuple[str, ...] = ffnskip.METHODS
  num_prompts: int = 20
  prompt_tokens: int = 32
  new_tokens: int = 64  # agreement continuation length
  speed_tokens: int = 64  # batch-1 decode length for tokens/s
  heldout_seqs: int = 8
  calib_seqs: int = 4
  seq_len: int = 128
  warmup_tokens: int = 16
  k: int = 1
  rounds: int = 3
  calib_iters: int = 12
  seed: int = 0
  layer_drop: bool = False  # also measure each FFN's single-skip perplexity cost (L evals)

  def __post_init__(self):
    for name in ("num_prompts", "prompt_tokens", "new_tokens", "heldout_seqs", "calib_seqs",
                 "k", "rounds", "calib_iters"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0 <= self.warmup_tokens < self.seq_len - 1:
      raise ValueError(f"need 0 <= warmup_tokens ({self.warmup_tokens}) < seq_len - 1 "
                       f"({self.seq_len - 1})")
    if self.new_tokens <= self.warmup_tokens:
      raise ValueError(f"new_tokens ({self.new_tokens}) must exceed warmup_tokens "
                       f"({self.warmup_tokens}): skipping starts after the warm-up")
    if self.speed_tokens < 2:
      raise ValueError(f"speed_tokens must be >= 2, got {self.speed_tokens}")


def evaluate_skipping(model: Llama, tokenizer: Tokenizer, corpus, config: SkipEvalConfig,
                      progress=None) -> tuple[dict, Calibration]:
  """For each ratio and method: achieved skip ratios, held-out perplexity, greedy agreement with
  the full model and batch-1 decode tokens/s (ratio 0 is the full model)."""
  for method in config.methods:
    if method not in ffnskip.METHODS:
      raise ValueError(f"unknown method {method!r}; choose from {ffnskip.METHODS}")
  if any(not 0 <= r < 1 for r in config.ratios):
    raise ValueError(f"ratios must be in [0, 1), got {config.ratios}")
  tick = progress or (lambda name, row=None: None)
  split = nnx.split(model)
  generator = Generator(model, pad_id=tokenizer.pad_id, stop_ids=tokenizer.stop_ids)
  calib = token_chunks(tokenizer, corpus.calibration, config.seq_len, config.calib_seqs)
  heldout = token_chunks(tokenizer, corpus.heldout, config.seq_len, config.heldout_seqs)
  prompts = prompt_ids(tokenizer, corpus.prompts, config.prompt_tokens, config.num_prompts)
  cal = calibrate(split, calib, config.ratios, k=config.k, warmup=config.warmup_tokens,
                  seed=config.seed, iters=config.calib_iters, layer_drop=config.layer_drop)
  tick("calibrated")
  full_ppl, _ = teacher_forced_eval(split, heldout, None, config.warmup_tokens)
  params = SamplingParams(max_new_tokens=config.new_tokens)
  reference = generator.with_stop_ids(()).generate(prompts, params).tokens
  tick("reference")
  rules = {"full": None}
  for ratio in config.ratios:
    if ratio > 0:
      for method in config.methods:
        rules[f"{method}@{ratio:g}"] = cal.rules[method][ratio]
  layers = model.config.num_layers
  no_ffn = ffnskip.SkipRule.create("static", layers, 0, layers,
                                   static_layers=np.ones(layers, bool))
  speed = decode_throughput(generator, prompts[0], config.speed_tokens,
                            {**rules, NO_FFN: no_ffn}, config.warmup_tokens, config.rounds,
                            warmup_overrides={NO_FFN: 0})
  tick("timed", speed)
  ffn_share = ffn_weight_share(model.config)
  time_share = ffn_time_share(speed.pop(NO_FFN))
  results = {"full": {"method": "full", "target_ratio": 0.0, "perplexity": full_ppl,
                      "heldout_skip_ratio": 0.0, "agreement": 1.0, "decode_skip_ratio": 0.0,
                      "ffn_time_share": time_share, **speed["full"]}}
  for name, rule in rules.items():
    if rule is None:
      continue
    method, ratio = name.split("@")
    ppl, tf_ratio = teacher_forced_eval(split, heldout, rule, config.warmup_tokens)
    agree, gen_ratio = agreement(generator, prompts, reference, rule, config.new_tokens,
                                 config.warmup_tokens)
    results[name] = {"method": method, "target_ratio": float(ratio), "perplexity": ppl,
                     "heldout_skip_ratio": tf_ratio, "agreement": agree,
                     "decode_skip_ratio": gen_ratio,
                     "weight_read_bound_speedup":
                         1.0 / (1.0 - speed[name]["skip_ratio"] * ffn_share),
                     "time_share_bound_speedup":
                         1.0 / (1.0 - speed[name]["skip_ratio"] * time_share),
                     **speed[name]}
    tick(name, results[name])
  return results, cal
