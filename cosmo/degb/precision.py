"""float64 for the dEGB computations without switching it on for the whole process.

The flows span ~40 e-folds and |u| up to e^80, so every public entry point of ``cosmo.degb``
runs under ``jax.enable_x64(True)``; other families that share the process keep float32.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax

F = TypeVar("F", bound=Callable)


def float64(fn: F) -> F:
  """Runs ``fn`` with 64-bit JAX types enabled (a scoped context, not a global switch)."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.enable_x64(True):
      return fn(*args, **kwargs)
  return wrapped  # type: ignore[return-value]
