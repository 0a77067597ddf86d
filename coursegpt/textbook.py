"""Textbooks as paragraphs: a plain-text file (paragraphs separated by blank lines) or, embedded,
Python's own documentation topics (``pydoc_data.topics``, the text behind ``help('topic')``)."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

from jaxrepro.data import DataSource, resolve_data

EMBEDDED_NAME = "pydoc_data.topics"
MIN_WORDS, MAX_WORDS = 40, 220  # a paragraph that supports a few questions and fits a prompt


@dataclasses.dataclass(frozen=True)
class Paragraph:
  id: str  # "<source>#<index>": provenance of every question distilled from it
  text: str


def _prose_blocks(text: str) -> list[str]:
  """Blank-line separated blocks, reflowed, without RST tables/headings/code listings."""
  blocks = []
  for block in re.split(r"\n\s*\n", text):
    lines = [l.strip() for l in block.strip().splitlines()]
    if not lines or any(l.startswith(("+--", "|", ">>>", "***", "===", "---")) for l in lines):
      continue
    joined = " ".join(lines)
    if MIN_WORDS <= len(joined.split()) <= MAX_WORDS:
      blocks.append(joined)
  return blocks


def embedded_paragraphs() -> list[Paragraph]:
  from pydoc_data.topics import topics
  return [Paragraph(f"{name}#{i}", block) for name in sorted(topics)
          for i, block in enumerate(_prose_blocks(topics[name]))]


def load_textbook(textbook: str | None) -> tuple[list[Paragraph], DataSource]:
  """Paragraphs of ``textbook`` (a path, or None/"embedded" for the Python docs)."""
  explicit = None if textbook in (None, "embedded") else textbook
  source = resolve_data("coursegpt/textbook.txt", explicit=explicit, embedded=EMBEDDED_NAME)
  if source.path is None:
    paragraphs = embedded_paragraphs()
  else:
    if source.path.is_dir():
      raise ValueError(f"--textbook {source.path} is a directory; give a text file")
    stem = Path(source.path).stem
    paragraphs = [Paragraph(f"{stem}#{i}", b)
                  for i, b in enumerate(_prose_blocks(source.path.read_text()))]
  if not paragraphs:
    raise ValueError(f"no paragraph of {MIN_WORDS}..{MAX_WORDS} words in {source.describe()}")
  return paragraphs, source


def select_paragraphs(paragraphs: list[Paragraph], count: int, seed: int = 0) -> list[Paragraph]:
  """``count`` paragraphs drawn without replacement (in textbook order)."""
  if count < 1:
    raise ValueError(f"need at least one paragraph, got {count}")
  chosen = sorted(random.Random(seed).sample(range(len(paragraphs)), min(count, len(paragraphs))))
  return [paragraphs[i] for i in chosen]
