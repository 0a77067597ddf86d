"""Locating data: ``--data PATH``, then ``$JAXREPRO_DATA``, then ``../shared/data``, then
an embedded default.

Every family resolves its inputs through :func:`resolve_data`, which always says which
source it used (``DataSource.describe()``; reports store it under ``"data"``). Real data
sets are read in place, never copied into the repository.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

DATA_ENV = "JAXREPRO_DATA"

# The checkout's root (for an editable install); ../shared/data sits beside it.
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where a data set came from.

  ``origin`` is one of ``"explicit"`` (``--data``), ``"env"`` (``$JAXREPRO_DATA``),
  ``"shared"`` (``../shared/data``) or ``"embedded"``; ``path`` is None only for an
  embedded default that has no file (e.g. a synthetic generator), named by ``name``.
  """
  origin: str
  path: Path | None
  name: str

  def describe(self) -> str:
    if self.origin == "embedded":
      return f"embedded:{self.name}"
    return str(self.path)


def shared_data_dir() -> Path:
  """The read-only shared data folder beside the checkout (may not exist)."""
  return REPO_ROOT.parent / "shared" / "data"


def resolve_data(relative: str, *, explicit: str | os.PathLike | None = None,
                 embedded: str | Callable[[], Path | None] | None = None,
                 env: dict[str, str] | None = None) -> DataSource:
  """Finds ``relative`` (a path inside the data root, e.g. ``"graphs/npz/cora.npz"``).

  Search order: ``explicit`` (must exist: a wrong ``--data`` is an error, not a silent
  fallback), ``$JAXREPRO_DATA/relative``, ``../shared/data/relative``, then ``embedded``:
  a name (no file) or a callable returning the embedded file's path. Raises
  ``FileNotFoundError`` listing the places tried when nothing is found.
  """
  env = os.environ if env is None else env
  tried = []
  if explicit is not None:
    path = Path(explicit).expanduser()
    if not path.exists():
      raise FileNotFoundError(f"--data {explicit}: no such file or directory")
    return DataSource("explicit", path.resolve(), path.name)
  if env.get(DATA_ENV):
    candidate = Path(env[DATA_ENV]).expanduser() / relative
    tried.append(str(candidate))
    if candidate.exists():
      return DataSource("env", candidate.resolve(), Path(relative).name)
  candidate = shared_data_dir() / relative
  tried.append(str(candidate))
  if candidate.exists():
    return DataSource("shared", candidate.resolve(), Path(relative).name)
  if embedded is not None:
    if callable(embedded):
      path = embedded()
      name = Path(path).name if path is not None else getattr(embedded, "__name__", "default")
      return DataSource("embedded", Path(path) if path is not None else None, name)
    return DataSource("embedded", None, embedded)
  raise FileNotFoundError(
      f"data {relative!r} not found; tried: {', '.join(tried)}. Pass --data PATH or set "
      f"${DATA_ENV}.")
