"""Catalogues of standardizable candles: loading, validation and subsampling.

Every probe is stored in one shape, a :class:`Catalogue` of arrays: redshift ``z``, the
observable ``y`` the relation predicts with error ``sigma_y``, and the observable ``x`` the
relation is calibrated on with error ``sigma_x`` (zero where there is none):

- QSO (Lusso et al. 2020, A&A 642, A150): y = log10 F_X, x = log10 F_UV (erg/s/cm^2/Hz).
- GRB (Konus-Wind, Tsvetkova et al. 2017/2021; or Wang et al. 2022): y = log10 E_p,i (keV, rest
  frame), x = log10 S_bolo (erg/cm^2).
- SNe (Pantheon+, Brout et al. 2022): y = m_B corrected, x = 0. Only diagonal errors: the
  covariance matrix is not available here, so Pantheon+ is a cross-check, not a precision fit.

Loaders check every line: missing columns, non-numeric values and negative redshifts raise
``ValueError`` naming the file and line.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

PROBES = ("qso", "grb", "sne")

# Paths inside the data root (jaxrepro.data.resolve_data) of each probe's default catalogue.
DEFAULT_FILES = {
    "qso": "cosmo/lusso2020/lusso2020_table3.txt",
    "grb": "cosmo/grb/konus_wind/kw_merged_amati_ready.csv",
    "sne": "cosmo/pantheonplus/Pantheon+SH0ES_distances.txt",
}

_LN10 = math.log(10.0)
# Pantheon+ cosmology cut (Brout et al. 2022, Sec. 2): below it peculiar velocities dominate.
SNE_MIN_REDSHIFT = 0.01


class Catalogue(NamedTuple):
  """One probe's data as equal-length float arrays (see the module docstring)."""
  z: np.ndarray
  y: np.ndarray
  sigma_y: np.ndarray
  x: np.ndarray
  sigma_x: np.ndarray

  def select(self, mask: np.ndarray) -> "Catalogue":
    return Catalogue(*(np.asarray(a)[mask] for a in self))

  @property
  def size(self) -> int:
    """Number of objects (``len`` of a NamedTuple counts its fields)."""
    return int(np.shape(self.z)[-1])


def _number(text: str, column: str, where: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"{where}: column {column!r} is not a number: {text!r}") from None
  if not math.isfinite(value):
    raise ValueError(f"{where}: column {column!r} is not finite: {text!r}")
  return value


def read_table(path: str | Path, columns: Sequence[str], *, delimiter: str | None = None,
               may_be_empty: Sequence[str] = (), redshift: str = "z") -> dict[str, np.ndarray]:
  """Reads ``columns`` of a text table with a header line.

  ``delimiter=None`` splits on whitespace, otherwise the file is CSV. Rows whose
  ``may_be_empty`` columns are blank are dropped (no measurement); any other blank,
  non-numeric or non-finite value, a short row, or a missing column raises ``ValueError``
  naming the file and line. The ``redshift`` column must be non-negative.
  """
  path = Path(path)
  with path.open(newline="") as f:
    lines = f.read().splitlines()
  rows = (csv.reader(lines, delimiter=delimiter) if delimiter else
          (line.split() for line in lines))
  rows = [(number, row) for number, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
  if not rows:
    raise ValueError(f"{path}: empty file")
  header = [c.strip() for c in rows[0][1]]
  missing = [c for c in columns if c not in header]
  if missing:
    raise ValueError(f"{path}, line {rows[0][0]}: missing column(s) {missing}; header has {header}")
  index = {c: header.index(c) for c in columns}
  values = {c: [] for c in columns}
  for number, row in rows[1:]:
    where = f"{path}, line {number}"
    if len(row) < len(header):
      raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}")
    cells = {c: row[i].strip() for c, i in index.items()}
    if any(cells[c] == "" for c in may_be_empty):
      continue
    parsed = {}
    for c, text in cells.items():
      if text == "":
        raise ValueError(f"{where}: column {c!r} is empty")
      parsed[c] = _number(text, c, where)
    if redshift in parsed and parsed[redshift] < 0:
      raise ValueError(f"{where}: negative redshift {redshift} = {parsed[redshift]}")
    for c in columns:
      values[c].append(parsed[c])
  if not values[columns[0]]:
    raise ValueError(f"{path}: no data rows")
  return {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}


def _header(path: Path) -> list[str]:
  with path.open(newline="") as f:
    for line in f:
      if line.strip():
        return [c.strip() for c in (line.split(",") if "," in line else line.split())]
  raise ValueError(f"{path}: empty file")


def load_lusso2020(path: str | Path) -> Catalogue:
  """Lusso et al. 2020 Table 3 (VizieR J/A+A/642/A150): 2,421 quasars."""
  t = read_table(path, ["z", "logFUV", "e_logFUV", "logFX", "e_logFX"])
  return Catalogue(t["z"], t["logFX"], t["e_logFX"], t["logFUV"], t["e_logFUV"])


