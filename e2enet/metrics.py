"""Segmentation metrics: Dice per class and the 95th-percentile Hausdorff distance (HD95).

HD95 follows medpy's ``hd95`` (the convention of the Medical Segmentation Decathlon and
nnU-Net's evaluators): surfaces are ``mask XOR erosion(mask)`` with a 6-connected structuring
element, distances come from ``scipy.ndimage.distance_transform_edt`` in physical units, and the
95th percentile is taken over both directed surface-distance sets together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def dice_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
  """Dice of classes 1..K-1; NaN where a class is absent from both (excluded from the mean)."""
  pred, ref = np.asarray(pred), np.asarray(ref)
  if pred.shape != ref.shape:
    raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
  scores = np.full(num_classes - 1, np.nan)
  for c in range(1, num_classes):
    p, r = pred == c, ref == c
    denom = p.sum() + r.sum()
    if denom:
      scores[c - 1] = 2.0 * np.logical_and(p, r).sum() / denom
  return scores


def mean_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> float:
  scores = dice_per_class(pred, ref, num_classes)
  return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def surface(mask: np.ndarray) -> np.ndarray:
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
  """Distances from each surface voxel of ``a`` to the nearest surface voxel of ``b``."""
  dt = ndimage.distance_transform_edt(~surface(b), sampling=spacing)
  return dt[surface(a)]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
  """95th-percentile symmetric surface distance; NaN when either mask is empty."""
  pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
  if pred.shape != ref.shape:
    raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
  if not pred.any() or not ref.any():
    return float("nan")
  spacing = (1.0,) * pred.ndim if spacing is None else tuple(spacing)
  d = np.concatenate([surface_distances(pred, ref, spacing), surface_distances(ref, pred, spacing)])
  return float(np.percentile(d, 95))


def hd95_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int,
                   spacing: Sequence[float] | None = None) -> np.ndarray:
  return np.asarray([hd95(pred == c, ref == c, spacing) for c in range(1, num_classes)])
