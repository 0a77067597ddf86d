"""Text tokenization: characters by default, SentencePiece unigram optionally.

Id 0 is the CTC blank (and the padding id), id 1 is <sos>/<eos> for the attention decoder,
as in ESPnet/Auto-AVSR where one symbol starts and ends every target.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
from pathlib import Path
from typing import Iterable, Protocol, Sequence

BLANK = 0
SOS_EOS = 1
_NUM_SPECIAL = 2


def normalize_text(text: str) -> str:
  """Lower-case letters, digits, apostrophes and single spaces (the corpora's alphabet)."""
  text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
  return re.sub(r"\s+", " ", text).strip()


class Tokenizer(Protocol):
  vocab_size: int

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def to_json(self) -> dict: ...


class CharTokenizer:
  """One id per character of ``alphabet`` (after the two special ids)."""

  def __init__(self, alphabet: str = " '" + string.ascii_lowercase + string.digits):
    if len(set(alphabet)) != len(alphabet):
      raise ValueError("alphabet has repeated characters")
    self.alphabet = alphabet
    self._ids = {c: i + _NUM_SPECIAL for i, c in enumerate(alphabet)}
    self.vocab_size = len(alphabet) + _NUM_SPECIAL

  def encode(self, text: str) -> list[int]:
    text = normalize_text(text)
    unknown = sorted(set(text) - set(self._ids))
    if unknown:
      raise ValueError(f"characters {unknown} are not in the alphabet {self.alphabet!r}")
    return [self._ids[c] for c in text]

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self.alphabet[i - _NUM_SPECIAL] for i in ids if i >= _NUM_SPECIAL)

  def to_json(self) -> dict:
    return {"kind": "char", "alphabet": self.alphabet}


class SentencePieceTokenizer:
  """A SentencePiece unigram model (Kudo 2018, arXiv:1804.10959) over normalized text."""

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size() + _NUM_SPECIAL

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int = 64) -> "SentencePieceTokenizer":
    import sentencepiece as spm
    with tempfile.TemporaryDirectory() as tmp:
      corpus = Path(tmp) / "text.txt"
      corpus.write_text("\n".join(normalize_text(t) for t in texts) + "\n")
      prefix = str(Path(tmp) / "sp")
      spm.SentencePieceTrainer.train(
          input=str(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
          character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2,
          hard_vocab_limit=False)
      return cls(Path(prefix + ".model").read_bytes())

  def encode(self, text: str) -> list[int]:
    return [i + _NUM_SPECIAL for i in self._sp.encode(normalize_text(text))]

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([i - _NUM_SPECIAL for i in ids if i >= _NUM_SPECIAL])

  def to_json(self) -> dict:
    return {"kind": "sentencepiece", "model": self.model_proto.hex()}


def tokenizer_from_json(spec: dict) -> Tokenizer:
  if spec.get("kind") == "char":
    return CharTokenizer(spec["alphabet"])
  if spec.get("kind") == "sentencepiece":
    return SentencePieceTokenizer(bytes.fromhex(spec["model"]))
  raise ValueError(f"unknown tokenizer spec {json.dumps(spec)[:80]}")
