"""Pretraining text: the CPython standard library's own source and ``pydoc_data.topics``
(embedded default, always installed), or user text files / JSONL (``--data``), tokenized with
a byte-level BPE trained on the corpus by Hugging Face ``tokenizers``.

Batches are a pure function of ``(seed, step)``: window starts come from a seeded permutation,
so a resumed run reads exactly the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np

from jaxrepro.data import DataSource, resolve_data

EMBEDDED_NAME = "cpython-stdlib+pydoc_data.topics"


def _stdlib_texts(max_chars: int) -> list[str]:
  import pydoc_data.topics
  texts = list(pydoc_data.topics.topics.values())
  total = sum(map(len, texts))
  root = Path(sysconfig.get_paths()["stdlib"])
  for path in sorted(root.rglob("*.py")):
    if total >= max_chars:
      break
    if "site-packages" in path.parts or "test" in path.parts:
      continue
    try:
      text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
      continue
    texts.append(text)
    total += len(text)
  return texts


def _user_texts(path: Path, max_chars: int) -> list[str]:
  files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  texts, total = [], 0
  for file in files:
    if total >= max_chars:
      break
    if file.suffix == ".jsonl":
      for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
          record = json.loads(line)
          texts.append(record["text"] if isinstance(record, dict) else str(record))
    else:
      texts.append(file.read_text(encoding="utf-8", errors="replace"))
    total = sum(map(len, texts))
  if not texts:
    raise ValueError(f"--data {path}: no text found (expected text files or JSONL with 'text')")
  return texts


def load_texts(data: str | None, max_chars: int) -> tuple[list[str], DataSource]:
  """The corpus as a list of documents and where it came from."""
  source = resolve_data("text/corpus", explicit=data, embedded=EMBEDDED_NAME)
  if source.path is None:
    return _stdlib_texts(max_chars), source
  return _user_texts(source.path, max_chars), source


def train_tokenizer(texts: list[str], vocab_size: int):
  """A byte-level BPE (``tokenizers``) with at most ``vocab_size`` tokens."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer=trainer)
  return tokenizer


def tokenize(texts: list[str], tokenizer) -> np.ndarray:
  ids = [np.asarray(enc.ids, np.int32) for enc in tokenizer.encode_batch(texts)]
  return np.concatenate(ids)


class TokenBatches:
  """Windows of ``seq_len + 1`` tokens; batch ``step`` is fixed by ``(seed, step)``."""

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
    if tokens.size < seq_len + 2:
      raise ValueError(f"corpus has {tokens.size} tokens, fewer than one window of {seq_len + 1}")
    self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
    self.num_windows = (tokens.size - 1) // seq_len

  def __call__(self, step: int) -> np.ndarray:
    epoch, offset = divmod(step * self.batch_size, self.num_windows)
    order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
    index = np.take(order, np.arange(offset, offset + self.batch_size), mode="wrap")
    starts = index * self.seq_len
    return np.stack([self.tokens[s:s + self.seq_len + 1] for s in starts])

