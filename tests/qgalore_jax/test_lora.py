"""LoRA / QLoRA on the shared LLaMA: the adapted forward pass against the closed form
``x W + (alpha/r) x A B``, identity at init, merge/unmerge, frozen base, NF4 against a numpy
nearest-level reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from llm.model import CONFIGS, Llama
from qgalore_jax import lora
from qgalore_jax.nf4 import NF4_LEVELS, dequantize_nf4, quantize_nf4

CONFIG = dataclasses.replace(CONFIGS["tiny"], vocab_size=64, max_seq_len=16)
TOKENS = jax.random.randint(jax.random.key(3), (2, 9), 0, CONFIG.vocab_size)


def _model(seed=0):
  return Llama(CONFIG, rngs=nnx.Rngs(seed))


def _randomize_b(model, seed=1):
  key = jax.random.key(seed)
  for i, layer in enumerate(lora.lora_layers(model)):
    b = layer.lora_b.get_value()
    layer.lora_b.set_value(0.1 * jax.random.normal(jax.random.fold_in(key, i), b.shape, b.dtype))


def _xent(model, tokens):
  logits, _ = model(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_zero_b_gives_base_output_and_counts_adapters():
  model = _model()
  base_logits, _ = model(TOKENS)
  rank = 4
  lora.apply_lora(model, rank=rank, alpha=8.0, rngs=nnx.Rngs(7))
  logits, _ = model(TOKENS)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(base_logits))
  # closed-form count: r * (in + out) per adapted linear, 7 linears per block
  h, i, hd = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.head_dim
  q, kv = CONFIG.num_heads * hd, CONFIG.num_kv_heads * hd
  per_block = rank * ((h + q) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
  assert lora.trainable_count(model) == CONFIG.num_layers * per_block
  # the LM head is not a target; base kernels keep their paths
  assert not isinstance(model.lm_head, lora.LoRALinear)
  assert "kernel" in nnx.state(model, nnx.Param)["layers"][0]["attn"]["q_proj"]


def test_forward_matches_closed_form():
  model = lora.apply_lora(_model(), rank=3, alpha=6.0, rngs=nnx.Rngs(1))
  _randomize_b(model)
  layer = model.layers[0].mlp.up_proj
  x = np.asarray(jax.random.normal(jax.random.key(5), (4, CONFIG.hidden_size)), np.float64)
  w = np.asarray(layer.kernel.get_value(), np.float64)
  a = np.asarray(layer.lora_a.get_value(), np.float64)
  b = np.asarray(layer.lora_b.get_value(), np.float64)
  expected = x @ w + (6.0 / 3) * x @ a @ b
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x, jnp.float32))), expected,
                             rtol=1e-5, atol=1e-5)
  bound = 1 / np.sqrt(CONFIG.hidden_size)
  assert np.all(np.abs(a) <= bound) and a.std() > bound / 4  # kaiming-uniform range, not zeros


def test_merge_equals_unmerged_and_unmerge_restores():
  model = lora.apply_lora(_model(), rank=4, alpha=8.0, rngs=nnx.Rngs(2))
  _randomize_b(model)
  base_kernel = np.asarray(model.layers[1].attn.o_proj.kernel.get_value())
  unmerged, _ = model(TOKENS)
  lora.merge(model)
  assert all(layer.merged for layer in lora.lora_layers(model))
  assert not np.allclose(np.asarray(model.layers[1].attn.o_proj.kernel.get_value()), base_kernel)
  merged, _ = model(TOKENS)
  np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged), rtol=1e-5, atol=1e-5)
  lora.unmerge(model)
  np.testing.assert_allclose(np.asarray(model.layers[1].attn.o_proj.kernel.get_value()),
                             base_kernel, atol=1e-6)
  again, _ = model(TOKENS)
  np.testing.assert_allclose(np.asarray(again), np.asarray(unmerged), rtol=1e-5, atol=1e-5)


def test_only_adapters_receive_gradients_and_base_stays_frozen():
  model = lora.apply_lora(_model(), rank=4, alpha=8.0, rngs=nnx.Rngs(3))
  _randomize_b(model)
  graphdef, adapters, rest = nnx.split(model, lora.LoRAParam, ...)
  loss_of = jax.jit(lambda a: _xent(nnx.merge(graphdef, a, rest), TOKENS))
  grad_of = jax.jit(jax.grad(lambda a: _xent(nnx.merge(graphdef, a, rest), TOKENS)))
  grads = grad_of(adapters)
  assert jax.tree.structure(grads) == jax.tree.structure(adapters)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
  # nnx.grad with a DiffState filter gives the same adapter-only gradient
  nnx_grads = nnx.grad(_xent, argnums=nnx.DiffState(0, lora.LoRAParam))(model, TOKENS)
  assert not any(isinstance(v, nnx.Param) and not isinstance(v, lora.LoRAParam)
                 for v in jax.tree.leaves(nnx_grads, is_leaf=lambda x: isinstance(x, nnx.Variable)))
  for g, h in zip(jax.tree.leaves(grads), jax.tree.leaves(nnx.state(nnx_grads))):
    np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-4, atol=1e-7)
  # finite-difference check of one adapter entry
  path_leaf = adapters["layers"][0]["mlp"]["down_proj"]["lora_a"]
  eps = 1e-2
  def loss_at(delta):
    shifted = jax.tree.map(lambda x: x, adapters)
    shifted["layers"][0]["mlp"]["down_proj"]["lora_a"].set_value(
        path_leaf.get_value().at[1, 2].add(delta))
    return float(loss_of(shifted))
  fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
  analytic = float(grads["layers"][0]["mlp"]["down_proj"]["lora_a"].get_value()[1, 2])
  assert abs(fd - analytic) < 1e-3 + 1e-2 * abs(analytic)
  # a few optimizer steps move only the adapters
  base_before = jax.tree.map(np.asarray, rest)
  opt = optax.adam(1e-2)
  state = opt.init(adapters)
  for _ in range(3):
    g = grad_of(adapters)
    updates, state = opt.update(g, state, adapters)
    adapters = optax.apply_updates(adapters, updates)
  for x, y in zip(jax.tree.leaves(base_before), jax.tree.leaves(rest)):
    np.testing.assert_array_equal(x, np.asarray(y))


def test_bad_inputs():
  with pytest.raises(ValueError, match="rank"):
    lora.apply_lora(_model(), rank=0, alpha=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="no nnx.Linear"):
    lora.apply_lora(_model(), rank=2, alpha=1.0, rngs=nnx.Rngs(0), targets=("nope",))
  model = lora.apply_lora(_model(), rank=2, alpha=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="already"):
    lora.apply_lora(model, rank=2, alpha=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="no LoRA"):
    lora.merge(_model())


def _nf4_reference(x, block):
  """Brute force: per block absmax, argmin over the 16 levels."""
  flat = np.asarray(x, np.float64).reshape(-1)
  flat = np.pad(flat, (0, (-flat.size) % block)).reshape(-1, block)
  absmax = np.abs(flat).max(axis=1, keepdims=True)
  levels = np.asarray(NF4_LEVELS)
  idx = np.abs(flat[..., None] / np.where(absmax > 0, absmax, 1)[..., None] - levels).argmin(-1)
  return (levels[idx] * absmax).reshape(-1)[:x.size].reshape(x.shape)


@pytest.mark.parametrize("shape", [(64, 48), (33, 7)])
def test_nf4_matches_nearest_level_reference(shape):
  x = jax.random.normal(jax.random.key(0), shape) * 0.05
  q = quantize_nf4(x, 64)
  assert q.data.dtype == jnp.uint8 and q.data.size == -(-x.size // 64) * 32
  np.testing.assert_allclose(np.asarray(dequantize_nf4(q)), _nf4_reference(np.asarray(x), 64),
                             rtol=1e-6, atol=1e-7)
  # the levels themselves (times a block absmax of 1) are stored exactly
  exact = jnp.asarray(NF4_LEVELS * 4, jnp.float32)
  np.testing.assert_array_equal(np.asarray(dequantize_nf4(quantize_nf4(exact, 64))),
                                np.asarray(exact))


def test_qlora_uses_dequantized_nf4_base_and_is_frozen():
  model = _model()
  plain = lora.apply_lora(_model(), rank=4, alpha=8.0, rngs=nnx.Rngs(4))
  qmodel = lora.apply_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(4), quantize_base=True)
  layer = qmodel.layers[0].attn.q_proj
  assert layer.quantized and not isinstance(layer.kernel, nnx.Param)
  x = jax.random.normal(jax.random.key(1), (3, CONFIG.hidden_size))
  w = dequantize_nf4(layer.kernel.get_value())
  np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(x @ w), rtol=1e-5, atol=1e-6)
  # the whole model equals the float model with kernels replaced by the numpy NF4 reference
  for layer_f, layer_q in zip(lora.lora_layers(plain), lora.lora_layers(qmodel)):
    kernel = np.asarray(layer_f.kernel.get_value())
    layer_f.kernel.set_value(jnp.asarray(_nf4_reference(kernel, 64), jnp.float32))
  a, _ = plain(TOKENS)
  b, _ = qmodel(TOKENS)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
  # the only float Params left inside the blocks are the norms
  block_params = nnx.state(qmodel.layers[0], nnx.All(nnx.Param, nnx.Not(lora.LoRAParam)))
  assert set(block_params.keys()) == {"attn_norm", "mlp_norm"}
  with pytest.raises(ValueError, match="NF4"):
    lora.merge(qmodel)
