"""Real text for calibration, held-out perplexity and prompts.

Embedded default (DESIGN.md): the CPython standard library installed with this interpreter:
module docstrings of the top-level ``Lib/*.py`` files (calibration and prompts) and the
``pydoc_data.topics`` reference texts (held out; a different source than calibration).
``--data PATH`` may name a UTF-8 text file instead, split into blank-line-separated paragraphs.
"""

from __future__ import annotations

import ast
import dataclasses
import sysconfig
from pathlib import Path

from jaxrepro.data import DataSource, resolve_data

EMBEDDED_NAME = "cpython-stdlib-docstrings"
_MIN_CHARS = 300


@dataclasses.dataclass(frozen=True)
class Corpus:
  calibration: list[str]
  heldout: list[str]
  prompts: list[str]
  source: DataSource


def stdlib_docstrings(min_chars: int = _MIN_CHARS) -> list[str]:
  """Module docstrings of the stdlib's top-level modules (parsed, not imported), sorted by name."""
  lib = Path(sysconfig.get_paths()["stdlib"])
  texts = []
  for path in sorted(lib.glob("*.py")):
    try:
      doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (SyntaxError, UnicodeDecodeError):
      continue
    if doc and len(doc) >= min_chars:
      texts.append(doc)
  return texts


def pydoc_topics(min_chars: int = _MIN_CHARS) -> list[str]:
  from pydoc_data.topics import topics
  return [topics[k] for k in sorted(topics) if len(topics[k]) >= min_chars]


def _paragraphs(path: Path) -> list[str]:
  text = path.read_text(encoding="utf-8")
  paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) >= _MIN_CHARS // 3]
  if len(paragraphs) < 6:
    raise ValueError(f"{path}: need at least 6 paragraphs of text, found {len(paragraphs)}")
  return paragraphs


def load_corpus(data: str | None = None) -> Corpus:
  """Calibration / held-out / prompt texts from ``--data`` (a text file) or the embedded stdlib."""
  source = resolve_data("text/corpus.txt", explicit=data, embedded=EMBEDDED_NAME)
  if source.path is not None:
    paragraphs = _paragraphs(source.path)
    return Corpus(paragraphs[0::3], paragraphs[1::3], paragraphs[2::3], source)
  docs = stdlib_docstrings()
  return Corpus(docs[0::2], pydoc_topics(), docs[1::2], source)
