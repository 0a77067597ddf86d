"""Batched generation: jitted prefill, then a ``lax.while_loop`` decode over a preallocated KV cache.

Prompts are left-padded to a common bucketed length (``KVCache.start`` masks the padding), so a
handful of compiled shapes serve any prompt. Sampling is greedy (temperature 0) or temperature
plus nucleus (top-p; Holtzman et al. 2020, arXiv:1904.09751). Generation stops per row on a stop
id and for the whole batch once every row has stopped. An optional :class:`llm.ffnskip.SkipRule`
gates the MLPs of each decoded token after ``warmup_tokens`` tokens (FFN-SkipLLM).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.ffnskip import SkipRule, gate_ffn_rule
from llm.model import KVCache, Llama

PROMPT_BUCKET = 32  # prompt lengths are left-padded up to a multiple of this


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_new_tokens: int = 64
  temperature: float = 0.0  # 0: greedy
  top_p: float = 1.0
  seed: int = 0
  warmup_tokens: int = 0  # FFN-SkipLLM: first generated tokens run the full model

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Generation(NamedTuple):
  tokens: list[list[int]]  # generated ids per row, up to and excluding the stop id
  stopped: list[bool]  # row ended on a stop id (else: max_new_tokens)
  ffn_ran: np.ndarray  # (steps, batch, num_layers) bool; all True without a skip rule


def sample(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array
           ) -> jax.Array:
  """Next ids ``(batch,)`` from logits ``(batch, vocab)``: argmax when ``temperature == 0``,
  else a draw from the smallest set of top tokens whose probability reaches ``top_p``."""
  def draw(logits):
    scaled = logits / jnp.maximum(temperature, 1e-6)
    order = jnp.argsort(-scaled, axis=-1)
    sorted_logits = jnp.take_along_axis(scaled, order, -1)
    probs = jax.nn.softmax(sorted_logits, -1)
    keep = (jnp.cumsum(probs, -1) - probs) < top_p  # the top token is always kept
    choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf), -1)
    return jnp.take_along_axis(order, choice[:, None], -1)[:, 0]
  return jax.lax.cond(temperature > 0, draw, lambda l: jnp.argmax(l, -1), logits)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, bucket: int = PROMPT_BUCKET
                ) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads id lists to a multiple of ``bucket``; returns ``(tokens, start)``."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  length = -(-max(len(p) for p in prompts) // bucket) * bucket
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  start = np.array([length - len(p) for p in prompts], np.int32)
  for row, p in enumerate(prompts):
    tokens[row, start[row]:] = p
  return tokens, start


class Generator:
  """Jitted prefill/decode for one model; reuse it so compiled shapes are cached."""

  def __init__(self, model: Llama, *, pad_id: int = 0, stop_ids: Sequence[int] = ()):
    self.config = model.config
    self.graphdef, self.state = nnx.split(model)
    self.pad_id = pad_id
    self.stop_ids = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
    self._prefill = jax.jit(self._prefill_impl, static_argnames="cache_len")
    self._decode = jax.jit(self._decode_impl, static_argnames=("steps",))
    self._step = jax.jit(self._step_impl, donate_argnums=(1,))
    self._variants: dict[tuple[int, ...], Generator] = {}

  def with_stop_ids(self, stop_ids: Sequence[int]) -> "Generator":
    """The same model with other stop ids (e.g. none, to decode a fixed number of tokens);
    memoized, so its compiled functions are reused."""
    key = tuple(stop_ids)
    if key not in self._variants:
      self._variants[key] = Generator(nnx.merge(self.graphdef, self.state), pad_id=self.pad_id,
                                      stop_ids=key)
    return self._variants[key]

  def _model(self, state) -> Llama:
    return nnx.merge(self.graphdef, state)

  def _prefill_impl(self, state, tokens, start, cache_len: int):
    cache = KVCache.init(self.config, tokens.shape[0], cache_len, start=start)
    out = self._model(state).forward(tokens, cache=cache, last_logits_only=True)
    return out.logits[:, -1], out.cache

  def _step_impl(self, state, cache, token, key, step, rule, warmup, temperature, top_p):
    """One decode step: feed ``token`` (batch,), return the next ids and the cache."""
    model = self._model(state)
    sample_key, rule_key = jax.random.split(jax.random.fold_in(key, step))
    rule = gate_ffn_rule(rule, step >= warmup, rule_key)
    out = model.forward(token[:, None], cache=cache, ffn_gate=rule)
    ran = (out.ffn_ran[:, 0] if rule is not None
           else jnp.ones((token.shape[0], self.config.num_layers), bool))
    return sample(out.logits[:, -1], sample_key, temperature, top_p), out.cache, ran

  def _decode_impl(self, state, cache, first, key, rule, warmup, temperature, top_p,
                   steps: int):
    """``lax.while_loop`` over up to ``steps`` tokens, ``first`` being the prefill's sample."""
    batch = first.shape[0]
    tokens = jnp.full((steps, batch), self.pad_id, jnp.int32).at[0].set(first)
    ran = jnp.ones((steps, batch, self.config.num_layers), bool)
    done = jnp.isin(first, self.stop_ids)

    def cond(carry):
      i, _, _, _, done = carry
      return (i < steps) & ~jnp.all(done)

    def body(carry):
      i, cache, tokens, ran, done = carry
      # Step i consumes token i-1 and samples token i; token 0 came from the prefill.
      nxt, cache, step_ran = self._step_impl(state, cache, tokens[i - 1], key, i, rule, warmup,
                                             temperature, top_p)
      nxt = jnp.where(done, self.pad_id, nxt)
      return (i + 1, cache, tokens.at[i].set(nxt), ran.at[i].set(step_ran),
              done | jnp.isin(nxt, self.stop_ids))

    n, cache, tokens, ran, done = jax.lax.while_loop(
        cond, body, (jnp.int32(1), cache, tokens, ran, done))
    return tokens, ran, n

  def prefill(self, prompts: Sequence[Sequence[int]], max_new_tokens: int):
    """Prefills left-padded prompts; returns ``(last_logits, cache)``."""
    tokens, start = pad_prompts(prompts, self.pad_id)
    cache_len = tokens.shape[1] + -(-max_new_tokens // PROMPT_BUCKET) * PROMPT_BUCKET
    return self._prefill(self.state, jnp.asarray(tokens), jnp.asarray(start),
                         cache_len=cache_len)

  def _common(self, params: SamplingParams):
    return (jax.random.key(params.seed), jnp.int32(params.warmup_tokens),
            jnp.float32(params.temperature), jnp.float32(params.top_p))

  def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams = SamplingParams(),
               rule: SkipRule | None = None) -> Generation:
    """Generates for a batch of id lists in one jitted prefill and one jitted decode loop."""
    key, warmup, temperature, top_p = self._common(params)
    logits, cache = self.prefill(prompts, params.max_new_tokens)
    first = sample(logits, jax.random.fold_in(key, 0), temperature, top_p)
    tokens, ran, n = self._decode(self.state, cache, first, key, rule, warmup, temperature,
                                  top_p, steps=params.max_new_tokens)
    tokens, ran, n = np.asarray(tokens), np.asarray(ran), int(n)
    stop = set(np.asarray(self.stop_ids).tolist())
    out, stopped = [], []
    for row in range(tokens.shape[1]):
      ids = tokens[:n, row].tolist()
      hit = next((j for j, t in enumerate(ids) if t in stop), None)
      out.append(ids if hit is None else ids[:hit])
      stopped.append(hit is not None)
    return Generation(out, stopped, ran[:n])

  def stream(self, prompt: Sequence[int], params: SamplingParams = SamplingParams(),
             rule: SkipRule | None = None) -> Iterator[int]:
    """Yields generated ids of one prompt as they are decoded (jitted step per token)."""
    key, warmup, temperature, top_p = self._common(params)
    logits, cache = self.prefill([prompt], params.max_new_tokens)
    token = sample(logits, jax.random.fold_in(key, 0), temperature, top_p)
    stop = set(np.asarray(self.stop_ids).tolist())
    for i in range(1, params.max_new_tokens + 1):
      value = int(token[0])
      if value in stop:
        return
      yield value
      if i == params.max_new_tokens:
        return
      token, cache, _ = self._step(self.state, cache, token, key, jnp.int32(i), rule, warmup,
                                   temperature, top_p)


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(graphdef, state, tokens, rule):
  out = nnx.merge(graphdef, state).forward(tokens[:, :-1], ffn_gate=rule)
  logp = jax.nn.log_softmax(out.logits, -1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  return nll, out.ffn_ran, out.ffn_cosine


def teacher_forced(model_or_split, tokens: np.ndarray, rule: SkipRule | None = None):
  """Per-token negative log-likelihood ``(batch, seq-1)`` of ``tokens`` and, with a rule, the
  FFN decisions and cosines ``(batch, seq-1, num_layers)`` (FFN-SkipLLM's rule applied per
  token, as in decoding)."""
  graphdef, state = (nnx.split(model_or_split) if isinstance(model_or_split, nnx.Module)
                     else model_or_split)
  return _teacher_forced(graphdef, state, jnp.asarray(tokens), rule)
