"""Restricted depth shift (E2ENet, Wu et al. 2024, arXiv:2312.04727, Sec. 3.3).

Channel groups are shifted along the depth axis before a (1, 3, 3) conv, so a 2D kernel mixes
information across slices at no parameter cost. As in the official ``torch_shift``, channels are
split like ``torch.chunk``: ``ceil(C / n)`` channels per group, so there may be fewer than ``n``
groups (C = 1 gives one group, shifted by the first shift), and vacated slices are zero-filled.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

# The official code shifts 5 groups by {-2, -1, 0, +1, +2}; the paper's text describes {-1, 0, +1}.
OFFICIAL_SHIFTS = (-2, -1, 0, 1, 2)


def channel_groups(channels: int, n_groups: int) -> list[tuple[int, int]]:
  """``torch.chunk`` boundaries: ``[(start, stop), ...]`` with ``ceil(C/n)`` channels each."""
  size = math.ceil(channels / n_groups)
  return [(start, min(start + size, channels)) for start in range(0, channels, size)]


def shift_along(x: jax.Array, shift: int, axis: int) -> jax.Array:
  """``out[d] = x[d - shift]`` along ``axis``, zero where ``d - shift`` falls outside."""
  if shift == 0:
    return x
  size = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (max(shift, 0), max(-shift, 0))
  padded = jnp.pad(x, pad)
  start = max(-shift, 0)
  return jax.lax.slice_in_dim(padded, start, start + size, axis=axis)


def depth_shift(x: jax.Array, shifts: Sequence[int] = OFFICIAL_SHIFTS, *, axis: int = 1
                ) -> jax.Array:
  """Shifts channel groups of a channels-last volume ``(B, D, H, W, C)`` along ``axis``."""
  if not shifts:
    return x
  groups = channel_groups(x.shape[-1], len(shifts))
  parts = [shift_along(x[..., a:b], s, axis) for (a, b), s in zip(groups, shifts)]
  return jnp.concatenate(parts, axis=-1)
