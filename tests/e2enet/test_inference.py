import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from e2enet import inference
from e2enet.model import E2ENetConfig, init_params


def test_window_starts_follow_nnunet():
  assert inference.window_starts([100, 64, 65], [64, 64, 64]) == [[0, 18, 36], [0], [0, 1]]
  assert inference.window_starts([10], [4], step=1.0) == [[0, 3, 6]]
  with pytest.raises(ValueError, match="smaller"):
    inference.window_starts([3], [4])


def test_gaussian_importance_map():
  g = inference.gaussian_importance((16, 16, 32))
  assert g.max() == 1.0 and g[8, 8, 16] == 1.0 and g.min() > 0
  # sigma = patch / 8: one sigma from the centre the weight is about exp(-1/2).
  assert g[8, 8, 20] == pytest.approx(np.exp(-0.5), rel=0.02)
  assert g[8, 10, 16] == pytest.approx(np.exp(-0.5), rel=0.02)


def _pointwise(x):
  # A model without spatial context: sliding windows must reproduce it exactly.
  return jnp.concatenate([x, 2 * x - 1, jnp.sin(3 * x)], axis=-1)


@pytest.mark.parametrize("shape", [(10, 21, 17), (3, 6, 7)])
def test_sliding_window_reproduces_pointwise_model(shape):
  image = np.random.default_rng(0).normal(size=shape + (1,)).astype(np.float32)
  predict = jax.jit(inference.mirrored_softmax(_pointwise, (0, 2)))
  probs = inference.sliding_window_predict(predict, image, (4, 8, 8), 3, batch_size=3)
  expected = jax.nn.softmax(_pointwise(jnp.asarray(image)), axis=-1)
  np.testing.assert_allclose(probs, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_mirroring_averages_over_flips():
  ramp = jnp.arange(4.0).reshape(1, 4, 1, 1, 1)
  apply = lambda x: jnp.concatenate([x + ramp, -x], axis=-1)  # not flip-equivariant
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 2, 3, 1)), jnp.float32)
  got = inference.mirrored_softmax(apply, (0, 2))(x)
  flips = [(), (1,), (3,), (1, 3)]
  expected = np.mean([np.flip(np.asarray(jax.nn.softmax(apply(jnp.flip(x, f)), -1)), f)
                      for f in flips], axis=0)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_sliding_window_equals_direct_inference_on_one_patch():
  cfg = E2ENetConfig(in_channels=1, num_classes=3, pool_kernels=((1, 2, 2), (2, 2, 2)),
                     base_channels=4, max_channels=8, supervised_levels=2)
  graphdef, params = init_params(cfg, seed=1)
  image = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype(np.float32)
  predict = inference.full_resolution_predictor(graphdef, params)
  probs = inference.sliding_window_predict(predict, image, (4, 8, 8), 3, batch_size=1)
  direct = jax.nn.softmax(nnx.merge(graphdef, params)(jnp.asarray(image[None]))[0][0], -1)
  np.testing.assert_allclose(probs, np.asarray(direct), rtol=1e-5, atol=1e-6)
  labels = inference.segment(graphdef, params, image, (4, 8, 8), 3, batch_size=1)
  np.testing.assert_array_equal(labels, np.argmax(np.asarray(direct), -1))
