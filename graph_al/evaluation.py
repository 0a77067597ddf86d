"""Macro-F1 and accuracy on the nodes a query did not select (SPA, arXiv 2312.04307, Sec. 4).

Macro-F1 averages the per-class F1 over the classes present among the evaluated nodes'
true or predicted labels, like ``sklearn.metrics.f1_score(average="macro")``; a class with
no true positives has F1 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("num_classes",))
def macro_f1_accuracy(predictions: jax.Array, labels: jax.Array, evaluate: jax.Array,
                      num_classes: int) -> tuple[jax.Array, jax.Array]:
  """Scores ``predictions`` ([..., N] ints in [0, num_classes)) where ``evaluate`` is true."""
  weight = evaluate.astype(jnp.float32)
  true = jax.nn.one_hot(labels, num_classes) * weight[..., None]
  pred = jax.nn.one_hot(predictions, num_classes) * weight[..., None]
  tp = jnp.sum(true * pred, axis=-2)
  support, predicted = jnp.sum(true, axis=-2), jnp.sum(pred, axis=-2)
  f1 = 2 * tp / jnp.maximum(support + predicted, 1.0)
  present = (support + predicted) > 0
  macro = jnp.sum(jnp.where(present, f1, 0.0), -1) / jnp.maximum(jnp.sum(present, -1), 1)
  accuracy = jnp.sum(tp, -1) / jnp.maximum(jnp.sum(weight, -1), 1.0)
  return macro, accuracy
