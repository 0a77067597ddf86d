"""Generation against naive full recomputation; sampling distribution against softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.generate import Generator, SamplingParams, pad_prompts, sample
from llm.model import CONFIGS, Llama

TINY = CONFIGS["tiny"]


@pytest.fixture(scope="module")
def model():
  model = Llama(TINY, rngs=nnx.Rngs(0))
  for layer in model.layers:  # a less flat distribution than the 0.02 init gives
    layer.mlp.down_proj.kernel[...] *= 20
  return model


@nnx.jit
def _full_logits(model, buffer):
  return model(buffer)[0]


def _naive_greedy(model, prompt, steps, length=32):
  """Re-runs the whole causal model on the sequence so far for every token (no cache); a fixed
  zero-filled buffer keeps one compiled shape (causality ignores what follows)."""
  ids = list(prompt)
  for _ in range(steps):
    buffer = np.zeros((1, length), np.int32)
    buffer[0, :len(ids)] = ids
    ids.append(int(jnp.argmax(_full_logits(model, jnp.asarray(buffer))[0, len(ids) - 1])))
  return ids[len(prompt):]


def test_batched_greedy_equals_naive_recomputation(model):
  prompts = [[5, 9, 2], [7, 1, 4, 4, 8, 30, 12], [100]]
  out = Generator(model).generate(prompts, SamplingParams(max_new_tokens=10))
  for prompt, got in zip(prompts, out.tokens):
    assert got == _naive_greedy(model, prompt, 10)
  assert out.ffn_ran.all() and out.stopped == [False] * 3


def test_stream_equals_generate_and_stops(model):
  prompt = [3, 1, 4, 1, 5]
  reference = _naive_greedy(model, prompt, 12)
  generator = Generator(model)
  assert list(generator.stream(prompt, SamplingParams(max_new_tokens=12))) == reference
  stop = reference[5]
  first = reference.index(stop)
  stopping = Generator(model, stop_ids=[stop])
  out = stopping.generate([prompt], SamplingParams(max_new_tokens=12))
  assert out.tokens[0] == reference[:first] and out.stopped == [True]
  assert list(stopping.stream(prompt, SamplingParams(max_new_tokens=12))) == reference[:first]


def test_pad_prompts_left_pads_to_bucket():
  tokens, start = pad_prompts([[1, 2], [3, 4, 5]], pad_id=0, bucket=4)
  np.testing.assert_array_equal(tokens, [[0, 0, 1, 2], [0, 3, 4, 5]])
  np.testing.assert_array_equal(start, [2, 1])
  with pytest.raises(ValueError):
    pad_prompts([[1], []], pad_id=0)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_sampling_frequencies_match_nucleus_softmax(temperature, top_p):
  logits = jnp.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  draws = jax.vmap(lambda k: sample(logits, k, jnp.float32(temperature), jnp.float32(top_p)))(
      keys)[:, 0]
  freq = np.bincount(np.asarray(draws), minlength=6) / n
  # Reference: numpy softmax, keep the smallest prefix (by probability) whose mass reaches top_p.
  p = np.exp(np.asarray(logits[0], np.float64) / temperature)
  p /= p.sum()
  keep = (np.cumsum(p) - p) < top_p  # logits are sorted already
  q = np.where(keep, p, 0.0)
  q /= q.sum()
  assert np.all(np.abs(freq - q) <= 4 * np.sqrt(q * (1 - q) / n) + 1e-9), (freq, q)


def test_greedy_sampling_is_argmax():
  logits = jax.random.normal(jax.random.key(1), (4, 50))
  got = sample(logits, jax.random.key(2), jnp.float32(0.0), jnp.float32(0.5))
  np.testing.assert_array_equal(got, np.argmax(logits, -1))


def test_sampling_params_validation():
  with pytest.raises(ValueError):
    SamplingParams(top_p=0.0)
  with pytest.raises(ValueError):
    SamplingParams(max_new_tokens=0)


def test_prefill_projects_only_the_last_position_to_the_vocabulary(model):
  """Prefill needs the next-token logits only: the output projection runs on one position
  (checked on the jaxpr) and gives the full forward's last row."""
  generator = Generator(model)
  tokens, start = pad_prompts([[5, 9, 2, 7]], pad_id=0)
  jaxpr = jax.make_jaxpr(generator._prefill_impl, static_argnums=3)(
      generator.state, jnp.asarray(tokens), jnp.asarray(start), 64).jaxpr
  vocab_dots = [e.outvars[0].aval.shape for e in jaxpr.eqns if e.primitive.name == "dot_general"
                and e.outvars[0].aval.shape[-1] == TINY.vocab_size]
  assert vocab_dots == [(1, 1, TINY.vocab_size)]
  logits, _ = generator.prefill([[5, 9, 2, 7]], 8)
  np.testing.assert_allclose(logits[0], _full_logits(model, jnp.asarray([[5, 9, 2, 7]]))[0, -1],
                             rtol=1e-5, atol=1e-5)
