"""Group-wise asymmetric integer quantization, INT4 packing and stochastic rounding.

Q-GaLore (Zhang et al. 2024, arXiv:2407.08296), Sec. 3.2-3.3: projection matrices are stored
in INT4 and projected weights in INT8, both quantized group-wise (group 256 over the flattened
matrix) with min-max scales and zero-points; weights are re-quantized after every update with
stochastic rounding SR(x) = floor(x) + [u < x - floor(x)], u ~ U[0, 1), so the expected
dequantized weight equals the exact float update (Sec. 3.3, Eq. 3).

The zero-point. With ``levels = 2**bits - 1`` and ``scale = (max - min) / levels`` a group is
stored as ``q = round(x / scale + zero)`` and read back as ``scale * (q - zero)``. The correct
zero-point is ``zero = -min / scale`` (any real number), which maps [min, max] onto [0, levels]
exactly. The official code rounds it and clamps it to [0, levels]; for a group whose values
share one sign that moves the grid away from the data and everything is clipped to one end
(e.g. [1, 2, 1.5, 1.25] -> [1, 1, 1, 1] in INT4). We store the exact zero-point by default
(error <= scale / 2 per element); ``official_zero_point_clamp=True`` reproduces the official
behaviour for parity.

INT4 codes are packed two per byte (even index in the low nibble), so a projector costs half a
byte per element; the official code keeps one INT4 code per uint8.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

DEFAULT_GROUP_SIZE = 256


@dataclasses.dataclass(frozen=True)
class QTensor:
  """A group-wise quantized array: ``dequantize(q) ~= x`` with ``x.shape == q.shape``.

  ``data`` holds the unsigned codes (uint8; two INT4 codes per byte when ``bits == 4``) of the
  flattened array padded to a whole number of groups; ``scale`` and ``zero`` have one entry per
  group. ``shape``, ``bits`` and ``group_size`` are static pytree metadata.
  """
  data: jax.Array
  scale: jax.Array
  zero: jax.Array
  shape: tuple[int, ...]
  bits: int
  group_size: int

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)


jax.tree_util.register_dataclass(QTensor, data_fields=["data", "scale", "zero"],
                                 meta_fields=["shape", "bits", "group_size"])


def is_qtensor(x: Any) -> bool:
  return isinstance(x, QTensor)


def stochastic_round(x: jax.Array, key: jax.Array) -> jax.Array:
  """SR(x) = floor(x) + [u < x - floor(x)], u ~ U[0, 1): unbiased, E[SR(x)] = x."""
  floor = jnp.floor(x)
  u = jax.random.uniform(key, x.shape, dtype=x.dtype)
  return floor + (u < x - floor).astype(x.dtype)


def pack_int4(codes: jax.Array) -> jax.Array:
  """Packs uint8 codes in [0, 15] (even length) two per byte, even index in the low nibble."""
  pairs = codes.astype(jnp.uint8).reshape(-1, 2)
  return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: jax.Array) -> jax.Array:
  """Inverse of :func:`pack_int4`."""
  low = packed & jnp.uint8(0x0F)
  high = packed >> 4
  return jnp.stack([low, high], axis=-1).reshape(-1)


def _grouped(x: jax.Array, group_size: int) -> jax.Array:
  flat = x.reshape(-1).astype(jnp.float32)
  pad = (-flat.size) % group_size
  # edge padding leaves the last group's min and max unchanged
  flat = jnp.pad(flat, (0, pad), mode="edge") if pad else flat
  return flat.reshape(-1, group_size)


def quantize(x: jax.Array, bits: int = 8, group_size: int = DEFAULT_GROUP_SIZE, *,
             key: jax.Array | None = None,
             official_zero_point_clamp: bool = False) -> QTensor:
  """Group-wise asymmetric min-max quantization of ``x`` to ``bits`` (4 or 8).

  Rounds to nearest, or stochastically when ``key`` is given (Q-GaLore's weight update).
  ``official_zero_point_clamp`` rounds the zero-point and clamps it to [0, 2**bits - 1] and
  floors the range at 1e-5, as the official Q-GaLore code does (see the module docstring).
  """
  if bits not in (4, 8):
    raise ValueError(f"bits must be 4 or 8, got {bits}")
  if group_size < 2 or group_size % 2:
    raise ValueError(f"group_size must be an even number >= 2, got {group_size}")
  levels = 2 ** bits - 1
  groups = _grouped(x, group_size)
  lo = groups.min(axis=1, keepdims=True)
  hi = groups.max(axis=1, keepdims=True)
  if official_zero_point_clamp:
    scale = jnp.maximum(hi - lo, 1e-5) / levels
    zero = jnp.clip(-jnp.round(lo / scale), 0, levels)
    scaled = groups / scale
    offset = zero
  else:
    scale = (hi - lo) / levels
    # a constant group (or one whose step would underflow) gets scale 1: every code is 0 and
    # the zero-point alone stores the value
    scale = jnp.where(scale >= jnp.finfo(jnp.float32).tiny, scale, 1.0)
    zero = -lo / scale
    scaled = (groups - lo) / scale
    offset = 0.0
  rounded = jnp.round(scaled) if key is None else stochastic_round(scaled, key)
  codes = jnp.clip(rounded + offset, 0, levels).astype(jnp.uint8).reshape(-1)
  data = pack_int4(codes) if bits == 4 else codes
  return QTensor(data, scale[:, 0], zero[:, 0], tuple(int(d) for d in x.shape), bits,
                 group_size)


def quantized_zeros(shape: tuple[int, ...], bits: int = 8,
                    group_size: int = DEFAULT_GROUP_SIZE, *,
                    official_zero_point_clamp: bool = False) -> QTensor:
  """``quantize(jnp.zeros(shape), ...)`` built from one quantized group: every group of
  zeros quantizes alike, while XLA would fold the quantization of the whole constant array at
  compile time, element by element (seconds per optimizer state it initializes)."""
  one = quantize(jnp.zeros(group_size), bits, group_size,
                 official_zero_point_clamp=official_zero_point_clamp)
  groups = -(-math.prod(shape) // group_size)
  return QTensor(jnp.tile(one.data, groups), jnp.broadcast_to(one.scale, (groups,)),
                 jnp.broadcast_to(one.zero, (groups,)), tuple(int(d) for d in shape), bits,
                 group_size)


def dequantize(q: QTensor, dtype: Any = jnp.float32) -> jax.Array:
  """``scale * (code - zero)`` per group, reshaped to ``q.shape``."""
  codes = unpack_int4(q.data) if q.bits == 4 else q.data
  groups = codes.reshape(-1, q.group_size).astype(jnp.float32)
  values = (groups - q.zero[:, None]) * q.scale[:, None]
  return values.reshape(-1)[:q.size].reshape(q.shape).astype(dtype)


def quantize_params(params: Any, predicate: Callable[[Any, jax.Array], bool] | Any = None, *,
                    bits: int = 8, group_size: int = DEFAULT_GROUP_SIZE,
                    official_zero_point_clamp: bool = False) -> Any:
  """Replaces selected leaves of ``params`` by :class:`QTensor` (INT8 weights by default).

  ``predicate`` is either a pytree of booleans matching ``params`` (e.g. from
  :func:`qgalore_jax.projected_mask`) or ``predicate(path, leaf) -> bool``; by default every
  2-D leaf is quantized.
  """
  if predicate is None:
    predicate = lambda path, leaf: leaf.ndim == 2
  if callable(predicate):
    mask = jax.tree_util.tree_map_with_path(predicate, params)
  else:
    mask = predicate
  return jax.tree.map(
      lambda leaf, selected: quantize(leaf, bits, group_size,
                                      official_zero_point_clamp=official_zero_point_clamp)
      if selected else leaf, params, mask)


def dequantize_params(params: Any, dtype: Any = jnp.float32) -> Any:
  """Every :class:`QTensor` leaf of ``params`` as a float array; other leaves unchanged."""
  return jax.tree.map(lambda x: dequantize(x, dtype) if is_qtensor(x) else x, params,
                      is_leaf=is_qtensor)


def apply_updates_sr(params: Any, updates: Any, key: jax.Array, *,
                     official_zero_point_clamp: bool = False) -> Any:
  """``optax.apply_updates`` for params that may hold :class:`QTensor` leaves.

  A quantized leaf is dequantized, the (float) update added, and the result re-quantized with
  stochastic rounding and fresh group scales (Q-GaLore Sec. 3.3): no float master copy is
  kept. Each quantized leaf draws from its own ``fold_in(key, index)`` stream, so a step is
  deterministic given ``key``. Float leaves are updated as by ``optax.apply_updates``.
  """
  leaves, treedef = jax.tree.flatten(params, is_leaf=is_qtensor)
  update_leaves = treedef.flatten_up_to(updates)
  new_leaves = []
  for index, (param, update) in enumerate(zip(leaves, update_leaves)):
    if is_qtensor(param):
      value = dequantize(param) + update.astype(jnp.float32)
      new_leaves.append(quantize(value, param.bits, param.group_size,
                                 key=jax.random.fold_in(key, index),
                                 official_zero_point_clamp=official_zero_point_clamp))
    else:
      new_leaves.append(jnp.asarray(param + update).astype(jnp.asarray(param).dtype))
  return treedef.unflatten(new_leaves)
