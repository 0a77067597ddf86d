"""Hybrid CTC/attention loss (Watanabe et al. 2017, IEEE JSTSP 11(8), Eq. 13):
``ctc_weight * CTC + (1 - ctc_weight) * attention cross-entropy`` with label smoothing,
Auto-AVSR's weights (CTC 0.1, smoothing 0.1).

Losses are returned per utterance (summed over its tokens) so data pruning can rank
utterances; the batch loss is their mean over valid (non-filler) utterances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sparse_sr.tokenizer import BLANK, SOS_EOS


def decoder_io(tokens: jax.Array, token_len: jax.Array):
  """``(inputs, targets, target_valid)``: ``<sos> y`` in, ``y <eos>`` out, one longer."""
  batch, width = tokens.shape
  sos = jnp.full((batch, 1), SOS_EOS, tokens.dtype)
  inputs = jnp.concatenate([sos, tokens], axis=1)
  position = jnp.arange(width + 1)[None, :]
  targets = jnp.concatenate([tokens, jnp.zeros((batch, 1), tokens.dtype)], axis=1)
  targets = jnp.where(position == token_len[:, None], SOS_EOS, targets)
  return inputs, targets, position <= token_len[:, None]


def ctc_losses(logits, valid, tokens, token_len):
  """Per-utterance CTC negative log-likelihood (optax.ctc_loss, blank id 0)."""
  label_pad = (jnp.arange(tokens.shape[1])[None, :] >= token_len[:, None]).astype(jnp.float32)
  return optax.ctc_loss(logits.astype(jnp.float32), 1.0 - valid.astype(jnp.float32), tokens,
                        label_pad, blank_id=BLANK)


def attention_losses(logits, targets, target_valid, label_smoothing: float = 0.1):
  """Per-utterance label-smoothed cross-entropy summed over target tokens."""
  labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  return jnp.sum(jnp.where(target_valid, ce, 0.0), axis=-1)


def hybrid_loss(model, batch, *, ctc_weight: float = 0.1, label_smoothing: float = 0.1,
                rngs=None):
  """``(mean loss, aux)`` where ``aux`` holds per-utterance ``losses``, ``ctc``, ``att``
  and token ``accuracy`` of the attention branch (teacher forcing)."""
  memory, valid = model.encode(batch, rngs)
  ctc = ctc_losses(model.ctc_logits(memory), valid, batch["tokens"], batch["token_len"])
  inputs, targets, target_valid = decoder_io(batch["tokens"], batch["token_len"])
  logits = model.decode(inputs, memory, valid, rngs)
  att = attention_losses(logits, targets, target_valid, label_smoothing)
  per_example = ctc_weight * ctc + (1.0 - ctc_weight) * att
  weights = batch["valid"].astype(jnp.float32)
  loss = jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) & target_valid & batch["valid"][:, None])
  accuracy = correct / jnp.maximum(jnp.sum(target_valid & batch["valid"][:, None]), 1)
  return loss, {"losses": per_example, "ctc": ctc, "att": att, "accuracy": accuracy}