def _log_error(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """Symmetrized 1-sigma error of log10(value) from asymmetric linear errors."""
  return 0.5 * (low + high) / (value * _LN10)


def load_konus_wind(path: str | Path) -> Catalogue:
  """Konus-Wind GRBs with known z (kw_merged_amati_ready.csv, see its README).

  E_p,i = (1 + z) E_p,obs; S_bolo is the rest-frame 1 keV-10 MeV fluence. The one burst
  with a power-law spectrum has no E_p and is dropped (316 of 317 bursts remain).
  """
  cols = ["z", "Ep_obs", "Ep_obs_errlo", "Ep_obs_errhi", "Sbolo_derived",
          "Sbolo_derived_errlo", "Sbolo_derived_errhi"]
  t = read_table(path, cols, delimiter=",", may_be_empty=["Ep_obs"])
  y = np.log10((1.0 + t["z"]) * t["Ep_obs"])
  sy = _log_error(t["Ep_obs"], t["Ep_obs_errlo"], t["Ep_obs_errhi"])
  x = np.log10(t["Sbolo_derived"])
  sx = _log_error(t["Sbolo_derived"], t["Sbolo_derived_errlo"], t["Sbolo_derived_errhi"])
  return Catalogue(t["z"], y, sy, x, sx)


def load_wang2022(path: str | Path) -> Catalogue:
  """Wang et al. 2022's 221 long GRBs (wang2022_221grb_with_derived_Sbolo.csv).

  Caveat (its README): some E_iso values were computed by the original compilations with
  other fiducial cosmologies, so the derived S_bolo is only approximate.
  """
  cols = ["z", "Ep_rest_keV", "err_Ep_rest_keV", "Sbolo_derived_erg_cm2",
          "err_Sbolo_derived_erg_cm2"]
  t = read_table(path, cols, delimiter=",")
  y = np.log10(t["Ep_rest_keV"])
  sy = t["err_Ep_rest_keV"] / (t["Ep_rest_keV"] * _LN10)
  x = np.log10(t["Sbolo_derived_erg_cm2"])
  sx = t["err_Sbolo_derived_erg_cm2"] / (t["Sbolo_derived_erg_cm2"] * _LN10)
  return Catalogue(t["z"], y, sy, x, sx)


def load_pantheonplus(path: str | Path) -> Catalogue:
  """Pantheon+ (Brout et al. 2022): zHD, m_b_corr with diagonal errors only.

  Cepheid calibrators and z < 0.01 are dropped (the usual Hubble-flow sample).
  """
  t = read_table(path, ["zHD", "m_b_corr", "m_b_corr_err_DIAG", "IS_CALIBRATOR"], redshift="zHD")
  keep = (t["zHD"] > SNE_MIN_REDSHIFT) & (t["IS_CALIBRATOR"] == 0)
  zeros = np.zeros(int(keep.sum()))
  return Catalogue(t["zHD"][keep], t["m_b_corr"][keep], t["m_b_corr_err_DIAG"][keep], zeros,
                   zeros.copy())


# Header signatures of the supported formats: (probe, loader, what it is next to the paper's data).
_PAPER = "arXiv 2405.19953"
_FORMATS = (
    ({"logFUV", "logFX", "e_logFX"}, "qso", load_lusso2020,
     f"Lusso et al. 2020 quasars (2,421): the sample of {_PAPER} (7.9 sigma with Delta chi^2)"),
    ({"Ep_obs", "Sbolo_derived"}, "grb", load_konus_wind,
     "Konus-Wind GRBs with z and E_p (Tsvetkova et al. 2017, 2021; 316 bursts, one "
     f"instrument). NOT {_PAPER}'s A118 sample (Khadka et al. 2021), which is absent from "
     "the shared data (see its grb/README.md): the paper's 3.9 sigma is for A118 and is not "
     "expected here; Konus-Wind alone barely constrains Omega_m (its full-sample Delta chi^2 "
     "= 1 interval spans ~0.8 to the grid's edge)"),
    ({"Ep_rest_keV", "Sbolo_derived_erg_cm2"}, "grb", load_wang2022,
     f"Wang et al. 2022 A221-like GRBs (S_bolo re-derived, approximate); not {_PAPER}'s A118"),
    ({"zHD", "m_b_corr"}, "sne", load_pantheonplus,
     "Pantheon+ (Brout et al. 2022) with diagonal errors only: a low-z cross-check"),
)


def catalogue_note(path: str | Path) -> str:
  """Which catalogue ``path`` holds and how it compares with the paper's data."""
  header = set(_header(Path(path)))
  for signature, _, _, note in _FORMATS:
    if signature <= header:
      return note
  raise ValueError(f"{path}, line 1: unrecognised catalogue header {sorted(header)}")


def load_catalogue(path: str | Path) -> tuple[str, Catalogue]:
  """Loads any supported catalogue, recognised by its header; returns (probe, catalogue)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: not a file")
  header = set(_header(path))
  for signature, probe, loader, _ in _FORMATS:
    if signature <= header:
      return probe, loader(path)
  raise ValueError(f"{path}, line 1: unrecognised catalogue header {sorted(header)}; expected "
                   "Lusso 2020 (logFUV, logFX, ...), Konus-Wind (Ep_obs, Sbolo_derived, ...), "
                   "Wang 2022 (Ep_rest_keV, ...) or Pantheon+ (zHD, m_b_corr, ...) columns")
