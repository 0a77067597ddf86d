"""The LLaMA decoder against a naive numpy implementation; KV cache and remat equivalences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.model import CONFIGS, KVCache, Llama, LlamaConfig, count_params

TINY = CONFIGS["tiny"]


def _np_rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _np_rope(x, positions, theta):
  # Rotate-half RoPE written from the paper's 2-D rotations of (x_i, x_{i+d/2}) pairs.
  d = x.shape[-1]
  out = np.empty_like(x)
  for i in range(d // 2):
    angle = positions[:, None] * theta ** (-2.0 * i / d)  # (t, 1)
    a, b = x[..., i], x[..., i + d // 2]
    out[..., i] = a * np.cos(angle) - b * np.sin(angle)
    out[..., i + d // 2] = b * np.cos(angle) + a * np.sin(angle)
  return out


def _np_forward(model: Llama, tokens: np.ndarray) -> np.ndarray:
  """Loops over heads and query positions explicitly; one sequence."""
  c = model.config
  p = lambda v: np.asarray(v[...], np.float64)
  t = len(tokens)
  x = p(model.embed.embedding)[tokens]
  pos = np.arange(t, dtype=np.float64)
  group = c.num_heads // c.num_kv_heads
  for layer in model.layers:
    h = _np_rms(x, p(layer.attn_norm.scale), c.rms_norm_eps)
    q = (h @ p(layer.attn.q_proj.kernel)).reshape(t, c.num_heads, c.head_dim)
    k = (h @ p(layer.attn.k_proj.kernel)).reshape(t, c.num_kv_heads, c.head_dim)
    v = (h @ p(layer.attn.v_proj.kernel)).reshape(t, c.num_kv_heads, c.head_dim)
    q, k = _np_rope(q, pos, c.rope_theta), _np_rope(k, pos, c.rope_theta)
    out = np.zeros((t, c.num_heads, c.head_dim))
    for head in range(c.num_heads):
      kv_head = head // group
      for i in range(t):
        s = k[: i + 1, kv_head] @ q[i, head] / np.sqrt(c.head_dim)
        w = np.exp(s - s.max())
        out[i, head] = (w / w.sum()) @ v[: i + 1, kv_head]
    x = x + out.reshape(t, -1) @ p(layer.attn.o_proj.kernel)
    h = _np_rms(x, p(layer.mlp_norm.scale), c.rms_norm_eps)
    gate = h @ p(layer.mlp.gate_proj.kernel)
    x = x + (gate / (1 + np.exp(-gate)) * (h @ p(layer.mlp.up_proj.kernel))) @ p(
        layer.mlp.down_proj.kernel)
  x = _np_rms(x, p(model.norm.scale), c.rms_norm_eps)
  head = p(model.embed.embedding).T if c.tie_embeddings else p(model.lm_head.kernel)
  return x @ head


@pytest.mark.parametrize("tied", [False, True])
def test_forward_matches_naive_numpy(tied):
  config = LlamaConfig(**{**TINY.__dict__, "tie_embeddings": tied, "rope_theta": 500.0})
  model = Llama(config, rngs=nnx.Rngs(0))
  # Larger weights than the 0.02 init so attention is far from uniform.
  for layer in model.layers:
    layer.attn.q_proj.kernel[...] *= 10
    layer.attn.k_proj.kernel[...] *= 10
  tokens = np.array([3, 17, 200, 5, 99, 42, 7])
  logits, cache = model(jnp.asarray(tokens)[None])
  assert cache is None
  np.testing.assert_allclose(np.asarray(logits[0]), _np_forward(model, tokens),
                             rtol=2e-4, atol=2e-5)


_jit_call = nnx.jit(lambda model, tokens, cache: model(tokens, cache=cache))


def test_kv_cache_decode_equals_full_recomputation():
  model = Llama(TINY, rngs=nnx.Rngs(1))
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, TINY.vocab_size)
  full, _ = _jit_call(model, tokens, None)
  cache = KVCache.init(TINY, batch=2, max_len=16)
  logits, cache = _jit_call(model, tokens[:, :5], cache)  # prefill
  steps = [logits]
  for i in range(5, 12):  # one token at a time
    logits, cache = _jit_call(model, tokens[:, i:i + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-4, atol=1e-5)
  assert int(cache.index) == 12


def test_left_padding_equals_unpadded_row():
  model = Llama(TINY, rngs=nnx.Rngs(2))
  row = jnp.array([[9, 8, 7, 6, 5]])
  alone, _ = _jit_call(model, row, None)
  padded = jnp.concatenate([jnp.zeros((1, 3), row.dtype), row], 1)
  cache = KVCache.init(TINY, batch=1, max_len=8, start=jnp.array([3]))
  logits, _ = _jit_call(model, padded, cache)
  np.testing.assert_allclose(logits[:, 3:], alone, rtol=1e-4, atol=1e-5)


def test_remat_same_loss_and_gradients():
  tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, TINY.vocab_size)

  def loss_fn(model):
    logits, _ = model(tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

  plain = Llama(TINY, rngs=nnx.Rngs(4))
  remat = Llama(LlamaConfig(**{**TINY.__dict__, "remat": True}), rngs=nnx.Rngs(4))
  l1, g1 = nnx.jit(nnx.value_and_grad(loss_fn))(plain)
  l2, g2 = nnx.jit(nnx.value_and_grad(loss_fn))(remat)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g2)


def test_parameter_paths_and_counts():
  model = Llama(CONFIGS["tiny"], rngs=nnx.Rngs(0))
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
  for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
    assert sum(f"attn/{name}/kernel" in p for p in paths) == TINY.num_layers
  for name in ("gate_proj", "up_proj", "down_proj"):
    assert sum(f"mlp/{name}/kernel" in p for p in paths) == TINY.num_layers
  # SmolLM2-135M has 134,515,008 parameters (its model card's 135M), computed without allocating.
  abstract = nnx.eval_shape(lambda: Llama(CONFIGS["smollm2_135m"], rngs=nnx.Rngs(0)))
  assert count_params(abstract) == 134_515_008
