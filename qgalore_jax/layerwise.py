"""OwLore and LISA: layerwise sampled fine-tuning as optax transformations.

OwLore (Li et al. 2024, arXiv:2405.18380; official code pixeli99/OwLore, later renamed OWS):

* Layerwise outlier distribution (Sec. 3.1, metric of OWL, Yin et al. 2023, arXiv:2310.05175,
  luuyin/OWL): with calibration inputs X flowing through the model, every linear of block l
  scores ``A_ij = |W_ij| * ||X_j||_2`` (X_j: input channel j over all calibration tokens);
  ``LOD_l = 100 * #{A > M * mean(A)} / numel`` over all of block l's linears together.
  :func:`layer_outlier_distribution` computes it (the official repository ships precomputed
  values).
* Sampling (Sec. 3.2): ``p_l = LOD_l / sum(LOD)``; every ``interval`` (K) steps, ``gamma``
  blocks are drawn without replacement with probabilities p (sequential draws, as
  ``np.random.choice(replace=False, p=p)`` in the official code; here the equivalent
  Gumbel-top-k of ``jax.random.choice``). Only drawn blocks are trained; embeddings, the final
  norm and the LM head always train with full-rank AdamW.
* Low rank (Sec. 3.3): drawn blocks train with GaLore (:func:`qgalore_jax.scale_by_galore`).

LISA (Pan et al. 2024, arXiv:2403.17919) is the same machinery with uniform p and full-rank
Adam inside the blocks.

State. :class:`LayerwiseSamplingState` holds the active-block mask, the sampler's PRNG key and
the probabilities as arrays, so one jitted step serves every sample and orbax checkpoints the
whole sampler. Each block has its own inner optimizer state (moments, GaLore projectors, step
counter). A block's update runs under ``lax.cond(active[l], ...)``: a per-block select that,
unlike computing everything and picking with ``jnp.where``, also skips the inactive blocks'
work (their due SVD refreshes included). An inactive block's update is exactly zero and its
state is returned untouched: moments, projectors and step counters stay frozen until the block
is drawn again (the issue's contract; the official LISA/OwLore trainers rebuild the optimizer
over the new active set instead).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrepro.sparsity import path_names
from qgalore_jax.adam import scale_by_adam_official
from qgalore_jax.galore import scale_by_galore
from qgalore_jax.labels import projected_labels
from qgalore_jax.lora import DEFAULT_TARGETS

DENSE = "dense"  # label of the always-trained leaves
DEFAULT_M = 13.0  # the official OWL/OwLore metric file's outlier threshold


def llama_block_index(names: tuple[str, ...]) -> int | None:
  """Decoder block of a parameter path of ``llm.model.Llama`` (``layers/<l>/...``), else None."""
  if len(names) > 1 and names[0] == "layers":
    return int(names[1])
  return None


# ---- layerwise outlier distribution ------------------------------------------------------

class _InputSquares(nnx.Variable):
  """Running sum over calibration tokens of the squared input channels of a linear."""


class _InputRecorder(nnx.Module):
  """Wraps a linear and accumulates ``sum_tokens x_j^2`` of its input."""

  def __init__(self, linear: nnx.Linear):
    self.linear = linear
    self.squares = _InputSquares(jnp.zeros((linear.kernel.shape[0],), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    flat = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    self.squares.set_value(self.squares.get_value() + jnp.sum(flat * flat, axis=0))
    return self.linear(x)


def block_outlier_ratio(kernels: Iterable[jax.Array], input_norms: Iterable[jax.Array],
                        M: float) -> jax.Array:
  """``100 * #{A > M mean(A)} / numel`` with ``A = |W| * ||X_j||`` over all given linears
  (kernels in Flax's (in, out) layout, norms per input channel)."""
  scores = [jnp.abs(w.astype(jnp.float32)) * n[:, None] for w, n in zip(kernels, input_norms)]
  flat = jnp.concatenate([s.reshape(-1) for s in scores])
  return 100.0 * jnp.mean((flat > M * jnp.mean(flat)).astype(jnp.float32))


def layer_outlier_distribution(model: nnx.Module, batches: Iterable[Any], M: float = DEFAULT_M,
                               *, targets: Iterable[str] = DEFAULT_TARGETS,
                               block_of: Callable[[tuple[str, ...]], int | None]
                               = llama_block_index) -> np.ndarray:
  """LOD per decoder block (percent of outlier weights), OwLore Sec. 3.1 / OWL Eq. 1.

  ``batches`` yields token arrays ``(batch, seq)`` fed to ``model(tokens)``; every
  ``nnx.Linear`` named in ``targets`` inside a block contributes. The model is instrumented
  in place and restored before returning. Returns a float64 array of length num_blocks.
  """
  targets = tuple(targets)
  if M <= 0:
    raise ValueError(f"M must be positive, got {M}")
  sites = []
  for path, parent in nnx.iter_modules(model):
    for name in targets:
      child = getattr(parent, name, None)
      if isinstance(child, nnx.Linear):
        block = block_of(path_names(path + (name,)))
        if block is not None:
          sites.append((block, parent, name, child))
  if not sites:
    raise ValueError(f"no nnx.Linear named any of {targets} inside decoder blocks")
  recorders = []
  for block, parent, name, child in sites:
    recorder = _InputRecorder(child)
    setattr(parent, name, recorder)
    recorders.append(recorder)
  try:
    forward = nnx.jit(lambda m, tokens: m(tokens)[0].shape)
    seen = 0
    for tokens in batches:
      forward(model, jnp.asarray(tokens))
      seen += 1
    if seen == 0:
      raise ValueError("layer_outlier_distribution needs at least one calibration batch")
    norms = [jnp.sqrt(r.squares.get_value()) for r in recorders]
  finally:
    for block, parent, name, child in sites:
      setattr(parent, name, child)
  num_blocks = max(block for block, *_ in sites) + 1
  lod = np.zeros(num_blocks)
  for b in range(num_blocks):
    members = [i for i, site in enumerate(sites) if site[0] == b]
    lod[b] = float(block_outlier_ratio([sites[i][3].kernel.get_value() for i in members],
                                       [norms[i] for i in members], M))
  return lod


def sampling_probabilities(lod: Any) -> jax.Array:
  """``p_l = LOD_l / sum(LOD)`` (OwLore Sec. 3.2)."""
  lod = jnp.asarray(lod, jnp.float32)
  if lod.ndim != 1 or bool(jnp.any(lod < 0)) or float(jnp.sum(lod)) <= 0:
    raise ValueError("LOD must be a non-negative vector with a positive sum (lower M if "
                     "every block has zero outliers)")
  return lod / jnp.sum(lod)


# ---- the sampling transformation ---------------------------------------------------------

class LayerwiseSamplingState(NamedTuple):
  count: jax.Array          # int32: steps taken
  active: jax.Array         # bool (num_blocks,): blocks trained at this step
  key: jax.Array            # typed PRNG key of the sampler
  probs: jax.Array          # float32 (num_blocks,): sampling probabilities
  times_sampled: jax.Array  # int32 (num_blocks,): draws that picked each block
  inner_state: optax.OptState  # optax.partition over the dense group and one group per block


def _block_label(block: int) -> str:
  return f"block_{block:04d}"


def _labels(params: Any, num_blocks: int, block_of) -> Any:
  def label(path, _):
    block = block_of(path_names(path))
    if block is None:
      return DENSE
    if not 0 <= block < num_blocks:
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} is in block {block}, but "
                       f"only {num_blocks} sampling probabilities were given")
    return _block_label(block)
  return jax.tree_util.tree_map_with_path(label, params)


