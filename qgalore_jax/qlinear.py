"""A Flax NNX linear layer whose kernel is a group-wise INT8 :class:`QTensor`.

Q-GaLore (arXiv:2407.08296, Sec. 3.3) keeps projected weights in INT8 only: the forward pass
dequantizes the kernel (``scale * (code - zero)`` per group of 256) and multiplies; training
takes the gradient with respect to the dequantized kernel (see :func:`kernel_grad`) and writes
the update back with stochastic rounding (:func:`qgalore_jax.apply_updates_sr`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from qgalore_jax.quantization import DEFAULT_GROUP_SIZE, QTensor, dequantize, quantize


class QLinear(nnx.Module):
  """``y = x @ dequantize(kernel) + bias`` with an INT8 kernel of shape (in, out)."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               bits: int = 8, group_size: int = DEFAULT_GROUP_SIZE,
               kernel_init=nnx.initializers.lecun_normal(), dtype: Any = None,
               rngs: nnx.Rngs):
    kernel = kernel_init(rngs.params(), (in_features, out_features), jnp.float32)
    self.kernel = nnx.Param(quantize(kernel, bits, group_size))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.dtype = dtype

  @classmethod
  def from_linear(cls, linear: nnx.Linear, *, bits: int = 8,
                  group_size: int = DEFAULT_GROUP_SIZE) -> "QLinear":
    """Quantizes an existing ``nnx.Linear`` (round to nearest)."""
    kernel = linear.kernel.get_value()
    layer = cls(*kernel.shape, use_bias=linear.bias is not None, bits=bits,
                group_size=group_size, kernel_init=lambda *_: kernel, dtype=linear.dtype,
                rngs=nnx.Rngs(0))
    if linear.bias is not None:
      layer.bias.set_value(linear.bias.get_value())
    return layer

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or x.dtype
    y = x.astype(dtype) @ dequantize(self.kernel.get_value(), dtype)
    if self.bias is not None:
      y = y + self.bias.get_value().astype(dtype)
    return y


def kernel_grad(layer: QLinear, loss_fn, x: jax.Array) -> jax.Array:
  """d loss_fn(layer(x)) / d kernel, taken with respect to the dequantized float kernel."""
  q: QTensor = layer.kernel.get_value()
  bias = layer.bias.get_value() if layer.bias is not None else 0.0

  def from_float(kernel):
    return loss_fn(x @ kernel.astype(x.dtype) + bias)
  return jax.grad(from_float)(dequantize(q))
