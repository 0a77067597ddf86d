"""Quantizer, INT4 packing, stochastic rounding, INT8 weight updates, QLinear, 8-bit Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import qgalore_jax as qg
from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
from qgalore_jax.adam8bit import dequantize_blockwise, dynamic_code, quantize_blockwise, \
    zero_moment

_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


# a few sizes (partial groups included) so eager dispatch reuses its compiled kernels
@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, st.sampled_from([1, 7, 256, 300]), elements=_floats),
       bits=st.sampled_from([4, 8]), group=st.sampled_from([2, 16, 256]))
def test_round_trip_error_is_at_most_half_a_step(x, bits, group):
  q = qg.quantize(jnp.asarray(x), bits, group)
  back = np.asarray(qg.dequantize(q))
  scale = np.repeat(np.asarray(q.scale), group)[:x.size]
  # half a quantization step, plus float32 rounding of (x - min) / scale and of the product
  bound = scale / 2 + 1e-5 * (np.abs(x).max() + scale)
  assert np.all(np.abs(back - x) <= bound)


@settings(max_examples=20, deadline=None)
@given(codes=hnp.arrays(np.uint8, st.sampled_from([2, 8, 512]),
                        elements=st.integers(0, 15)))
def test_int4_packing_round_trip(codes):
  packed = qg.pack_int4(jnp.asarray(codes))
  assert packed.size == codes.size // 2 and packed.dtype == jnp.uint8
  np.testing.assert_array_equal(qg.unpack_int4(packed), codes)
  # even index in the low nibble
  np.testing.assert_array_equal(np.asarray(packed) & 0x0F, codes[0::2])


def test_one_sign_group_correct_and_official_zero_point():
  x = jnp.array([1.0, 2.0, 1.5, 1.25])
  correct = qg.dequantize(qg.quantize(x, 4, 4))
  official = qg.dequantize(qg.quantize(x, 4, 4, official_zero_point_clamp=True))
  np.testing.assert_allclose(official, [1.0, 1.0, 1.0, 1.0], rtol=1e-6)  # crushed
  assert np.max(np.abs(correct - x)) <= (2.0 - 1.0) / 15 / 2 + 1e-6
  # for a group straddling zero, both quantizers agree to within one step
  y = jax.random.normal(jax.random.key(0), (256,))
  a = qg.dequantize(qg.quantize(y, 4))
  b = qg.dequantize(qg.quantize(y, 4, official_zero_point_clamp=True))
  assert np.max(np.abs(a - b)) <= float((y.max() - y.min()) / 15) + 1e-6


def test_int4_storage_is_half_a_byte_per_element():
  q = qg.quantize(jnp.ones((128, 96)), 4)
  assert q.data.size == 128 * 96 // 2
  assert qg.quantize(jnp.ones((128, 96)), 8).data.size == 128 * 96


def test_stochastic_round_is_unbiased_and_deterministic():
  x = jnp.linspace(-3.0, 3.0, 37)
  keys = jax.random.split(jax.random.key(0), 4000)
  samples = jax.vmap(lambda k: qg.stochastic_round(x, k))(keys)
  frac = x - jnp.floor(x)
  assert set(np.unique(samples - jnp.floor(x))) <= {0.0, 1.0}
  # mean of Bernoulli(frac): standard error sqrt(p(1-p)/n) <= 0.0079; allow 5 sigma
  np.testing.assert_allclose(samples.mean(0), x, atol=5 * 0.5 / np.sqrt(len(keys)))
  np.testing.assert_array_equal(qg.stochastic_round(x, keys[3]), samples[3])
  assert not np.array_equal(samples[0], samples[1])
  del frac


def test_apply_updates_sr_is_unbiased_and_keeps_int8():
  w = jax.random.normal(jax.random.key(1), (16, 32))
  params = {"w": qg.quantize(w, 8), "b": jnp.ones(3)}
  updates = {"w": 1e-3 * jax.random.normal(jax.random.key(2), (16, 32)), "b": jnp.full(3, 0.5)}
  keys = jax.random.split(jax.random.key(3), 2000)
  step = jax.jit(lambda k: qg.dequantize(qg.apply_updates_sr(params, updates, k)["w"]))
  after = jax.vmap(step)(keys)
  target = qg.dequantize(params["w"]) + updates["w"]
  scale = float(params["w"].scale.max())
  # each element is a two-point variable with spread <= one step: 5 sigma of the mean
  np.testing.assert_allclose(after.mean(0), target, atol=5 * scale / 2 / np.sqrt(len(keys)))
  new = qg.apply_updates_sr(params, updates, keys[0])
  assert isinstance(new["w"], qg.QTensor) and new["w"].data.dtype == jnp.uint8
  np.testing.assert_allclose(new["b"], 1.5)
  assert tree_equal_bitwise(new, qg.apply_updates_sr(params, updates, keys[0]))
  # round to nearest would swallow an update far below half a step; SR keeps it on average
  tiny = {"w": jnp.full((16, 32), scale / 20), "b": jnp.zeros(3)}
  drift = jax.vmap(lambda k: qg.dequantize(qg.apply_updates_sr(params, tiny, k)["w"]))(keys[:400])
  assert abs(float((drift.mean(0) - qg.dequantize(params["w"])).mean()) - scale / 20) < scale / 50


def test_qtensor_checkpoint_round_trip(tmp_path):
  state = {"w": qg.quantize(jax.random.normal(jax.random.key(0), (33, 17)), 4), "n": jnp.int32(3)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)
    restored, _ = ckpt.restore(jax.eval_shape(lambda: state))
  assert isinstance(restored["w"], qg.QTensor) and restored["w"].shape == (33, 17)
  assert tree_equal_bitwise(restored, state)


def test_qlinear_matches_dequantized_matmul_and_gradient():
  linear = nnx.Linear(300, 40, rngs=nnx.Rngs(0))
  layer = qg.QLinear.from_linear(linear)
  x = jax.random.normal(jax.random.key(4), (5, 300))
  kernel = qg.dequantize(layer.kernel.get_value())
  np.testing.assert_allclose(layer(x), x @ kernel + linear.bias.get_value(), rtol=1e-5,
                             atol=1e-5)
  assert np.max(np.abs(kernel - linear.kernel.get_value())) < 0.01
  loss = lambda y: jnp.sum(y ** 2)
  expected = 2 * x.T @ (x @ kernel + linear.bias.get_value())  # d/dK sum((xK + b)^2)
  np.testing.assert_allclose(qg.qlinear.kernel_grad(layer, loss, x), expected, rtol=1e-4,
                             atol=1e-3)
  fresh = qg.QLinear(64, 8, rngs=nnx.Rngs(1))
  assert fresh(jnp.ones((2, 64))).shape == (2, 8)


def test_dynamic_code_and_blockwise_round_trip():
  signed, unsigned = dynamic_code(True), dynamic_code(False)
  assert signed.min() < -0.99 and signed.max() == 1.0 and 0.0 in signed
  assert unsigned.min() == 0.0 and unsigned.max() == 1.0
  x = jax.random.normal(jax.random.key(0), (1000,)) * jnp.logspace(-4, 0, 1000)
  q = quantize_blockwise(x, signed, 256)
  back = dequantize_blockwise(q, signed, x.shape)
  assert q.codes.dtype == jnp.uint8 and q.absmax.shape == (4,)
  # the dynamic code bounds relative error over decades: decade e has 2**(6-e) fractions on
  # [0.1, 1], so within three decades of the block's absmax a value is off by <= ~0.9/16/0.1/2
  big = np.abs(np.asarray(x)) > 1e-3 * np.repeat(np.asarray(q.absmax), 256)[:1000]
  rel = np.abs(np.asarray(back) - np.asarray(x))[big] / np.abs(np.asarray(x))[big]
  assert rel.max() < 0.3 and rel.mean() < 0.03


@pytest.mark.parametrize("shape,bits,group", [((64, 16), 4, 256), ((1000,), 8, 256),
                                              ((7, 3), 4, 4), ((5,), 8, 2)])
@pytest.mark.parametrize("official", [False, True])
def test_quantized_zeros_is_quantize_of_zeros(shape, bits, group, official):
  built = qg.quantization.quantized_zeros(shape, bits, group, official_zero_point_clamp=official)
  want = qg.quantization.quantize(jnp.zeros(shape), bits, group,
                                  official_zero_point_clamp=official)
  assert (built.shape, built.bits, built.group_size) == (want.shape, want.bits, want.group_size)
  assert jax.tree.structure(built) == jax.tree.structure(want)
  assert tree_equal_bitwise((built.data, built.zero), (want.data, want.zero))
  # the official clamp's scale 1e-5 / levels may be divided in another last place (XLA's
  # vectorized division of a longer array)
  np.testing.assert_allclose(built.scale, want.scale, rtol=2 ** -23, atol=0)
  assert not np.asarray(qg.quantization.dequantize(built)).any()


@pytest.mark.parametrize("size,block", [(1000, 256), (512, 256), (7, 4), (1, 64)])
@pytest.mark.parametrize("signed", [True, False])
def test_zero_moment_is_the_quantized_zeros(size, block, signed):
  code = dynamic_code(signed)
  built = zero_moment(size, code, block)
  want = quantize_blockwise(jnp.zeros(size), code, block)
  assert built.codes.dtype == want.codes.dtype and built.absmax.dtype == want.absmax.dtype
  assert tree_equal_bitwise(built, want)
  assert not np.asarray(dequantize_blockwise(built, code, (size,))).any()


def test_adam_8bit_tracks_float_adam_on_a_quadratic():
  curvature = jnp.linspace(0.1, 3.0, 64 * 128).reshape(64, 128)
  params = {"w": jax.random.normal(jax.random.key(0), (64, 128)), "b": jnp.ones(5)}
  loss = lambda p: 0.5 * jnp.sum(curvature * p["w"] ** 2) + jnp.sum(p["b"] ** 2)

  def train(opt):
    state = opt.init(params)

    @jax.jit
    def step(p, s):
      u, s = opt.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, u), s
    p = params
    for _ in range(200):
      p, state = step(p, state)
    return p, state

  p_float, _ = train(optax.adam(1e-2))
  p_8bit, state = train(qg.adam_8bit(1e-2))
  assert state[0].mu["w"].codes.dtype == jnp.uint8  # large leaf: 8-bit moments
  assert state[0].mu["b"].dtype == jnp.float32      # small leaf: float moments
  start, f_float, f_8bit = float(loss(params)), float(loss(p_float)), float(loss(p_8bit))
  assert f_float < 0.1 * start
  # stated tolerance: the 8-bit run's loss within 10% of float Adam's, parameters within 0.15
  assert abs(f_8bit - f_float) <= 0.1 * f_float
  assert float(jnp.max(jnp.abs(p_8bit["w"] - p_float["w"]))) < 0.15
