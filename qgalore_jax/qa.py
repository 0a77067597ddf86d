"""Instruction-style QA for fine-tuning: "Explain <topic>." -> the topic's first paragraph.

Embedded default: ``pydoc_data.topics`` (the Python reference's own help topics, shipped with
every CPython). ``--data`` takes a JSONL file of ``{"question": ..., "answer": ...}``. Items are
split by topic into train and held-out sets (seeded), so held-out scores measure
generalization to unseen topics. Sequences are ``prompt + answer + EOS`` truncated or padded
to ``seq + 1`` tokens; the loss mask covers the answer tokens only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrepro.data import DataSource, resolve_data

EMBEDDED_NAME = "pydoc_data.topics"
PROMPT = "Question: {question}\nAnswer:"


class QAItem(NamedTuple):
  question: str
  answer: str


def _first_paragraph(text: str) -> tuple[str, str] | None:
  """(title, first prose paragraph) of a pydoc topic, None when it has no prose."""
  blocks = [b.strip() for b in text.strip().split("\n\n") if b.strip()]
  if not blocks:
    return None
  title = blocks[0].splitlines()[0].strip()
  for block in blocks[1:]:
    lines = block.splitlines()
    if re.fullmatch(r"[*=\-~^]+", lines[-1].strip()) or block.startswith(" "):
      continue  # a heading or an indented grammar/code block
    return title, " ".join(line.strip() for line in lines)
  return None


def _embedded_items() -> list[QAItem]:
  import pydoc_data.topics
  items = []
  for _, text in sorted(pydoc_data.topics.topics.items()):
    found = _first_paragraph(text)
    if found:
      items.append(QAItem(f"Explain {found[0]}.", found[1]))
  return items


def _jsonl_items(path: Path) -> list[QAItem]:
  items = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    record = json.loads(line)
    if not isinstance(record, dict) or not {"question", "answer"} <= record.keys():
      raise ValueError(f"--data {path}:{number}: expected {{'question': ..., 'answer': ...}}")
    items.append(QAItem(str(record["question"]), str(record["answer"])))
  if len(items) < 8:
    raise ValueError(f"--data {path}: need at least 8 QA items, found {len(items)}")
  return items


def load_qa(data: str | None = None, *, heldout_fraction: float = 0.2, seed: int = 0
            ) -> tuple[list[QAItem], list[QAItem], DataSource]:
  """(train items, held-out items, source); the split is a seeded permutation of topics."""
  source = resolve_data("qa/qa.jsonl", explicit=data, embedded=EMBEDDED_NAME)
  items = _embedded_items() if source.path is None else _jsonl_items(source.path)
  order = np.random.default_rng(seed).permutation(len(items))
  n_heldout = max(4, int(round(heldout_fraction * len(items))))
  heldout = [items[i] for i in sorted(order[:n_heldout])]
  train = [items[i] for i in sorted(order[n_heldout:])]
  return train, heldout, source


def encode(items: list[QAItem], tokenizer, seq: int, answers: list[str] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """``tokens`` (n, seq + 1) int32 and ``mask`` (n, seq) float32 over answer targets.

  ``answers`` replaces the items' answers (multiple-choice candidates).
  """
  tokens = np.full((len(items), seq + 1), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(items), seq), np.float32)
  for row, item in enumerate(items):
    prompt = tokenizer.encode(PROMPT.format(question=item.question))
    answer = tokenizer.encode(" " + (answers[row] if answers else item.answer),
                              add_special=False) + [tokenizer.eos_id]
    ids = (prompt + answer)[:seq + 1]
    tokens[row, :len(ids)] = ids
    # target t predicts ids[t + 1]: answer targets are positions len(prompt) - 1 ...
    if len(prompt) >= seq:
      raise ValueError(f"seq={seq} leaves no room for the answer after a {len(prompt)}-token "
                       f"prompt ({item.question!r}); use a longer --seq")
    mask[row, len(prompt) - 1:len(ids) - 1] = 1.0
  return tokens, mask


def multiple_choice(items: list[QAItem], seed: int = 0, choices: int = 4
                    ) -> tuple[list[QAItem], list[str], np.ndarray]:
  """Each item with its answer and ``choices - 1`` other items' answers, shuffled.

  Returns (question per candidate row, candidate answers, index of the right one per item).
  """
  if len(items) < choices:
    raise ValueError(f"multiple choice needs at least {choices} items, got {len(items)}")
  rng = np.random.default_rng(seed)
  rows, answers, correct = [], [], []
  for i, item in enumerate(items):
    others = rng.choice([j for j in range(len(items)) if j != i], choices - 1, replace=False)
    candidates = [i, *others]
    rng.shuffle(candidates)
    correct.append(candidates.index(i))
    rows += [item] * choices
    answers += [items[j].answer for j in candidates]
  return rows, answers, np.asarray(correct)
