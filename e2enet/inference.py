"""Sliding-window inference as in nnU-Net v1 (``predict_3D`` with ``use_sliding_window=True``).

Windows of the patch size step by ``step * patch`` (default half a patch), their softmax outputs
are weighted by a Gaussian importance map (sigma = patch / 8, peak 1, zeros replaced by the
smallest non-zero value) and averaged; optional mirror test-time augmentation averages the
softmax over all flips of the chosen axes. Windows run in fixed-size batches through one jitted
function, so there is one compilation per volume shape class.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from jaxrepro.progress import progress


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
  """nnU-Net's ``_get_gaussian``: a Gaussian centred in the patch, max 1, no zeros."""
  impulse = np.zeros(patch, np.float64)
  impulse[tuple(p // 2 for p in patch)] = 1.0
  g = ndimage.gaussian_filter(impulse, [p * sigma_scale for p in patch], 0, mode="constant",
                              cval=0)
  g = (g / g.max()).astype(np.float32)
  g[g == 0] = g[g != 0].min()
  return g


def window_starts(image_size: Sequence[int], patch: Sequence[int], step: float = 0.5
                  ) -> list[list[int]]:
  """nnU-Net's ``_compute_steps_for_sliding_window``: evenly spread starts per axis."""
  if not 0 < step <= 1:
    raise ValueError(f"step must be in (0, 1], got {step}")
  starts = []
  for size, p in zip(image_size, patch):
    if size < p:
      raise ValueError(f"image size {size} is smaller than the patch {p} (pad first)")
    n = math.ceil((size - p) / (p * step)) + 1
    actual = (size - p) / (n - 1) if n > 1 else 0
    starts.append([int(round(actual * i)) for i in range(n)])
  return starts


def mirrored_softmax(apply_fn: Callable[[jax.Array], jax.Array],
                     mirror_axes: Sequence[int] = ()) -> Callable[[jax.Array], jax.Array]:
  """``x -> mean over flips of softmax(apply_fn(flip(x)))`` flipped back; axes are spatial 0..2."""
  flips = [c for r in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]

  def predict(x):
    total = 0.0
    for axes in flips:
      dims = tuple(1 + a for a in axes)
      logits = apply_fn(jnp.flip(x, dims) if dims else x)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      total = total + (jnp.flip(probs, dims) if dims else probs)
    return total / len(flips)
  return predict


def sliding_window_predict(predict_fn: Callable[[jax.Array], jax.Array], image: np.ndarray,
                           patch: Sequence[int], num_classes: int, *, step: float = 0.5,
                           batch_size: int = 2, gaussian: bool = True, quiet: bool | None = None
                           ) -> np.ndarray:
  """Class probabilities (D, H, W, K) of a channels-last volume (D, H, W, C).

  ``predict_fn`` maps a batch (B, *patch, C) to probabilities (B, *patch, K) (see
  :func:`mirrored_softmax`; jit it). Volumes smaller than the patch are zero-padded and cropped.
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 4:
    raise ValueError(f"expected a (D, H, W, C) volume, got shape {image.shape}")
  size = image.shape[:3]
  pad = [(0, max(p - s, 0)) for s, p in zip(size, patch)]
  padded = np.pad(image, pad + [(0, 0)])
  starts = list(itertools.product(*window_starts(padded.shape[:3], patch, step)))
  weight = gaussian_importance(patch) if gaussian else np.ones(patch, np.float32)
  acc = np.zeros(padded.shape[:3] + (num_classes,), np.float32)
  norm = np.zeros(padded.shape[:3], np.float32)
  slices = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in starts]
  for b in progress(range(0, len(slices), batch_size), desc="sliding window", quiet=quiet):
    batch = slices[b:b + batch_size]
    windows = np.stack([padded[s] for s in batch])
    if len(batch) < batch_size:  # fixed batch shape: one compilation
      windows = np.concatenate([windows, np.zeros((batch_size - len(batch),) + windows.shape[1:],
                                                  windows.dtype)])
    probs = np.asarray(predict_fn(jnp.asarray(windows)))
    for s, p in zip(batch, probs):
      acc[s] += p * weight[..., None]
      norm[s] += weight
  out = acc / norm[..., None]
  return out[:size[0], :size[1], :size[2]]


def full_resolution_predictor(graphdef, params, mirror_axes: Sequence[int] = ()
                              ) -> Callable[[jax.Array], jax.Array]:
  """A jitted ``windows -> probabilities`` for an NNX segmentation model (first head only)."""
  from flax import nnx

  def logits(x):
    return nnx.merge(graphdef, params)(x)[0]
  return jax.jit(mirrored_softmax(logits, mirror_axes))


def segment(graphdef, params, image: np.ndarray, patch: Sequence[int], num_classes: int, *,
            step: float = 0.5, mirror_axes: Sequence[int] = (), batch_size: int = 2,
            quiet: bool | None = None) -> np.ndarray:
  """Label map (D, H, W) of a (D, H, W, C) volume by Gaussian-weighted sliding windows."""
  predict = full_resolution_predictor(graphdef, params, mirror_axes)
  probs = sliding_window_predict(predict, image, patch, num_classes, step=step,
                                 batch_size=batch_size, quiet=quiet)
  return np.argmax(probs, axis=-1).astype(np.int32)