def _gated(inner: optax.GradientTransformation, block: int
           ) -> optax.GradientTransformationExtraArgs:
  """``inner`` for one block, run only when ``active[block]``; zeros and the untouched state
  otherwise."""
  def init_fn(params):
    return inner.init(params)

  def update_fn(updates, state, params=None, *, active, **extra_args):
    del extra_args

    def run(operands):
      u, s = operands
      new_u, new_s = inner.update(u, s, params)
      return jax.tree.map(lambda n, o: n.astype(o.dtype), new_u, u), new_s

    def freeze(operands):
      u, s = operands
      return jax.tree.map(jnp.zeros_like, u), s

    return jax.lax.cond(active[block], run, freeze, (updates, state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sample_blocks(key: jax.Array, probs: jax.Array, gamma: int) -> jax.Array:
  """A bool mask of ``gamma`` blocks drawn without replacement with probabilities ``probs``."""
  chosen = jax.random.choice(key, probs.shape[0], (gamma,), replace=False, p=probs)
  return jnp.zeros(probs.shape, bool).at[chosen].set(True)


def layerwise_sampling(block: optax.GradientTransformation,
                       dense: optax.GradientTransformation, probs: Any, *, gamma: int,
                       interval: int, seed: int = 0,
                       block_of: Callable[[tuple[str, ...]], int | None] = llama_block_index
                       ) -> optax.GradientTransformation:
  """Trains ``gamma`` blocks drawn every ``interval`` steps with ``probs``: each block's
  leaves go through its own copy of ``block`` (gated, see the module docstring), the leaves
  outside blocks through ``dense`` every step. Apply the learning rate after this transform.
  """
  probs = np.asarray(probs, np.float32)  # static: validated here, copied into the state
  num_blocks = probs.shape[0]
  if not 1 <= gamma <= num_blocks:
    raise ValueError(f"gamma must be in [1, {num_blocks}], got {gamma}")
  if interval < 1:
    raise ValueError(f"interval must be >= 1, got {interval}")
  if int(np.sum(probs > 0)) < gamma:
    raise ValueError(f"only {int(np.sum(probs > 0))} blocks have a positive sampling "
                     f"probability, fewer than gamma={gamma}")
  transforms = {DENSE: dense} | {_block_label(b): _gated(block, b) for b in range(num_blocks)}
  inner = optax.partition(transforms, lambda p: _labels(p, num_blocks, block_of))

  def init_fn(params):
    return LayerwiseSamplingState(
        count=jnp.zeros([], jnp.int32), active=jnp.zeros((num_blocks,), bool),
        key=jax.random.key(seed), probs=jnp.asarray(probs),
        times_sampled=jnp.zeros((num_blocks,), jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None):
    resample = state.count % interval == 0
    # the stream advances every step (a draw is simply unused between resamples)
    key, draw_key = jax.random.split(state.key)
    drawn = sample_blocks(draw_key, state.probs, gamma)
    active = jnp.where(resample, drawn, state.active)
    times_sampled = state.times_sampled + (resample & active).astype(jnp.int32)
    updates, inner_state = inner.update(updates, state.inner_state, params, active=active)
    return updates, LayerwiseSamplingState(optax.safe_int32_increment(state.count), active, key,
                                           state.probs, times_sampled, inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def _block_galore(rank, update_proj_gap, scale, b1, b2, eps, weight_decay):
  return optax.chain(
      optax.partition({"galore": scale_by_galore(rank, update_proj_gap, scale, b1=b1, b2=b2,
                                                 eps=eps),
                       "adamw": scale_by_adam_official(b1, b2, eps)}, projected_labels),
      optax.add_decayed_weights(weight_decay))


def _adamw_scaling(b1, b2, eps, weight_decay, eps_placement="official"):
  return optax.chain(scale_by_adam_official(b1, b2, eps, eps_placement),
                     optax.add_decayed_weights(weight_decay))


def owlore(learning_rate: optax.ScalarOrSchedule, probs: Any, *, gamma: int = 5,
           interval: int = 50, rank: int = 256, update_proj_gap: int = 100, scale: float = 1.0,
           b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, weight_decay: float = 0.0,
           seed: int = 0, block_of: Callable[[tuple[str, ...]], int | None] = llama_block_index
           ) -> optax.GradientTransformation:
  """OwLore (arXiv:2405.18380): blocks drawn with ``probs`` (from
  :func:`sampling_probabilities` of the LOD) train with GaLore on their attention/MLP kernels
  and Adam on their norms; leaves outside blocks train with AdamW every step. Defaults are the
  official ones (gamma 5, K 50, rank 256, T 100, alpha 1.0)."""
  block = _block_galore(rank, update_proj_gap, scale, b1, b2, eps, weight_decay)
  return optax.chain(
      layerwise_sampling(block, _adamw_scaling(b1, b2, eps, weight_decay), probs, gamma=gamma,
                         interval=interval, seed=seed, block_of=block_of),
      optax.scale_by_learning_rate(learning_rate))


def lisa(learning_rate: optax.ScalarOrSchedule, num_blocks: int, *, gamma: int = 2,
         interval: int = 3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, seed: int = 0,
         block_of: Callable[[tuple[str, ...]], int | None] = llama_block_index
         ) -> optax.GradientTransformation:
  """LISA (arXiv:2403.17919): ``gamma`` blocks drawn uniformly every ``interval`` steps train
  with full-rank AdamW, as do the leaves outside blocks (official baseline: gamma 2, K 3).
  Adam is torch's AdamW (``m_hat / (sqrt(v_hat) + eps)``, eps 1e-8) as in the HF trainer."""
  adamw = _adamw_scaling(b1, b2, eps, weight_decay, "optax")
  probs = np.full((num_blocks,), 1.0 / num_blocks)
  return optax.chain(
      layerwise_sampling(adamw, adamw, probs, gamma=gamma, interval=interval, seed=seed,
                         block_of=block_of),
      optax.scale_by_learning_rate(learning_rate))


def sampling_state(opt_state: Any) -> LayerwiseSamplingState:
  """The :class:`LayerwiseSamplingState` inside an :func:`owlore`/:func:`lisa` state."""
  for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LayerwiseSamplingState)):
    if isinstance(node, LayerwiseSamplingState):
      return node
  raise ValueError("no LayerwiseSamplingState in this optimizer state")
