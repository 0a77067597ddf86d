"""GaLore and Q-GaLore as optax transformations.

GaLore (Zhao et al. 2024, arXiv:2403.03507, Alg. 2): the gradient G of a weight matrix is
projected onto a rank-r subspace from its SVD, Adam runs on the small projected gradient R, and
the normalized update N is projected back and scaled by alpha. The projector is refreshed
from the current gradient at steps 0, T, 2T, ...; Adam's moments are kept across refreshes.

Q-GaLore (Zhang et al. 2024, arXiv:2407.08296) adds INT4 projectors (Sec. 3.2), lazy
layer-adaptive subspace refreshes (Sec. 3.2, "Lazy layer-wise subspace exploration"): at each
refresh after the first, the cosine similarity between the first singular vector of the old and
new projector enters a queue of the last ``queue_size`` values; once the queue is full and its
mean is >= ``cos_threshold``, that layer's gap is multiplied by ``gamma_proj``; and 8-bit Adam
moments for the low-rank states (Sec. 4.1).

The projection side. The papers state the rule for a gradient in PyTorch's (out, in) layout:
for G (m x n) with m >= n, P = Vh[:r] (r x n) and R = G P^T (the smaller dimension is
reduced); otherwise P = U[:, :r] and R = P^T G. A Flax kernel is stored (in, out) = G^T, so
applying the same rule to the stored array picks the other side for square matrices. Given a
stored 2-D array (a x b), ``proj_side`` chooses which dimension is reduced to r:

* ``"torch"`` (default): the official rule on the torch layout (SVD of the transpose, as the
  official code computes it): reduce the rows when a <= b, else the columns;
* ``"smaller"``: the rule applied naively to the stored array: reduce the columns when a >= b;
* ``"larger"``: reduce the larger dimension, rows on ties (``optax.contrib.scale_by_galore``);
* ``"left"`` / ``"right"``: always reduce the rows / the columns.

Everything per layer (projector, refresh gap, queue, SVD counts) lives in the state as arrays,
refreshes run under ``lax.cond``, so the transforms are jittable, checkpointable with orbax and
shardable. The SVD is always computed in float32. A gradient with a non-finite entry never
reaches the SVD: the old projector is kept, ``nonfinite_count`` counts it, and the refresh is
retried at the next step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from qgalore_jax.adam import EPS_PLACEMENTS, scale_by_adam_official
from qgalore_jax.adam8bit import DEFAULT_BLOCK_SIZE, scale_by_adam_8bit
from qgalore_jax.quantization import DEFAULT_GROUP_SIZE, QTensor, dequantize, quantize, \
    quantized_zeros

PROJ_SIDES = ("torch", "smaller", "larger", "left", "right")
_MAX_GAP = 2 ** 30  # keeps the int32 gap from overflowing under repeated doubling


class LayerProjection(NamedTuple):
  """Per-matrix projection state (all arrays).

  ``projector`` is (a, r) when the rows are reduced (R = P^T G) and (r, b) when the columns
  are (R = G P^T), float32 or an INT4 :class:`QTensor`. ``first_vector`` is the float first
  singular vector of the current projector (for Q-GaLore's similarity test); ``queue`` holds the
  last similarities, ``queue_len`` how many are valid.
  """
  projector: Any
  gap: jax.Array             # int32: this layer's refresh interval T
  svd_count: jax.Array       # int32: SVDs performed
  nonfinite_count: jax.Array  # int32: refreshes skipped because G was not finite
  pending: jax.Array         # bool: a skipped refresh is retried at the next step
  first_vector: jax.Array    # float32
  queue: jax.Array           # float32 (queue_size,)
  queue_len: jax.Array       # int32


class ScaleByGaLoreState(NamedTuple):
  count: jax.Array   # int32 scalar: steps taken
  layers: Any        # per leaf: LayerProjection, or None for leaves that are not 2-D
  inner_state: optax.OptState  # Adam on the low-rank (and non-projected) gradients


def _reduces_rows(shape: tuple[int, int], proj_side: str) -> bool:
  a, b = shape
  if proj_side == "torch":
    return a <= b
  if proj_side == "smaller":
    return a < b
  if proj_side == "larger":
    return a >= b
  return proj_side == "left"


def _low_rank_shape(shape, rank, proj_side):
  a, b = shape
  r = min(rank, a, b)
  if _reduces_rows(shape, proj_side):
    return (r, b), (a, r)
  return (a, r), (r, b)


def _orthogonal_matrix(grad: jax.Array, rank: int, proj_side: str) -> jax.Array:
  """The float32 projector of ``grad`` (see ``LayerProjection.projector`` for its layout)."""
  g = grad.astype(jnp.float32)
  r = min(rank, *g.shape)
  rows = _reduces_rows(g.shape, proj_side)
  if proj_side == "torch":
    # the official code takes the SVD of the torch-layout matrix G^T: rows of G are reduced
    # with Vh of G^T, columns with U of G^T (same subspaces as below, its own signs)
    u, _, vh = jnp.linalg.svd(g.T, full_matrices=False)
    return vh[:r].T if rows else u[:, :r].T
  u, _, vh = jnp.linalg.svd(g, full_matrices=False)
  return u[:, :r] if rows else vh[:r]


def _first_vector(projector: jax.Array, rows: bool) -> jax.Array:
  return projector[:, 0] if rows else projector[0, :]


def _cosine(x: jax.Array, y: jax.Array) -> jax.Array:
  # torch.nn.functional.cosine_similarity's form, no absolute value: a sign flip reads -1
  norm = jnp.maximum(jnp.linalg.norm(x) * jnp.linalg.norm(y), 1e-8)
  return jnp.dot(x, y) / norm


class _Config(NamedTuple):
  rank: int
  update_proj_gap: int
  scale: float
  proj_side: str
  projector_bits: int | None     # None: float32 projector
  projector_group_size: int
  official_zero_point_clamp: bool
  lazy: bool
  cos_threshold: float
  gamma_proj: float
  queue_size: int


def _dense_projector(layer: LayerProjection) -> jax.Array:
  p = layer.projector
  return dequantize(p) if isinstance(p, QTensor) else p


def _store_projector(p: jax.Array, cfg: _Config):
  if cfg.projector_bits is None:
    return p
  return quantize(p, cfg.projector_bits, cfg.projector_group_size,
                  official_zero_point_clamp=cfg.official_zero_point_clamp)


def _init_layer(param: jax.Array, cfg: _Config) -> LayerProjection:
  rows = _reduces_rows(param.shape, cfg.proj_side)
  _, proj_shape = _low_rank_shape(param.shape, cfg.rank, cfg.proj_side)
  if cfg.projector_bits is None:
    projector = jnp.zeros(proj_shape, jnp.float32)
  else:
    projector = quantized_zeros(proj_shape, cfg.projector_bits, cfg.projector_group_size,
                                official_zero_point_clamp=cfg.official_zero_point_clamp)
  vector_len = proj_shape[0] if rows else proj_shape[1]
  zero = jnp.zeros([], jnp.int32)
  return LayerProjection(
      projector=projector, gap=jnp.asarray(cfg.update_proj_gap, jnp.int32),
      svd_count=zero, nonfinite_count=zero, pending=jnp.zeros([], bool),
      first_vector=jnp.zeros((vector_len,), jnp.float32),
      queue=jnp.zeros((cfg.queue_size,), jnp.float32), queue_len=zero)


def _refresh(layer: LayerProjection, grad: jax.Array, cfg: _Config) -> LayerProjection:
  """A new projector from ``grad`` plus Q-GaLore's lazy-gap bookkeeping."""
  rows = _reduces_rows(grad.shape, cfg.proj_side)
  projector = _orthogonal_matrix(grad, cfg.rank, cfg.proj_side)
  vector = _first_vector(projector, rows)
  gap, queue, queue_len = layer.gap, layer.queue, layer.queue_len
  if cfg.lazy:
    has_previous = layer.svd_count > 0
    similarity = _cosine(layer.first_vector, vector)
    full = queue_len == cfg.queue_size
    # append (dropping the oldest value once the queue is full)
    pushed = jnp.where(full, jnp.roll(queue, -1).at[-1].set(similarity),
                       queue.at[jnp.minimum(queue_len, cfg.queue_size - 1)].set(similarity))
    pushed_len = jnp.minimum(queue_len + 1, cfg.queue_size)
    queue = jnp.where(has_previous, pushed, queue)
    queue_len = jnp.where(has_previous, pushed_len, queue_len)
    stable = (has_previous & (queue_len == cfg.queue_size)
              & (jnp.mean(queue) >= cfg.cos_threshold))
    grown = jnp.minimum(jnp.floor(gap.astype(jnp.float32) * cfg.gamma_proj), _MAX_GAP)
    gap = jnp.where(stable, grown.astype(jnp.int32), gap)
  return LayerProjection(
      projector=_store_projector(projector, cfg), gap=gap, svd_count=layer.svd_count + 1,
      nonfinite_count=layer.nonfinite_count, pending=jnp.zeros([], bool), first_vector=vector,
      queue=queue, queue_len=queue_len)


def _step_layer(layer: LayerProjection, grad: jax.Array, count: jax.Array, cfg: _Config
                ) -> LayerProjection:
  due = (count % layer.gap == 0) | layer.pending
  finite = jnp.all(jnp.isfinite(grad))

  def skip_nonfinite(layer):
    return layer._replace(nonfinite_count=layer.nonfinite_count + 1,
                          pending=jnp.ones([], bool))

  def refresh_or_skip(layer):
    return jax.lax.cond(finite, lambda l: _refresh(l, grad, cfg), skip_nonfinite, layer)

  return jax.lax.cond(due, refresh_or_skip, lambda l: l, layer)


def _project(grad: jax.Array, projector: jax.Array, rows: bool) -> jax.Array:
  g = grad.astype(jnp.float32)
  return projector.T @ g if rows else g @ projector.T


def _project_back(low_rank: jax.Array, projector: jax.Array, rows: bool) -> jax.Array:
  return projector @ low_rank if rows else low_rank @ projector


def _scale_by_low_rank(cfg: _Config, inner: optax.GradientTransformation
                       ) -> optax.GradientTransformation:
  if cfg.rank < 1:
    raise ValueError(f"rank must be positive, got {cfg.rank}")
  if cfg.update_proj_gap < 1:
    raise ValueError(f"update_proj_gap must be positive, got {cfg.update_proj_gap}")
  if cfg.proj_side not in PROJ_SIDES:
    raise ValueError(f"proj_side must be one of {PROJ_SIDES}, got {cfg.proj_side!r}")
  if cfg.queue_size < 1:
    raise ValueError(f"queue_size must be positive, got {cfg.queue_size}")

  def projected(x) -> bool:
    return getattr(x, "ndim", 0) == 2

  def init_fn(params):
    layers = jax.tree.map(lambda p: _init_layer(p, cfg) if projected(p) else None, params)
    low_rank = jax.tree.map(
        lambda p: jnp.zeros(_low_rank_shape(p.shape, cfg.rank, cfg.proj_side)[0], jnp.float32)
        if projected(p) else p, params)
    return ScaleByGaLoreState(jnp.zeros([], jnp.int32), layers, inner.init(low_rank))

  def update_fn(updates, state, params=None):
    del params
    is_layer = lambda x: x is None or isinstance(x, LayerProjection)
    layers = jax.tree.map(
        lambda g, layer: _step_layer(layer, g, state.count, cfg) if projected(g) else None,
        updates, state.layers, is_leaf=is_layer)
    dense = jax.tree.map(lambda g, layer: _dense_projector(layer) if projected(g) else None,
                         updates, layers, is_leaf=is_layer)
    rows = jax.tree.map(lambda g: _reduces_rows(g.shape, cfg.proj_side) if projected(g)
                        else None, updates)
    low_rank = jax.tree.map(lambda g, p, r: _project(g, p, r) if projected(g) else g,
                            updates, dense, rows, is_leaf=lambda x: x is None)
    directions, inner_state = inner.update(low_rank, state.inner_state)
    full = jax.tree.map(
        lambda g, n, p, r: (cfg.scale * _project_back(n.astype(jnp.float32), p, r)).astype(g.dtype)
        if projected(g) else n, updates, directions, dense, rows, is_leaf=lambda x: x is None)
    count = optax.safe_int32_increment(state.count)
    return full, ScaleByGaLoreState(count, layers, inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_galore(rank: int = 128, update_proj_gap: int = 200, scale: float = 0.25, *,
                    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                    proj_side: str = "torch", eps_placement: str = "official"
                    ) -> optax.GradientTransformation:
  """GaLore's scaling (arXiv:2403.03507, Alg. 2) of every 2-D leaf; other leaves get plain Adam.

  Returns ``alpha * back_project(adam(project(G)))`` (the caller applies the learning rate and
  the sign). ``eps_placement="official"`` is GaLore's transformers-style Adam (see
  :mod:`qgalore_jax.adam`); ``"optax"`` with ``proj_side="larger"`` reproduces
  ``optax.contrib.scale_by_galore``. Use :func:`qgalore_jax.projected_labels` with
  ``optax.partition`` to send embeddings, norms and the LM head to AdamW instead.
  """
  cfg = _Config(rank, update_proj_gap, scale, proj_side, projector_bits=None,
                projector_group_size=DEFAULT_GROUP_SIZE, official_zero_point_clamp=False,
                lazy=False, cos_threshold=0.0, gamma_proj=1.0, queue_size=1)
  return _scale_by_low_rank(cfg, scale_by_adam_official(b1, b2, eps, eps_placement))


def scale_by_qgalore(rank: int = 256, update_proj_gap: int = 200, scale: float = 0.25, *,
                     b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                     proj_side: str = "torch", eps_placement: str = "optax",
                     projector_bits: int = 4, projector_group_size: int = DEFAULT_GROUP_SIZE,
                     official_zero_point_clamp: bool = False, cos_threshold: float = 0.4,
                     gamma_proj: float = 2.0, queue_size: int = 5, moments_8bit: bool = True,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> optax.GradientTransformation:
  """Q-GaLore's scaling (arXiv:2407.08296): GaLore with INT4 projectors (packed two per byte),
  lazy layer-adaptive refresh gaps and blockwise 8-bit Adam moments.

  Adam defaults follow the official Q-GaLore: bitsandbytes' 8-bit AdamW, whose update is
  ``m_hat / (sqrt(v_hat) + eps)`` (eps placed as in optax) with eps = 1e-8, and beta2 = 0.95
  (``run_pretrain.py``). Its ``--beta1`` default there is 0.0 (labelled "for adafactor"); we
  keep 0.9 as the paper's experiments describe AdamW.

  The INT8 weights with stochastic rounding are a parameter representation, not part of the
  gradient transform: quantize the projected leaves with :func:`qgalore_jax.quantize_params`
  and apply the updates with :func:`qgalore_jax.apply_updates_sr`.
  """
  if eps_placement not in EPS_PLACEMENTS:
    raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")
  cfg = _Config(rank, update_proj_gap, scale, proj_side, projector_bits, projector_group_size,
                official_zero_point_clamp, lazy=True, cos_threshold=cos_threshold,
                gamma_proj=gamma_proj, queue_size=queue_size)
  if moments_8bit:
    inner = scale_by_adam_8bit(b1, b2, eps, block_size=block_size, eps_placement=eps_placement)
  else:
    inner = scale_by_adam_official(b1, b2, eps, eps_placement)
  return _scale_by_low_rank(cfg, inner)


def galore(learning_rate: optax.ScalarOrSchedule, rank: int = 128, update_proj_gap: int = 200,
           scale: float = 0.25, weight_decay: float = 0.0, **kwargs
           ) -> optax.GradientTransformation:
  """The GaLore-AdamW optimizer: :func:`scale_by_galore`, decoupled weight decay, learning rate."""
  return optax.chain(scale_by_galore(rank, update_proj_gap, scale, **kwargs),
                     optax.add_decayed_weights(weight_decay),
                     optax.scale_by_learning_rate(learning_rate))


def qgalore(learning_rate: optax.ScalarOrSchedule, rank: int = 256, update_proj_gap: int = 200,
            scale: float = 0.25, weight_decay: float = 0.0, **kwargs
            ) -> optax.GradientTransformation:
  """The Q-GaLore optimizer: :func:`scale_by_qgalore`, decoupled weight decay, learning rate."""
  return optax.chain(scale_by_qgalore(rank, update_proj_gap, scale, **kwargs),
                     optax.add_decayed_weights(weight_decay),
                     optax.scale_by_learning_rate(learning_rate))


def _galore_states(opt_state) -> list[ScaleByGaLoreState]:
  found = []

  def visit(node):
    if isinstance(node, ScaleByGaLoreState):
      found.append(node)
      return
    if isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)
    elif hasattr(node, "inner_states"):  # optax.partition's state
      visit(node.inner_states)
    elif hasattr(node, "inner_state"):
      visit(node.inner_state)
  visit(opt_state)
  return found


def svd_counts(opt_state) -> dict[str, Any]:
  """SVDs performed so far, found anywhere in an optax state (chains and partitions included).

  Returns ``{"total": int, "per_layer": {path: int}, "gaps": {path: int},
  "nonfinite": int}``; paths are ``jax.tree_util.keystr`` of the projected leaves.
  """
  per_layer, gaps, nonfinite = {}, {}, 0
  is_layer = lambda x: isinstance(x, LayerProjection)
  for state in _galore_states(opt_state):
    for path, layer in jax.tree_util.tree_flatten_with_path(state.layers, is_leaf=is_layer)[0]:
      if isinstance(layer, LayerProjection):
        name = jax.tree_util.keystr(path)
        per_layer[name] = int(layer.svd_count)
        gaps[name] = int(layer.gap)
        nonfinite += int(layer.nonfinite_count)
  return {"total": sum(per_layer.values()), "per_layer": per_layer, "gaps": gaps,
          "nonfinite": nonfinite}
