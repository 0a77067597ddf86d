"""Volumes for segmentation: NIfTI I/O, normalization, resampling, patch sampling, augmentation.

Arrays are channels-last in (z, y, x) order, i.e. ``(D, H, W, C)`` with the slice axis as depth
(NIfTI stores (x, y, z); we transpose on load and back on save, keeping the affine).
Preprocessing follows nnU-Net v1: CT is clipped to the 0.5/99.5 percentiles of the foreground
intensities and z-scored with their mean and std; MR is z-scored per volume. Patches are drawn
with foreground oversampling (a third of them centred on a random foreground voxel of a random
class) and augmented with flips, an in-plane rotation, scaling and intensity changes.

Data: the real TotalSegmentator CT/MR examples in ``../shared/data/medical/totalsegmentator/``;
the embedded default is the MNI152 template of the ``nilearn`` wheel with its grey/white-matter
maps thresholded into a 3-class tissue segmentation.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from jaxrepro.data import DataSource, resolve_data

TOTALSEG = "medical/totalsegmentator"
CT_IMAGE, CT_LABEL = "example_ct_sm.nii.gz", "example_seg.nii.gz"
MR_IMAGE, MR_LABEL = "example_mr_sm.nii.gz", "example_seg_mr.nii.gz"


@dataclasses.dataclass
class Case:
  """One preprocessed volume: image (D, H, W, C) float32, label (D, H, W) int32 or None."""
  image: np.ndarray
  label: np.ndarray | None
  spacing: tuple[float, float, float]
  affine: np.ndarray
  name: str = ""
  label_values: tuple[int, ...] = ()   # original label value of each class index 1..K-1


def _nib():
  import nibabel  # the medical extra
  return nibabel


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
  """Reads a 3D NIfTI as ``(array (z, y, x), affine, spacing (z, y, x))``."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"no such NIfTI file: {path}")
  try:
    img = _nib().load(str(path))
    data = np.asanyarray(img.dataobj)
  except Exception as e:  # nibabel raises several types for corrupt files
    raise ValueError(f"{path}: not a readable NIfTI file ({e})") from e
  if data.ndim == 4 and data.shape[3] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
  zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
  return np.transpose(data, (2, 1, 0)), np.asarray(img.affine, np.float64), zooms[::-1]


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
  """Writes a (z, y, x) array with ``affine`` (transposed back to NIfTI's (x, y, z))."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  _nib().save(_nib().Nifti1Image(np.transpose(np.asarray(array), (2, 1, 0)), affine), str(path))
  return path


def normalize(image: np.ndarray, modality: str, foreground: np.ndarray | None = None
              ) -> np.ndarray:
  """nnU-Net normalization: ``"CT"`` clip + z-score over the foreground, ``"MR"`` z-score."""
  image = image.astype(np.float32)
  if modality == "CT":
    values = image[foreground] if foreground is not None and foreground.any() else image.ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(image, lo, hi)
    inside = np.clip(values, lo, hi)
    return (clipped - inside.mean()) / max(float(inside.std()), 1e-8)
  if modality == "MR":
    return (image - image.mean()) / max(float(image.std()), 1e-8)
  raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}")


def resample(volume: np.ndarray, spacing: Sequence[float], target: Sequence[float], *,
             order: int) -> np.ndarray:
  """Resamples to ``target`` spacing (order 3 for images, 0 for labels, as nnU-Net)."""
  factors = [s / t for s, t in zip(spacing, target)]
  if np.allclose(factors, 1):
    return volume
  return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)


def most_frequent_labels(label: np.ndarray, num_classes: int) -> tuple[int, ...]:
  """The ``num_classes - 1`` most frequent non-zero label values (ties: smaller value)."""
  values, counts = np.unique(label[label > 0], return_counts=True)
  order = np.lexsort((values, -counts))
  return tuple(int(v) for v in values[order][:num_classes - 1])


def remap_labels(label: np.ndarray, keep: Sequence[int]) -> np.ndarray:
  """Class ``i + 1`` for ``keep[i]``, background for every other value."""
  out = np.zeros(label.shape, np.int32)
  for i, value in enumerate(keep):
    out[label == value] = i + 1
  return out


def load_case(image_path: str | os.PathLike, label_path: str | os.PathLike | None = None, *,
              modality: str = "CT", num_classes: int | None = None,
              label_values: Sequence[int] | None = None,
              target_spacing: Sequence[float] | None = None) -> Case:
  """Loads, checks, resamples and normalizes an image (and its label map).

  Label values become classes 1..K-1: ``label_values`` in that order, else the ``num_classes - 1``
  most frequent values, else every value present.

  Raises ``ValueError`` when image and label disagree in shape or affine, or when the label map
  is not integer-valued; ``FileNotFoundError`` when a file is missing.
  """
  image, affine, spacing = load_nifti(image_path)
  label = None
  keep: tuple[int, ...] = ()
  if label_path is not None:
    label_raw, label_affine, _ = load_nifti(label_path)
    if label_raw.shape != image.shape:
      raise ValueError(f"image {image_path} has shape {image.shape[::-1]} but label "
                       f"{label_path} has {label_raw.shape[::-1]} (x, y, z)")
    if not np.allclose(label_affine, affine, atol=1e-3):
      raise ValueError(f"image {image_path} and label {label_path} have different affines")
    if not np.all(np.equal(np.mod(label_raw, 1), 0)) or label_raw.min() < 0:
      raise ValueError(f"label {label_path} must hold non-negative integers")
    label_raw = label_raw.astype(np.int64)
    if label_values:
      keep = tuple(label_values)
    elif num_classes:
      keep = most_frequent_labels(label_raw, num_classes)
    else:
      keep = tuple(int(v) for v in np.unique(label_raw) if v > 0)
    label = remap_labels(label_raw, keep)
  if target_spacing is not None:
    image = resample(image, spacing, target_spacing, order=3)
    if label is not None:
      label = resample(label, spacing, target_spacing, order=0)
    affine = affine @ np.diag([t / s for s, t in zip(spacing[::-1], target_spacing[::-1])] + [1])
    spacing = tuple(target_spacing)
  foreground = label > 0 if label is not None else None
  image = normalize(image, modality, foreground)
  return Case(image[..., None], label, tuple(spacing), affine, Path(image_path).name, keep)


def mni_tissue_case() -> Case:
  """Embedded default: the MNI152 2 mm template (real MRI) with a 3-class tissue labelling
  (0 background/CSF, 1 grey matter, 2 white matter: the larger of the two maps above 0.5)."""
  from nilearn import datasets  # the template ships inside the wheel, no download
  t1 = datasets.load_mni152_template(resolution=2)
  gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).get_fdata(), np.float32)
  wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata(), np.float32)
  label = np.where((gm > 0.5) & (gm >= wm), 1, np.where(wm > 0.5, 2, 0)).astype(np.int32)
  image = np.asarray(t1.get_fdata(), np.float32)
  zooms = tuple(float(z) for z in t1.header.get_zooms()[:3])
  to_zyx = lambda a: np.transpose(a, (2, 1, 0))
  return Case(normalize(to_zyx(image), "MR")[..., None], to_zyx(label), zooms[::-1],
              np.asarray(t1.affine), "embedded:mni152-tissue", (1, 2))


def resolve_case(explicit: str | None, *, modality: str = "CT", num_classes: int = 16
                 ) -> tuple[Case, DataSource]:
  """The real CT (or ``--data``: a folder with the TotalSegmentator examples, or an image whose
  label sits beside it), falling back to the embedded MNI tissue volume."""
  if explicit == "embedded":
    return mni_tissue_case(), DataSource("embedded", None, "mni152-tissue")
  source = resolve_data(TOTALSEG, explicit=explicit, embedded="mni152-tissue")
  if source.origin == "embedded":
    return mni_tissue_case(), source
  folder = source.path
  image_name, label_name = (CT_IMAGE, CT_LABEL) if modality == "CT" else (MR_IMAGE, MR_LABEL)
  if folder.is_file():
    raise ValueError(f"--data must be a folder holding {image_name} and {label_name}")
  case = load_case(folder / image_name, folder / label_name, modality=modality,
                   num_classes=num_classes)
  return case, source


# ---- patches ---------------------------------------------------------------------------------

def _pad_to(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  pad = [(0, max(t - s, 0)) for s, t in zip(a.shape[:3], shape)] + [(0, 0)] * (a.ndim - 3)
  return np.pad(a, pad)


def sample_patch(rng: np.random.Generator, case: Case, patch: Sequence[int], *,
                 foreground: bool) -> tuple[np.ndarray, np.ndarray]:
  """One (image, label) patch; ``foreground`` centres it on a voxel of a random present class."""
  image, label = _pad_to(case.image, patch), _pad_to(case.label, patch)
  size = image.shape[:3]
  hi = [s - p for s, p in zip(size, patch)]
  start = [int(rng.integers(0, h + 1)) for h in hi]
  classes = np.unique(label[label > 0])
  if foreground and classes.size:
    voxels = np.argwhere(label == rng.choice(classes))
    centre = voxels[rng.integers(len(voxels))]
    start = [int(np.clip(c - p // 2, 0, h)) for c, p, h in zip(centre, patch, hi)]
  sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
  return image[sl], label[sl]


def augment(rng: np.random.Generator, image: np.ndarray, label: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """nnU-Net-like: rotation in the (H, W) plane and scaling (p 0.2 each), brightness and
  contrast (p 0.15), Gaussian noise (p 0.1), mirroring of each axis (p 0.5)."""
  angle = rng.uniform(-np.pi / 12, np.pi / 12) if rng.random() < 0.2 else 0.0
  scale = rng.uniform(0.85, 1.25) if rng.random() < 0.2 else 1.0
  if angle or scale != 1.0:
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.asarray([[1, 0, 0], [0, c, -s], [0, s, c]])
    centre = (np.asarray(label.shape) - 1) / 2
    offset = centre - matrix @ centre
    image = np.stack([ndimage.affine_transform(image[..., k], matrix, offset, order=1)
                      for k in range(image.shape[-1])], axis=-1)
    label = ndimage.affine_transform(label, matrix, offset, order=0)
  if rng.random() < 0.15:
    image = image * rng.uniform(0.75, 1.25)
  if rng.random() < 0.15:
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.75, 1.25) + mean
  if rng.random() < 0.1:
    image = image + rng.normal(0, np.sqrt(rng.uniform(0, 0.1)), image.shape).astype(np.float32)
  for axis in range(3):
    if rng.random() < 0.5:
      image, label = np.flip(image, axis), np.flip(label, axis)
  return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.int32)


def sample_batch(rng: np.random.Generator, cases: Sequence[Case], patch: Sequence[int],
                 batch_size: int, *, foreground_fraction: float = 0.33, augmentation: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
  """A batch like nnU-Net's loader: the last ``round(0.33 B)`` (at least one) patches are
  foreground-centred."""
  n_fg = max(1, round(foreground_fraction * batch_size)) if foreground_fraction > 0 else 0
  images, labels = [], []
  for b in range(batch_size):
    case = cases[int(rng.integers(len(cases)))]
    x, y = sample_patch(rng, case, patch, foreground=b >= batch_size - n_fg)
    if augmentation:
      x, y = augment(rng, x, y)
    images.append(x)
    labels.append(y)
  return np.stack(images), np.stack(labels)
