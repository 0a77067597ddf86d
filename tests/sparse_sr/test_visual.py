"""The visual front end's stem: the frame-stacked 2-D form against the module's own 3-D conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparse_sr.visual import VisualConfig, VisualFrontEnd, frame_stacked_stem


@pytest.mark.parametrize("shape", [(2, 7, 12, 12), (3, 4, 13, 10), (1, 1, 9, 16)])
def test_frame_stacked_stem_is_the_3d_convolution_and_its_kernel_gradient(shape):
  """Odd and even sizes, clips shorter than the 5-frame kernel included: output and kernel
  gradient equal those of the stem's 3-D ``nnx.Conv`` (its padding and strides)."""
  front = VisualFrontEnd(VisualConfig(3, (4, 4, 4, 4), 1), 8, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(sum(shape))
  video = jnp.asarray(rng.normal(size=shape + (1,)), jnp.float32)
  kernel = front.stem.kernel[...]
  reference = front.stem(video)
  ours = frame_stacked_stem(video, kernel)
  assert ours.shape == reference.shape
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)

  weights = jnp.asarray(rng.normal(size=reference.shape), jnp.float32)

  def reference_loss(k):
    return jnp.sum(jax.lax.conv_general_dilated(
        video, k, front.stem.strides, front.stem.padding,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) * weights)
  expected = jax.grad(reference_loss)(kernel)
  got = jax.grad(lambda k: jnp.sum(frame_stacked_stem(video, k) * weights))(kernel)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


def test_frame_stacked_stem_rejects_more_than_one_input_channel():
  with pytest.raises(ValueError, match="one input channel"):
    frame_stacked_stem(jnp.zeros((1, 5, 8, 8, 2)), jnp.zeros((5, 7, 7, 2, 4)))
