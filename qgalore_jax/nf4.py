"""4-bit NormalFloat (NF4) storage for frozen weights, as in QLoRA.

QLoRA (Dettmers et al. 2023, arXiv:2305.14314, Sec. 3 "4-bit NormalFloat Quantization"):
weights are split into blocks of 64 along the flattened array, each block is scaled by its
absolute maximum into [-1, 1] and every element is stored as the index of the nearest of 16
levels, the quantiles of a standard normal normalized to [-1, 1] with an exact zero
(bitsandbytes' ``NF4`` table below). Two codes are packed per byte, so a weight costs half a
byte plus one float32 absmax per block (0.5 bit per weight). The paper's double quantization
of the absmax constants (another 0.37 bit saved) is not applied.

Only the storage is here: :mod:`qgalore_jax.lora` dequantizes the frozen base kernel on the fly
in the forward pass.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from qgalore_jax.quantization import pack_int4, unpack_int4

# bitsandbytes' NF4 levels (functional.py, ``get_4bit_type("nf4")``), ascending, index 7 == 0.
NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
DEFAULT_BLOCK_SIZE = 64  # QLoRA's block size for the weights


@dataclasses.dataclass(frozen=True)
class NF4Tensor:
  """NF4 codes (two per uint8, even index in the low nibble) of the flattened array padded to
  whole blocks, with one float32 absmax per block; ``shape``/``block_size`` are static."""
  data: jax.Array
  absmax: jax.Array
  shape: tuple[int, ...]
  block_size: int

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)


jax.tree_util.register_dataclass(NF4Tensor, data_fields=["data", "absmax"],
                                 meta_fields=["shape", "block_size"])


def quantize_nf4(x: jax.Array, block_size: int = DEFAULT_BLOCK_SIZE) -> NF4Tensor:
  """Blockwise absmax scaling and nearest-level rounding to NF4 (QLoRA Eq. 3-4)."""
  if block_size < 2 or block_size % 2:
    raise ValueError(f"block_size must be an even number >= 2, got {block_size}")
  flat = x.astype(jnp.float32).reshape(-1)
  pad = (-flat.size) % block_size
  blocks = jnp.pad(flat, (0, pad)).reshape(-1, block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  # an all-zero block scales by 1 so that it stores the exact zero level
  normalized = blocks / jnp.where(absmax > 0, absmax, 1.0)[:, None]
  levels = jnp.asarray(NF4_LEVELS, jnp.float32)
  # nearest level = number of midpoints below the value (levels are sorted)
  midpoints = (levels[1:] + levels[:-1]) / 2
  codes = jnp.searchsorted(midpoints, normalized.reshape(-1), side="left")
  return NF4Tensor(pack_int4(codes), absmax, tuple(x.shape), block_size)


def dequantize_nf4(q: NF4Tensor, dtype=jnp.float32) -> jax.Array:
  """``absmax[block] * NF4_LEVELS[code]`` reshaped to the original shape."""
  levels = jnp.asarray(NF4_LEVELS, jnp.float32)[unpack_int4(q.data)].reshape(-1, q.block_size)
  values = (levels * q.absmax[:, None]).reshape(-1)[:q.size]
  return values.reshape(q.shape).astype(dtype)
