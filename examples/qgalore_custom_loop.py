"""A user's own Flax NNX training loop with Q-GaLore (arXiv:2407.08296).

The attention/MLP kernels of a LLaMA take
``optax.chain(optax.clip_by_global_norm(1.0), qgalore_jax.qgalore(schedule, ...))`` and are held
as INT8 weights updated with stochastic rounding; embeddings, norms and the LM head take AdamW
through ``optax.partition``. Run: ``python examples/qgalore_custom_loop.py --steps 100``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import qgalore_jax
from llm.model import CONFIGS, Llama


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()

  model = Llama(CONFIGS["tiny"], rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 0.01, 10, args.steps)
  optimizer = optax.partition(
      {"galore": optax.chain(optax.clip_by_global_norm(1.0),
                             qgalore_jax.qgalore(schedule, rank=16, update_proj_gap=20)),
       "adamw": optax.adamw(schedule)},
      qgalore_jax.label_fn(params))
  opt_state = optimizer.init(params)
  params = qgalore_jax.quantize_params(params, qgalore_jax.projected_mask(params))  # INT8

  # toy data: a repeating byte pattern the model can learn
  text = np.frombuffer(b"def f(x):\n    return x * 2\n" * 200, np.uint8).astype(np.int32)

  def loss_fn(dense, tokens):
    logits, _ = nnx.merge(graphdef, dense)(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  @jax.jit
  def step(params, opt_state, tokens, key):
    dense = qgalore_jax.dequantize_params(params)
    loss, grads = jax.value_and_grad(loss_fn)(dense, tokens)
    updates, opt_state = optimizer.update(grads, opt_state, dense)
    return qgalore_jax.apply_updates_sr(params, updates, key), opt_state, loss

  key = jax.random.key(0)
  losses = []
  for i in range(args.steps):
    starts = (np.arange(4) * 37 + i * 11) % (text.size - 65)
    tokens = jnp.asarray(np.stack([text[s:s + 65] for s in starts]))
    params, opt_state, loss = step(params, opt_state, tokens, jax.random.fold_in(key, i))
    losses.append(float(loss))
  counts = qgalore_jax.svd_counts(opt_state)
  print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; SVDs {counts['total']}")


if __name__ == "__main__":
  main()
