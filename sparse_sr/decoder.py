"""Transformer decoder for the attention branch of hybrid CTC/attention (Watanabe et al.
2017, "Hybrid CTC/Attention Architecture for End-to-End Speech Recognition", Sec. III;
the Auto-AVSR decoder, arXiv:2303.14307): pre-LayerNorm blocks of causal self-attention,
cross-attention over the encoder output, and a feed-forward layer."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparse_sr.conformer import FeedForward, MultiHeadAttention, _dropout


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  num_layers: int = 2
  num_heads: int = 4
  ff_mult: int = 4
  dropout: float = 0.1


def sinusoids(length: int, dim: int) -> np.ndarray:
  position = np.arange(length)[:, None]
  inv = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2], table[:, 1::2] = np.sin(position * inv), np.cos(position * inv)
  return table


class DecoderBlock(nnx.Module):
  def __init__(self, d_model: int, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.self_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.self_attn = MultiHeadAttention(d_model, config.num_heads, config.dropout,
                                        use_rotary=False, rngs=rngs)
    self.cross_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.cross_attn = MultiHeadAttention(d_model, config.num_heads, config.dropout,
                                         use_rotary=False, rngs=rngs)
    self.ff = FeedForward(d_model, config.ff_mult, config.dropout, rngs=rngs)
    self.dropout = config.dropout

  def __call__(self, y, memory, self_mask, memory_mask, rngs=None):
    h = self.self_norm(y)
    y = y + _dropout(self.self_attn(h, h, self_mask, rngs), self.dropout, rngs)
    h = self.cross_norm(y)
    y = y + _dropout(self.cross_attn(h, memory, memory_mask, rngs), self.dropout, rngs)
    return y + self.ff(y, rngs)


class TransformerDecoder(nnx.Module):
  """Logits ``(batch, L, vocab)`` for next tokens given ``tokens (batch, L)`` (starting
  with <sos>) and encoder output ``memory (batch, T, d)`` with validity ``memory_valid``."""

  def __init__(self, vocab_size: int, d_model: int, config: DecoderConfig, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
    self.blocks = nnx.List([DecoderBlock(d_model, config, rngs=rngs)
                            for _ in range(config.num_layers)])
    self.norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.head = nnx.Linear(d_model, vocab_size, rngs=rngs)
    self.scale = float(np.sqrt(d_model))
    self.d_model = d_model
    self.dropout = config.dropout

  def __call__(self, tokens, memory, memory_valid, rngs=None):
    length = tokens.shape[1]
    y = self.embed(tokens) * self.scale + sinusoids(length, self.d_model)
    y = _dropout(y, self.dropout, rngs)
    causal = jnp.tril(jnp.ones((length, length), bool))[None]
    for block in self.blocks:
      y = block(y, memory, causal, memory_valid[:, None, :], rngs)
    return self.head(self.norm(y))
