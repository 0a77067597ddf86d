"""Supervised fine-tuning of the student on distilled QA pairs with LoRA (CourseGPT-zh Sec. 3.3;
LoRA: Hu et al. 2021, arXiv:2106.09685; paper setting rank 64, alpha 128, lr 1e-4).

Each pair becomes the chat ``[user: question] -> assistant: answer``; the loss is the mean token
cross-entropy over the answer tokens only (prompt and padding are masked). Only the
:class:`qgalore_jax.lora.LoRAParam` adapters train; the base weights stay frozen.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from qgalore_jax.lora import DEFAULT_TARGETS, LoRAParam, apply_lora, merge, trainable_count


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  rank: int = 64
  alpha: float = 128.0
  learning_rate: float = 1e-4
  steps: int = 200
  batch_size: int = 4
  max_len: int = 256
  targets: tuple[str, ...] = DEFAULT_TARGETS


def encode_pairs(pairs: Sequence[dict[str, Any]], tokenizer, max_len: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens, loss_mask)`` of shape ``(len(pairs), max_len)``: right-padded chat-formatted
  pairs; the mask is 1 on the answer's tokens (and its end-of-turn token) only."""
  end = tokenizer.backend.token_to_id("<|im_end|>")
  end = tokenizer.eos_id if end is None else end
  tokens = np.full((len(pairs), max_len), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(pairs), max_len), np.float32)
  for row, pair in enumerate(pairs):
    prompt = tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": pair["question"]}]))
    answer = tokenizer.encode(pair["answer"], add_special=False) + [end]
    if len(prompt) >= max_len - 1:
      raise ValueError(f"question of {len(prompt)} tokens does not fit max_len={max_len}")
    ids = (prompt + answer)[:max_len]
    tokens[row, :len(ids)] = ids
    mask[row, len(prompt):len(ids)] = 1.0
  return tokens, mask


def answer_loss(model, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy over the masked (answer) positions."""
  logits, _ = model(tokens[:, :-1])
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
  weights = mask[:, 1:]
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@nnx.jit
def _train_step(model, optimizer, tokens, mask):
  loss, grads = nnx.value_and_grad(answer_loss, argnums=nnx.DiffState(0, LoRAParam))(
      model, tokens, mask)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def _eval_loss(model, tokens, mask):
  return answer_loss(model, tokens, mask)


@dataclasses.dataclass
class SFTResult:
  losses: list[float]  # training loss per step
  eval_loss_before: float | None
  eval_loss_after: float | None
  trainable_params: int
  adapter_digest: str  # names the tuned weights (the students' cache namespace)


def add_adapters(model, config: SFTConfig, seed: int = 0):
  """Wraps ``config.targets`` of ``model`` with LoRA adapters (in place); returns the model."""
  apply_lora(model, rank=config.rank, alpha=config.alpha, targets=config.targets,
             rngs=nnx.Rngs(seed))
  return model


def adapter_digest(model) -> str:
  """A short hash of the adapter weights: changes whenever training changes them."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(nnx.state(model, LoRAParam)):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:12]


def train_lora(model, tokenizer, train: Sequence[dict[str, Any]], config: SFTConfig, *,
               held_out: Sequence[dict[str, Any]] = (), seed: int = 0,
               on_step: Callable[[int, float], None] | None = None) -> SFTResult:
  """Adds adapters to ``model`` and trains them on ``train``; ``held_out`` pairs give the
  answer loss before and after. The model keeps its (unmerged) adapters."""
  if not train:
    raise ValueError("SFT needs at least one training pair")
  tokens, mask = encode_pairs(train, tokenizer, config.max_len)
  eval_data = encode_pairs(held_out, tokenizer, config.max_len) if held_out else None
  add_adapters(model, config, seed)
  trainable = trainable_count(model)
  eval_before = float(_eval_loss(model, *eval_data)) if eval_data else None
  optimizer = nnx.Optimizer(model, optax.adamw(config.learning_rate), wrt=LoRAParam)
  rng = np.random.default_rng(seed)
  losses = []
  for step in range(config.steps):
    batch = rng.choice(len(tokens), size=min(config.batch_size, len(tokens)), replace=False)
    loss = float(_train_step(model, optimizer, jnp.asarray(tokens[batch]),
                             jnp.asarray(mask[batch])))
    losses.append(loss)
    if on_step:
      on_step(step, loss)
  eval_after = float(_eval_loss(model, *eval_data)) if eval_data else None
  return SFTResult(losses, eval_before, eval_after, trainable, adapter_digest(model))


def merged_copy(model):
  """A copy of ``model`` with its adapters merged into the base kernels (for serving)."""
  clone = nnx.clone(model)
  merge(clone)
  return clone


def merged_into(base, adapted):
  """``base`` (an adapter-free model, updated in place and returned) with the weights of
  ``adapted``, adapters merged: the result has the base model's parameter tree, so code
  compiled for the base model serves it."""
  weights = nnx.state(merged_copy(adapted), nnx.All(nnx.Param, nnx.Not(LoRAParam)))
  nnx.update(base, weights)
  return base
