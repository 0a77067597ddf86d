"""A disk cache of LLM calls keyed by (backend, model, messages, params), written atomically.

Each entry is one JSON file named by the SHA-256 of its key. A writer fills a temporary file in
the same directory, flushes and fsyncs it, then ``os.replace``-s it onto the final name: POSIX
rename is atomic, so a reader (or a re-run after a kill) sees either no entry or a whole one,
never a torn file. A pipeline that is killed mid-way re-runs only the calls it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_key(backend: str, model: str, messages: list[dict[str, str]],
              params: dict[str, Any]) -> str:
  payload = {"backend": backend, "model": model, "messages": messages, "params": params}
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
  """Writes ``text`` to ``path`` via a fsynced temporary file and an atomic rename."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:  # interrupted or failed: leave no temporary behind
    Path(tmp).unlink(missing_ok=True)
    raise


class DiskCache:
  """``get``/``put`` of completion texts under ``root/<2 hex>/<sha256>.json``."""

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)
    self.hits = 0
    self.misses = 0

  def _path(self, key: str) -> Path:
    return self.root / key[:2] / f"{key}.json"

  def get(self, key: str) -> str | None:
    path = self._path(key)
    try:
      entry = json.loads(path.read_text())
    except FileNotFoundError:
      self.misses += 1
      return None
    except (json.JSONDecodeError, UnicodeDecodeError):
      # Only a foreign writer can leave this; recompute rather than trust it.
      log.warning("ignoring unreadable cache entry %s", path)
      self.misses += 1
      return None
    self.hits += 1
    return entry["response"]

  def put(self, key: str, response: str, meta: dict[str, Any]) -> None:
    atomic_write_text(self._path(key), json.dumps({**meta, "response": response}) + "\n")

  def __len__(self) -> int:
    return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0
