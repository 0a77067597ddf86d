"""Deduplication of generated questions: exact duplicates after normalization, then
near-duplicates by word n-gram Jaccard similarity (CourseGPT-zh Sec. 3.1; self-instruct uses
ROUGE-L overlap the same way)."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Iterable, Sequence


def normalize(text: str) -> str:
  """Lower case, NFKC, punctuation to spaces, whitespace collapsed."""
  text = unicodedata.normalize("NFKC", text).lower()
  return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
  """Word n-grams of the normalized text (the whole text when it is shorter than n)."""
  words = normalize(text).split()
  if len(words) < n:
    return {tuple(words)} if words else set()
  return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
  if not a and not b:
    return 1.0
  return len(a & b) / len(a | b)


@dataclasses.dataclass(frozen=True)
class Removed:
  text: str
  reason: str  # "exact" or "near"
  duplicate_of: str
  similarity: float


def deduplicate(texts: Sequence[str], *, existing: Iterable[str] = (), n: int = 2,
                threshold: float = 0.6) -> tuple[list[int], list[Removed]]:
  """Indices of ``texts`` to keep (first occurrence wins) and what was removed and why.

  A text is removed when its normalized form equals, or its word ``n``-gram Jaccard similarity
  reaches ``threshold`` with, a kept text or one of ``existing`` (e.g. the in-context examples,
  which a small teacher tends to copy).
  """
  if not 0 < threshold <= 1:
    raise ValueError(f"threshold must be in (0, 1], got {threshold}")
  kept_norm: dict[str, str] = {}
  kept_grams: list[tuple[str, set]] = []
  for text in existing:
    kept_norm.setdefault(normalize(text), text)
    kept_grams.append((text, ngrams(text, n)))
  keep, removed = [], []
  for i, text in enumerate(texts):
    norm = normalize(text)
    if not norm:
      removed.append(Removed(text, "empty", "", 1.0))
      continue
    if norm in kept_norm:
      removed.append(Removed(text, "exact", kept_norm[norm], 1.0))
      continue
    grams = ngrams(text, n)
    best_text, best = "", 0.0
    for other, other_grams in kept_grams:
      similarity = jaccard(grams, other_grams)
      if similarity > best:
        best_text, best = other, similarity
    if best >= threshold:
      removed.append(Removed(text, "near", best_text, best))
      continue
    keep.append(i)
    kept_norm[norm] = text
    kept_grams.append((text, grams))
  return keep, removed
