"""Dynamic sparsity: masks as arrays, magnitude pruning, SET/RigL prune-and-regrow.

One module for every sparse method of the suite:

- SET (Mocanu et al. 2018, arXiv:1707.04780): every ``update_frequency`` steps drop the fraction
  ``p`` of active weights with the smallest magnitude and regrow as many at random.
- RigL (Evci et al. 2020, arXiv:1911.11134, Sec. 3): the same drop, regrowth where the dense
  gradient is largest; ``p`` decays with a cosine (their Eq. 1).
- Magnitude pruning at init or gradually (Zhu & Gupta 2017, arXiv:1710.01878, Eq. 1).
- E2ENet's DSFF (Wu et al. 2024, arXiv:2312.04727, Sec. 3.2): SET-style exploration at *kernel*
  granularity (one entry per (in, out) kernel of a conv), L1 kernel norms, random regrowth.

A mask is a boolean array whose shape says its granularity: the parameter's shape (element), the
parameter's last two axes (kernel: Flax conv kernels are laid out ``(*spatial, in, out)``, so the
mask broadcasts over the spatial axes), or ``()`` (a dense leaf, never pruned). Masks live in the
optimizer state of :func:`dynamic_sparsity`, so ``jit`` sees through them and orbax saves them.
Regrown weights start at zero and the inner optimizer's moments of every changed entry are reset.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

ELEMENT = "element"
KERNEL = "kernel"
GRANULARITIES = (ELEMENT, KERNEL)

# (path, leaf) -> "element" | "kernel" | None (dense). Paths are jax.tree_util key paths.
GranularityFn = Callable[[tuple, jax.Array], "str | None"]


def path_names(path: tuple) -> tuple[str, ...]:
  """A key path as plain strings, e.g. ``('fusion', 'nodes', '3', 'conv', 'kernel')``."""
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return tuple(names)


def mask_shape(shape: tuple[int, ...], granularity: str | None) -> tuple[int, ...]:
  """The shape of a mask of this granularity for a parameter of ``shape``."""
  if granularity is None:
    return ()
  if granularity == ELEMENT:
    return tuple(shape)
  if granularity == KERNEL:
    if len(shape) < 3:
      raise ValueError(f"kernel granularity needs a conv kernel (*spatial, in, out), got {shape}")
    return tuple(shape[-2:])
  raise ValueError(f"granularity must be one of {GRANULARITIES} or None, got {granularity!r}")


def _score_by_mask(x: jax.Array, mask: jax.Array) -> jax.Array:
  """|x| reduced (L1) over the axes the mask broadcasts over: one score per mask entry."""
  lead = x.ndim - mask.ndim
  return jnp.sum(jnp.abs(x), axis=tuple(range(lead))) if lead else jnp.abs(x)


def top_k_mask(scores: jax.Array, k: jax.Array | int) -> jax.Array:
  """Boolean mask of the ``k`` largest scores (ties: lower flat index first); ``k`` may be traced."""
  flat = scores.ravel()
  if isinstance(k, int):  # static k: lax.top_k compiles much faster than a full sort on CPU
    if k <= 0:
      return jnp.zeros(scores.shape, bool)
    _, idx = jax.lax.top_k(flat, min(k, flat.size))
    return jnp.zeros(flat.shape, bool).at[idx].set(True).reshape(scores.shape)
  order = jnp.argsort(-flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return (ranks < k).reshape(scores.shape)


def random_mask(key: jax.Array, shape: tuple[int, ...], density: float) -> jax.Array:
  """A mask with exactly ``round(density * size)`` active entries at uniformly random places."""
  if not 0.0 <= density <= 1.0:
    raise ValueError(f"density must be in [0, 1], got {density}")
  n = math.prod(shape)
  return top_k_mask(jax.random.uniform(key, shape), round(density * n))


def _masked_leaves(params: Any, granularity: GranularityFn):
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  shapes = [mask_shape(leaf.shape, granularity(path, leaf)) for path, leaf in leaves_with_path]
  return [leaf for _, leaf in leaves_with_path], shapes, treedef


def init_masks(key: jax.Array, params: Any, density: float, granularity: GranularityFn) -> Any:
  """Uniform random masks at ``density`` per sparse leaf (the 'uniform' init of E2ENet/SET)."""
  leaves, shapes, treedef = _masked_leaves(params, granularity)
  keys = jax.random.split(key, len(leaves))
  masks = [random_mask(k, s, density) if s else jnp.ones((), bool) for k, s in zip(keys, shapes)]
  return jax.tree.unflatten(treedef, masks)


def magnitude_masks(params: Any, density: float, granularity: GranularityFn, *,
                    scope: str = "layer") -> Any:
  """Keeps the largest-magnitude entries (L1 per kernel at kernel granularity).

  ``scope="layer"``: ``density`` in every sparse leaf; ``"global"``: one threshold over all sparse
  leaves (exactly ``round(density * total)`` survive). Used for pruning at init.
  """
  if scope not in ("layer", "global"):
    raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
  leaves, shapes, treedef = _masked_leaves(params, granularity)
  scores = [_score_by_mask(p, jnp.ones(s, bool)) if s else None for p, s in zip(leaves, shapes)]
  if scope == "layer":
    masks = [top_k_mask(sc, round(density * sc.size)) if sc is not None else jnp.ones((), bool)
             for sc in scores]
    return jax.tree.unflatten(treedef, masks)
  sparse = [sc.ravel() for sc in scores if sc is not None]
  flat = top_k_mask(jnp.concatenate(sparse), round(density * sum(s.size for s in sparse)))
  masks, offset = [], 0
  for sc in scores:
    if sc is None:
      masks.append(jnp.ones((), bool))
      continue
    masks.append(flat[offset:offset + sc.size].reshape(sc.shape))
    offset += sc.size
  return jax.tree.unflatten(treedef, masks)


def apply_masks(tree: Any, masks: Any) -> Any:
  """Zeros the entries of ``tree`` (params, grads, moments) that their masks switch off."""
  return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, masks)


def mask_density(masks: Any, params: Any) -> jax.Array:
  """Fraction of active weights over the sparse leaves (weights, not mask entries)."""
  active, total = 0, 0
  for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params)):
    if m.ndim:
      active = active + jnp.sum(jnp.broadcast_to(m, p.shape))
      total += p.size
  return jnp.asarray(active, jnp.float32) / max(total, 1)


def count_nonzero(params: Any, masks: Any | None = None) -> int:
  """Weights counted as non-zero: active mask entries times kernel size, dense leaves in full."""
  sizes = [math.prod(p.shape) for p in jax.tree.leaves(params)]
  if masks is None:
    return int(sum(sizes))
  # Each mask entry stands for size / mask.size weights (a whole kernel at kernel granularity).
  return int(sum(int(np.sum(np.asarray(m))) * (n // max(np.size(m), 1))
                 for m, n in zip(jax.tree.leaves(masks), sizes)))


def nonzero_at_density(params: Any, density: float, granularity: GranularityFn) -> int:
  """Weights left non-zero by :func:`init_masks` or :func:`magnitude_masks` (layer scope) at
  ``density``, from shapes only: ``round(density * mask_size)`` entries per sparse leaf."""
  leaves, shapes, _ = _masked_leaves(params, granularity)
  total = 0
  for leaf, shape in zip(leaves, shapes):
    size = math.prod(leaf.shape)
    if shape:
      entries = math.prod(shape)
      total += round(density * entries) * (size // entries)
    else:
      total += size
  return total


def prune_and_regrow(key: jax.Array, mask: jax.Array, param: jax.Array, drop_fraction: jax.Array,
                     *, grad: jax.Array | None = None, regrow: str = "random"
                     ) -> tuple[jax.Array, jax.Array]:
  """One SET/RigL exploration step for one leaf; returns ``(new_mask, regrown)``.

  Drops ``floor(drop_fraction * active)`` active entries with the smallest magnitude (L1 per
  kernel) and regrows exactly as many among the inactive ones: at random (SET, E2ENet) or where
  ``|grad|`` (L1 per kernel) is largest (RigL). Entries just dropped are regrown only when no
  other inactive entry is left, so the active count never changes.
  """
  if regrow not in ("random", "gradient"):
    raise ValueError(f"regrow must be 'random' or 'gradient', got {regrow!r}")
  n_active = jnp.sum(mask, dtype=jnp.int32)
  n_drop = jnp.floor(drop_fraction * n_active).astype(jnp.int32)
  magnitude = _score_by_mask(param, mask)
  # Scores are >= 0; the sentinels -1 and -2 rank below every real candidate.
  keep = top_k_mask(jnp.where(mask, magnitude, -1.0), n_active - n_drop)
  dropped = mask & ~keep
  if regrow == "gradient":
    if grad is None:
      raise ValueError("regrow='gradient' (RigL) needs the dense gradient")
    grow_score = _score_by_mask(grad, mask)
  else:
    grow_score = jax.random.uniform(key, mask.shape)
  grow_score = jnp.where(keep, -2.0, jnp.where(dropped, -1.0, grow_score))
  regrown = top_k_mask(grow_score, n_drop)
  return keep | regrown, regrown


def cosine_drop_fraction(initial: float = 0.5, decay_steps: int = 1000, final: float = 0.001
                         ) -> optax.Schedule:
  """RigL Eq. 1 / the official ``CosineDecay``: ``final + (initial - final)(1 + cos(pi t/T))/2``."""
  if decay_steps < 1:
    raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")

  def schedule(step):
    t = jnp.minimum(jnp.asarray(step, jnp.float32), decay_steps) / decay_steps
    return final + (initial - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
  return schedule


def gradual_density(initial: float = 1.0, final: float = 0.1, begin_step: int = 0,
                    end_step: int = 1000) -> optax.Schedule:
  """Zhu & Gupta (arXiv:1710.01878) Eq. 1, cubic density decay for gradual magnitude pruning."""
  if end_step <= begin_step:
    raise ValueError("end_step must exceed begin_step")

  def schedule(step):
    t = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) / (end_step - begin_step), 0, 1)
    return final + (initial - final) * (1.0 - t) ** 3
  return schedule


class DynamicSparsityState(NamedTuple):
  count: jax.Array          # int32 scalar, optimizer steps taken
  key: jax.Array            # typed PRNG key for random regrowth
  masks: Any                # pytree of boolean masks, one per parameter leaf (() for dense)
  inner_state: optax.OptState


def _mask_moments(tree: Any, masks: Any, params: Any) -> Any:
  """Applies ``masks`` to every sub-tree of an optimizer state shaped like ``params`` (moments)."""
  params_def = jax.tree.structure(params)
  shapes = [p.shape for p in jax.tree.leaves(params)]

  def like_params(node):
    if jax.tree.structure(node) != params_def:
      return False
    return [getattr(x, "shape", None) for x in jax.tree.leaves(node)] == shapes

  def visit(node):
    if like_params(node):
      return apply_masks(node, masks)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      return type(node)(*(visit(x) for x in node))
    if isinstance(node, (tuple, list)):
      return type(node)(visit(x) for x in node)
    if isinstance(node, dict):
      return {k: visit(v) for k, v in node.items()}
    return node
  return visit(tree)


def dynamic_sparsity(inner: optax.GradientTransformation, *, density: float,
                     granularity: GranularityFn, seed: int = 0, update_frequency: int = 100,
                     drop_fraction: optax.ScalarOrSchedule = 0.3, regrow: str = "random",
                     init: str = "random", end_step: int | None = None
                     ) -> optax.GradientTransformation:
  """Wraps ``inner`` so that the parameters chosen by ``granularity`` train sparse.

  Masks start at ``density`` (``init="random"``: uniform per leaf; ``"magnitude"``: the largest
  weights per leaf, i.e. pruning at init). Gradients are masked before ``inner`` (its momentum
  never sees inactive entries) and the returned updates keep inactive weights at exactly zero,
  so a model can use its parameters directly. Every ``update_frequency`` steps (0: never, static
  masks) up to ``end_step``, :func:`prune_and_regrow` runs on every sparse leaf with
  ``drop_fraction`` (a float or a schedule of the step count); ``regrow="random"`` is SET/E2ENet,
  ``"gradient"`` is RigL (uses the incoming dense gradient, so put this transform outermost).
  """
  if init not in ("random", "magnitude"):
    raise ValueError(f"init must be 'random' or 'magnitude', got {init!r}")
  if regrow not in ("random", "gradient"):
    raise ValueError(f"regrow must be 'random' or 'gradient', got {regrow!r}")
  if update_frequency < 0:
    raise ValueError(f"update_frequency must be >= 0, got {update_frequency}")
  fraction_fn = drop_fraction if callable(drop_fraction) else (lambda _: drop_fraction)

  def init_fn(params):
    key, mask_key = jax.random.split(jax.random.key(seed))
    if init == "random":
      masks = init_masks(mask_key, params, density, granularity)
    else:
      masks = magnitude_masks(params, density, granularity)
    return DynamicSparsityState(jnp.zeros((), jnp.int32), key, masks, inner.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("dynamic_sparsity needs params (weights are pruned by magnitude)")
    grads = updates
    # The inner optimizer sees the sparse model only (weight decay included), so its moments
    # stay exactly zero on inactive entries.
    inner_updates, inner_state = inner.update(apply_masks(grads, state.masks), state.inner_state,
                                              apply_masks(params, state.masks))
    # Inactive weights go to exactly zero (also on the first step, when params start dense).
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), inner_updates, params,
                           state.masks)
    count = state.count + 1
    key, explore_key = jax.random.split(state.key)

    def explore(_):
      new_params = jax.tree.map(jnp.add, params, updates)
      fraction = fraction_fn(count)
      leaves_m, treedef = jax.tree.flatten(state.masks)
      leaves_p = treedef.flatten_up_to(new_params)
      leaves_g = treedef.flatten_up_to(grads)
      keys = jax.random.split(explore_key, len(leaves_m))
      new_masks, fresh = [], []
      for k, m, p, g in zip(keys, leaves_m, leaves_p, leaves_g):
        if m.ndim == 0:
          new_masks.append(m)
          fresh.append(jnp.zeros((), bool))
          continue
        new_m, regrown = prune_and_regrow(k, m, p, fraction, grad=g, regrow=regrow)
        new_masks.append(new_m)
        fresh.append(regrown)
      new_masks = jax.tree.unflatten(treedef, new_masks)
      fresh = jax.tree.unflatten(treedef, fresh)
      # Kept weights take their update; dropped and regrown ones end the step at zero.
      keep = jax.tree.map(lambda m, r: m & ~r, new_masks, fresh)
      new_updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p), updates, params, keep)
      return new_masks, new_updates, _mask_moments(inner_state, keep, params)

    def stay(_):
      return state.masks, updates, inner_state

    if update_frequency > 0:
      due = (count % update_frequency) == 0
      if end_step is not None:
        due = due & (count <= end_step)
      masks, updates, inner_state = jax.lax.cond(due, explore, stay, None)
    else:  # static masks (pruning at init): nothing to explore
      masks = state.masks
    return updates, DynamicSparsityState(count, key, masks, inner_state)

  return optax.GradientTransformation(init_fn, update_fn)
