"""nnU-Net's segmentation loss: cross-entropy + soft Dice, deep-supervised.

Soft Dice as nnU-Net v1's ``SoftDiceLoss`` with ``batch_dice=True, smooth=1e-5, do_bg=False``:
``dc = (2 TP + s) / (2 TP + FP + FN + s)`` per class over the whole batch, loss ``-mean(dc)``.
Deep supervision (E2ENet, arXiv:2312.04727, Sec. 3.4) weights the heads ``1, 1/2, 1/4, ...``,
normalized to sum to one, against labels subsampled to each head's resolution.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def soft_dice_loss(logits: jax.Array, labels: jax.Array, *, smooth: float = 1e-5,
                   batch_dice: bool = True, include_background: bool = False) -> jax.Array:
  """``-mean`` soft Dice of ``softmax(logits)`` (B, D, H, W, K) against integer ``labels``."""
  k = logits.shape[-1]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  onehot = jax.nn.one_hot(labels, k, dtype=probs.dtype)
  axes = (0, 1, 2, 3) if batch_dice else (1, 2, 3)
  tp = jnp.sum(probs * onehot, axis=axes)
  fp = jnp.sum(probs * (1 - onehot), axis=axes)
  fn = jnp.sum((1 - probs) * onehot, axis=axes)
  dice = (2 * tp + smooth) / jnp.maximum(2 * tp + fp + fn + smooth, 1e-8)
  if not include_background:
    dice = dice[..., 1:]
  return -jnp.mean(dice)


def dice_ce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy (mean over voxels) + soft Dice, weights 1 and 1 as in nnU-Net."""
  # One-hot CE instead of a gather: its gradient avoids a scatter, slow to compile on CPU.
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=log_probs.dtype)
  ce = -jnp.mean(jnp.sum(onehot * log_probs, axis=-1))
  return ce + soft_dice_loss(logits, labels)


def deep_supervision_weights(n: int) -> jax.Array:
  w = jnp.asarray([0.5 ** i for i in range(n)], jnp.float32)
  return w / jnp.sum(w)


def downsample_labels(labels: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Nearest (strided) subsampling of (B, D, H, W) labels to spatial ``shape``."""
  strides = [s // t for s, t in zip(labels.shape[1:4], shape)]
  return labels[:, ::strides[0], ::strides[1], ::strides[2]]


def deep_supervision_loss(outputs: Sequence[jax.Array], labels: jax.Array) -> jax.Array:
  """Weighted sum of :func:`dice_ce_loss` over the heads (full resolution first)."""
  weights = deep_supervision_weights(len(outputs))
  total = 0.0
  for w, logits in zip(weights, outputs):
    total = total + w * dice_ce_loss(logits, downsample_labels(labels, logits.shape[1:4]))
  return total
