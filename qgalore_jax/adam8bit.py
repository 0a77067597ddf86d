"""Adam with blockwise 8-bit quantized moments (Dettmers et al. 2022, arXiv:2110.02861).

Q-GaLore (arXiv:2407.08296, Sec. 4.1) keeps its low-rank Adam states in bitsandbytes' 8-bit
blockwise AdamW. This is the same idea in JAX:

* each moment is flattened and split into blocks of ``block_size`` (256 by default, as in
  current bitsandbytes; 2048 is the older choice) elements; a block stores its absolute
  maximum in float32 and every element as one uint8 index into a 256-entry code book;
* the code book is the *dynamic* (tree) code of arXiv:2110.02861, Sec. 2.2: after the sign bit,
  the number of leading zero bits selects a decade 10^-e and the remaining bits a linear
  fraction in [0.1, 1], so relative precision is roughly constant over seven decades. The
  first moment uses the signed code, the second moment the unsigned one (no sign bit, one
  more fraction bit per decade);
* each step dequantizes, runs the float Adam update, and re-quantizes to the nearest code;
* leaves with fewer than ``min_8bit_size`` elements keep float32 moments, as bitsandbytes does
  (default 4096).

Memory per element: 2 bytes for both moments plus 8 bytes per block (two absmax values).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qgalore_jax.adam import EPS_PLACEMENTS, adam_direction

DEFAULT_BLOCK_SIZE = 256
DEFAULT_MIN_8BIT_SIZE = 4096


def dynamic_code(signed: bool) -> np.ndarray:
  """The 256 sorted values of the 8-bit dynamic tree code on [-1, 1] (or [0, 1]).

  Decade ``e`` (0..6) gets ``2**(fraction_bits - e)`` linear fractions (interval midpoints of
  [0.1, 1]) scaled by 10^-e; ``fraction_bits`` is 6 signed and 7 unsigned. 0 and 1 complete
  the 256 entries (1 so that each block's absmax element is stored exactly).
  """
  fraction_bits = 6 if signed else 7
  values = [0.0, 1.0]
  for e in range(7):
    n = 2 ** (fraction_bits - e)
    edges = np.linspace(0.1, 1.0, n + 1)
    mids = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (-e)
    values += list(mids)
    if signed:
      values += list(-mids)
  code = np.sort(np.asarray(values, dtype=np.float32))
  assert code.size == 256 and np.unique(code).size == 256
  return code


_SIGNED = dynamic_code(signed=True)
_UNSIGNED = dynamic_code(signed=False)


class QuantizedMoment(NamedTuple):
  """One moment in 8 bits: code indices (padded to whole blocks) and per-block absmax."""
  codes: jax.Array   # uint8, (num_blocks * block_size,)
  absmax: jax.Array  # float32, (num_blocks,)


def quantize_blockwise(x: jax.Array, code: np.ndarray, block_size: int) -> QuantizedMoment:
  """Nearest-code blockwise quantization of ``x`` (absmax-normalized per block)."""
  flat = x.reshape(-1).astype(jnp.float32)
  pad = (-flat.size) % block_size
  blocks = jnp.pad(flat, (0, pad)).reshape(-1, block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  normalized = blocks / jnp.where(absmax > 0, absmax, 1.0)[:, None]
  midpoints = jnp.asarray((code[1:] + code[:-1]) / 2)
  codes = jnp.searchsorted(midpoints, normalized.reshape(-1)).astype(jnp.uint8)
  return QuantizedMoment(codes, absmax)


def zero_moment(size: int, code: np.ndarray, block_size: int) -> QuantizedMoment:
  """``quantize_blockwise`` of ``size`` zeros, built from one quantized block: every block of
  zeros quantizes alike, while XLA would fold the quantization of the whole constant array at
  compile time, element by element (about 50 s per moment of a 32000 x 512 embedding on CPU)."""
  one = quantize_blockwise(jnp.zeros(block_size), code, block_size)
  num_blocks = -(-size // block_size)
  return QuantizedMoment(jnp.tile(one.codes, num_blocks),
                         jnp.broadcast_to(one.absmax, (num_blocks,)))


def dequantize_blockwise(q: QuantizedMoment, code: np.ndarray, shape: tuple[int, ...]
                         ) -> jax.Array:
  block_size = q.codes.size // q.absmax.size
  values = jnp.asarray(code)[q.codes].reshape(-1, block_size) * q.absmax[:, None]
  return values.reshape(-1)[:int(np.prod(shape))].reshape(shape)


class ScaleByAdam8bitState(NamedTuple):
  count: jax.Array  # int32 scalar
  mu: Any           # per leaf: QuantizedMoment, or a float32 array for small leaves
  nu: Any


def scale_by_adam_8bit(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *,
                       block_size: int = DEFAULT_BLOCK_SIZE,
                       min_8bit_size: int = DEFAULT_MIN_8BIT_SIZE,
                       eps_placement: str = "optax") -> optax.GradientTransformation:
  """Adam's scaling with 8-bit blockwise moments (see the module docstring).

  ``eps_placement`` is ``"optax"`` (``m_hat / (sqrt(v_hat) + eps)``, like
  ``optax.scale_by_adam``) or ``"official"`` (``bc * m / (sqrt(v) + eps)``, the
  transformers/GaLore form, see :func:`qgalore_jax.adam.adam_direction`).
  """
  if eps_placement not in EPS_PLACEMENTS:
    raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")
  if block_size < 1:
    raise ValueError(f"block_size must be positive, got {block_size}")

  def quantized(x):
    return x.size >= min_8bit_size

  def init_fn(params):
    def zeros(p, code):
      if quantized(p):
        return zero_moment(p.size, code, block_size)
      return jnp.zeros(p.shape, jnp.float32)
    mu = jax.tree.map(lambda p: zeros(p, _SIGNED), params)
    nu = jax.tree.map(lambda p: zeros(p, _UNSIGNED), params)
    return ScaleByAdam8bitState(jnp.zeros([], jnp.int32), mu, nu)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, mu, nu):
      g32 = g.astype(jnp.float32)
      is_q = isinstance(mu, QuantizedMoment)
      m = dequantize_blockwise(mu, _SIGNED, g.shape) if is_q else mu
      v = dequantize_blockwise(nu, _UNSIGNED, g.shape) if is_q else nu
      m = b1 * m + (1 - b1) * g32
      v = b2 * v + (1 - b2) * g32 * g32
      direction = adam_direction(m, v, count, b1, b2, eps, eps_placement).astype(g.dtype)
      if is_q:
        m = quantize_blockwise(m, _SIGNED, block_size)
        v = quantize_blockwise(v, _UNSIGNED, block_size)
      return direction, m, v

    leaves, treedef = jax.tree.flatten(updates)
    out = [leaf(g, m, v) for g, m, v in zip(leaves, treedef.flatten_up_to(state.mu),
                                             treedef.flatten_up_to(state.nu))]
    directions, mu, nu = ([treedef.unflatten(column) for column in zip(*out)] if out
                          else (updates, state.mu, state.nu))
    return directions, ScaleByAdam8bitState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adam_8bit(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0, **kwargs) -> optax.GradientTransformation:
  """AdamW with 8-bit blockwise moments: like ``optax.adamw`` (decoupled weight decay)."""
  return optax.chain(scale_by_adam_8bit(b1, b2, eps, **kwargs),
                     optax.add_decayed_weights(weight_decay),
                     optax.scale_by_learning_rate(learning_rate))
