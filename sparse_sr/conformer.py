"""Conformer encoder (Gulati et al. 2020, arXiv:2005.08100, Sec. 2, Fig. 1-4).

Each block is ``x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm`` (macaron
feed-forward pair). Self-attention uses rotary position embeddings (Su et al. 2021,
arXiv:2104.09864) instead of Transformer-XL relative positions; both encode relative
offsets. The convolution module is pointwise conv + GLU, depthwise conv, normalization,
Swish, pointwise conv. Normalization in the conv module is LayerNorm rather than BatchNorm so
padded frames never influence real ones (per-utterance results do not depend on the batch).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
  d_model: int = 144
  num_heads: int = 4
  num_layers: int = 4
  ff_mult: int = 4
  conv_kernel: int = 15
  dropout: float = 0.1


def _dropout(x, rate, rngs):
  return nnx.Dropout(rate)(x, deterministic=rngs is None or rate == 0, rngs=rngs)


def rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotates pairs of channels of ``x (..., time, heads, dim)`` by position-dependent angles."""
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]       # (time, half)
  cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


class MultiHeadAttention(nnx.Module):
  """Scaled dot-product attention with a boolean mask ``(batch, 1|q, k)``; optional rotary."""

  def __init__(self, d_model: int, num_heads: int, dropout: float, *, use_rotary: bool,
               rngs: nnx.Rngs):
    if d_model % num_heads:
      raise ValueError(f"d_model {d_model} not divisible by {num_heads} heads")
    self.num_heads, self.head_dim = num_heads, d_model // num_heads
    self.use_rotary, self.dropout = use_rotary, dropout
    self.query = nnx.Linear(d_model, d_model, rngs=rngs)
    self.key = nnx.Linear(d_model, d_model, rngs=rngs)
    self.value = nnx.Linear(d_model, d_model, rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, rngs=rngs)

  def __call__(self, x, context, mask, rngs=None):
    b, tq, _ = x.shape
    tk = context.shape[1]
    q = self.query(x).reshape(b, tq, self.num_heads, self.head_dim)
    k = self.key(context).reshape(b, tk, self.num_heads, self.head_dim)
    v = self.value(context).reshape(b, tk, self.num_heads, self.head_dim)
    if self.use_rotary:
      q, k = rotary(q, jnp.arange(tq)), rotary(k, jnp.arange(tk))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(self.head_dim).astype(x.dtype)
    logits = jnp.where(mask[:, None], logits, jnp.finfo(logits.dtype).min)
    weights = _dropout(jax.nn.softmax(logits, axis=-1), self.dropout, rngs)
    return self.out(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, tq, -1))


class FeedForward(nnx.Module):
  def __init__(self, d_model: int, mult: int, dropout: float, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.up = nnx.Linear(d_model, mult * d_model, rngs=rngs)
    self.down = nnx.Linear(mult * d_model, d_model, rngs=rngs)
    self.dropout = dropout

  def __call__(self, x, rngs=None):
    h = _dropout(jax.nn.silu(self.up(self.norm(x))), self.dropout, rngs)
    return _dropout(self.down(h), self.dropout, rngs)


class ConvModule(nnx.Module):
  def __init__(self, d_model: int, kernel: int, dropout: float, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.pointwise_in = nnx.Linear(d_model, 2 * d_model, rngs=rngs)
    self.depthwise = nnx.Conv(d_model, d_model, kernel_size=(kernel,),
                              feature_group_count=d_model, padding="SAME", rngs=rngs)
    self.conv_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.pointwise_out = nnx.Linear(d_model, d_model, rngs=rngs)
    self.dropout = dropout

  def __call__(self, x, valid, rngs=None):
    h = jax.nn.glu(self.pointwise_in(self.norm(x)), axis=-1)
    h = jnp.where(valid[..., None], h, 0.0)  # padding must not leak through the conv
    h = jax.nn.silu(self.conv_norm(self.depthwise(h)))
    return _dropout(self.pointwise_out(h), self.dropout, rngs)


class ConformerBlock(nnx.Module):
  def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs):
    d = config.d_model
    self.ff1 = FeedForward(d, config.ff_mult, config.dropout, rngs=rngs)
    self.attn_norm = nnx.LayerNorm(d, rngs=rngs)
    self.attn = MultiHeadAttention(d, config.num_heads, config.dropout, use_rotary=True,
                                   rngs=rngs)
    self.conv = ConvModule(d, config.conv_kernel, config.dropout, rngs=rngs)
    self.ff2 = FeedForward(d, config.ff_mult, config.dropout, rngs=rngs)
    self.out_norm = nnx.LayerNorm(d, rngs=rngs)
    self.dropout = config.dropout

  def __call__(self, x, valid, rngs=None):
    x = x + 0.5 * self.ff1(x, rngs)
    h = self.attn_norm(x)
    x = x + _dropout(self.attn(h, h, valid[:, None, :], rngs), self.dropout, rngs)
    x = x + self.conv(x, valid, rngs)
    x = x + 0.5 * self.ff2(x, rngs)
    return self.out_norm(x)


class ConformerEncoder(nnx.Module):
  """A stack of Conformer blocks over ``(batch, time, d_model)`` with a validity mask."""

  def __init__(self, config: ConformerConfig, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([ConformerBlock(config, rngs=rngs)
                            for _ in range(config.num_layers)])

  def __call__(self, x, valid, rngs=None):
    for block in self.blocks:
      x = block(x, valid, rngs)
    return jnp.where(valid[..., None], x, 0.0)


class ConvSubsampling(nnx.Module):
  """Two 3x3 stride-2 convolutions over (time, mel): 100 -> 25 frames per second, the
  video frame rate. Explicit (1, 1) padding keeps the alignment independent of the padded
  length."""

  def __init__(self, n_mels: int, channels: int, d_model: int, *, rngs: nnx.Rngs):
    pad = ((1, 1), (1, 1))
    self.conv1 = nnx.Conv(1, channels, (3, 3), strides=(2, 2), padding=pad, rngs=rngs)
    self.conv2 = nnx.Conv(channels, channels, (3, 3), strides=(2, 2), padding=pad, rngs=rngs)
    mels = -(-(-(-n_mels // 2)) // 2)
    self.proj = nnx.Linear(channels * mels, d_model, rngs=rngs)

  def __call__(self, features, lengths):
    h = jax.nn.relu(self.conv1(features[..., None]))
    lengths = -(-lengths // 2)
    h = jnp.where((jnp.arange(h.shape[1]) < lengths[:, None])[:, :, None, None], h, 0.0)
    h = jax.nn.relu(self.conv2(h))
    lengths = -(-lengths // 2)
    b, t = h.shape[:2]
    return self.proj(h.reshape(b, t, -1)), lengths
