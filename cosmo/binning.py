"""Redshift subsamples: high-redshift cuts z > z_min and equal-count bins (arXiv 2405.19953).

A subsample is a 0/1 weight vector over the full catalogue (so one compiled profile serves
all of them) with its effective redshift: the mean and the median z of its members.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Subsample(NamedTuple):
  label: str
  weights: np.ndarray  # (N,) 0/1
  n: int
  z_eff_mean: float
  z_eff_median: float


def _subsample(label: str, z: np.ndarray, mask: np.ndarray) -> Subsample:
  n = int(mask.sum())
  if n < 4:
    raise ValueError(f"subsample {label} has {n} objects; at least 4 are needed to fit")
  return Subsample(label, mask.astype(np.float64), n, float(z[mask].mean()),
                   float(np.median(z[mask])))


def redshift_cuts(z: np.ndarray, zmins, zmax: float | None = None) -> list[Subsample]:
  """One subsample z_min < z (<= zmax) for each z_min."""
  z = np.asarray(z)
  upper = np.inf if zmax is None else zmax
  return [_subsample(f"z>{zmin:g}" + ("" if zmax is None else f",z<={zmax:g}"), z,
                     (z > zmin) & (z <= upper)) for zmin in zmins]


def equal_count_bins(z: np.ndarray, n_bins: int, zmin: float = 0.0,
                     zmax: float | None = None) -> list[Subsample]:
  """``n_bins`` contiguous redshift bins with (as nearly as possible) equal counts."""
  if n_bins < 1:
    raise ValueError(f"need at least one bin, got {n_bins}")
  z = np.asarray(z)
  upper = np.inf if zmax is None else zmax
  inside = np.flatnonzero((z > zmin) & (z <= upper))
  ordered = inside[np.argsort(z[inside], kind="stable")]
  subsamples = []
  for k, members in enumerate(np.array_split(ordered, n_bins)):
    mask = np.zeros(z.shape, bool)
    mask[members] = True
    lo, hi = (z[members].min(), z[members].max()) if len(members) else (np.nan, np.nan)
    subsamples.append(_subsample(f"bin{k + 1}:{lo:.3g}-{hi:.3g}", z, mask))
  return subsamples


def parse_bins(spec: str) -> int:
  """``equal:N`` -> N."""
  kind, _, count = spec.partition(":")
  if kind != "equal" or not count.isdigit() or int(count) < 1:
    raise ValueError(f"--bins {spec!r}: expected equal:N with N >= 1")
  return int(count)
