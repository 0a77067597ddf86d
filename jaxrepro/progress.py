"""Progress bars on stderr that stay quiet when nobody is watching.

A bar is shown only when stderr is a terminal and neither ``quiet=True`` nor the
``JAXREPRO_QUIET`` environment variable (set by the CLI's ``--quiet``) asks for silence,
so logs and CI output are not flooded with carriage returns.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

QUIET_ENV = "JAXREPRO_QUIET"


def is_quiet(quiet: bool | None = None) -> bool:
  """True when progress output should be suppressed."""
  if quiet is not None:
    return quiet
  if os.environ.get(QUIET_ENV, "") not in ("", "0"):
    return True
  return not sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None,
             desc: str | None = None, quiet: bool | None = None, **kwargs) -> tqdm:
  """A tqdm bar on stderr; disabled under :func:`is_quiet`.

  Use as ``for x in progress(xs, desc="train"): ...`` or as a manual bar with
  ``bar = progress(total=n); bar.update(1); bar.set_postfix(loss=...)``.
  """
  return tqdm(iterable, total=total, desc=desc, file=sys.stderr,
              disable=is_quiet(quiet), dynamic_ncols=True, **kwargs)


def progress_range(n: int, **kwargs) -> Iterator[int]:
  """``range(n)`` with a progress bar."""
  return iter(progress(range(n), total=n, **kwargs))
