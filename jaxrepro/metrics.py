"""JSONL metric logs and matplotlib curves.

One JSON object per line (``{"step": 10, "loss": 2.3, ...}``) so logs can be tailed,
appended to on resume and read back with :func:`read_jsonl`. Plots use the Agg backend,
so they work on headless machines.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


def to_jsonable(value: Any) -> Any:
  """Converts numpy/jax scalars and arrays (recursively) into plain JSON types.

  Non-finite floats become ``None`` because JSON has no NaN/Inf.
  """
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, Path):
    return str(value)
  if hasattr(value, "shape") and hasattr(value, "dtype"):
    array = np.asarray(value)
    return to_jsonable(array.item() if array.ndim == 0 else array.tolist())
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  return str(value)


class MetricsLogger:
  """Appends metric records to a JSONL file (or keeps them in memory when path is None)."""

  def __init__(self, path: str | os.PathLike | None, *, append: bool = True):
    self.path = Path(path) if path is not None else None
    self.records: list[dict[str, Any]] = []
    if self.path is not None:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      if not append and self.path.exists():
        self.path.unlink()

  def log(self, step: int | None = None, **metrics: Any) -> dict[str, Any]:
    record = to_jsonable({"step": step, **metrics} if step is not None else metrics)
    self.records.append(record)
    if self.path is not None:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a JSONL file; a malformed line raises ``ValueError`` naming the line number."""
  records = []
  with open(path) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
  return records


def plot_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                path: str | os.PathLike, *, xlabel: str = "step", ylabel: str = "",
                title: str = "", logx: bool = False, logy: bool = False,
                bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None
                ) -> Path:
  """Plots named (x, y) curves on one axis and saves a PNG.

  ``bands`` optionally maps a curve name to (lower, upper) arrays drawn as a shaded region
  (e.g. mean ± std over seeds).
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not curves:
    raise ValueError("plot_curves needs at least one curve")
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
  for name, (x, y) in curves.items():
    line, = ax.plot(np.asarray(x), np.asarray(y), marker="o" if len(x) < 30 else None,
                    markersize=3, label=name)
    if bands and name in bands:
      lo, hi = bands[name]
      ax.fill_between(np.asarray(x), np.asarray(lo), np.asarray(hi),
                      color=line.get_color(), alpha=0.2)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def curves_from_records(records: Iterable[Mapping[str, Any]], key: str,
                        x: str = "step") -> tuple[list[float], list[float]]:
  """Extracts an (x, y) curve for ``key`` from metric records that contain it."""
  xs, ys = [], []
  for record in records:
    if key in record and record[key] is not None and x in record:
      xs.append(record[x])
      ys.append(record[key])
  return xs, ys
