"""Training-state memory of a LLaMA under each optimizer, from ``jax.eval_shape`` (nothing is
allocated), broken down by component.

Components: ``weights`` (INT8 QTensor kernels + bf16 rest for Q-GaLore; bf16 otherwise when
``param_dtype=bf16``), ``optimizer`` (moments; for GaLore/Q-GaLore the low-rank moments),
``projectors`` (float32 for GaLore, packed INT4 for Q-GaLore) and ``grads``. Gradients are
reported twice: all at once (what one jitted step holds) and ``grads_layerwise``, the largest
decoder block's gradients, for the per-layer update the official 7B single-GPU scripts use
(the optimizer steps each layer inside the backward pass). Activations are estimated
analytically for rematerialized blocks (one bf16 residual per layer kept, one block's
internals and the logits live at a time).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrepro.bench import pytree_bytes
from llm.model import Llama, LlamaConfig
from qgalore_jax.galore import LayerProjection
from qgalore_jax.labels import projected_mask
from qgalore_jax.pretrain import PAPER_RANKS, OptimizerConfig, make_optimizer
from qgalore_jax.quantization import quantize_params

GB = 1e9


def _split_projectors(opt_state) -> tuple[int, int]:
  """(projector bytes, other optimizer bytes) of an abstract optimizer state."""
  is_layer = lambda x: isinstance(x, LayerProjection)
  projector = 0
  for leaf in jax.tree.leaves(opt_state, is_leaf=is_layer):
    if is_layer(leaf):
      projector += pytree_bytes(leaf.projector)
  return projector, pytree_bytes(opt_state) - projector


def activation_bytes(config: LlamaConfig, batch: int, seq: int, bytes_per: int = 2) -> int:
  """Rematerialized blocks: one residual per layer, one block's internals, fp32 logits+grad."""
  h, i, heads = config.hidden_size, config.intermediate_size, config.num_heads
  residuals = config.num_layers * batch * seq * h * bytes_per
  block = batch * seq * (6 * h + 3 * i) * bytes_per + batch * heads * seq * seq * 4
  logits = 2 * batch * seq * config.vocab_size * 4
  return residuals + block + logits


def training_state_bytes(config: LlamaConfig, opt: OptimizerConfig, batch: int, seq: int
                         ) -> dict[str, Any]:
  """Bytes per component for ``config`` trained with ``opt`` (see the module docstring)."""
  model = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  _, params = nnx.split(model)
  optimizer = make_optimizer(opt, params)
  opt_state = jax.eval_shape(optimizer.init, params)
  if opt.name == "qgalore":
    weights = jax.eval_shape(lambda p: quantize_params(p, projected_mask(p), bits=8), params)
  else:
    weights = params
  grads = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, config.param_dtype), params)
  layer_grads = max(pytree_bytes(nnx.state(layer)) for layer in model.layers)
  layer_grads = layer_grads * jnp.dtype(config.param_dtype).itemsize // 4
  projectors, moments = _split_projectors(opt_state)
  out = {
      "weights": pytree_bytes(weights),
      "optimizer": moments,
      "projectors": projectors,
      "grads": pytree_bytes(grads),
      "grads_layerwise": int(layer_grads),
      "activations_remat": activation_bytes(config, batch, seq),
  }
  base = out["weights"] + out["optimizer"] + out["projectors"] + out["activations_remat"]
  out["total"] = base + out["grads"]
  out["total_layerwise"] = base + out["grads_layerwise"]
  return out


def paper_optimizer(name: str, config_name: str) -> OptimizerConfig:
  rank = PAPER_RANKS.get(config_name, 128)
  gap = 500 if config_name == "llama_7b" else 200
  return OptimizerConfig(name=name, rank=rank, update_proj_gap=gap)


def bf16(config: LlamaConfig) -> LlamaConfig:
  return dataclasses.replace(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, remat=True)
