"""The GGUF's byte-level BPE tokenizer, rebuilt with Hugging Face ``tokenizers``, and its chat
template.

llama.cpp stores a GPT-2-style tokenizer (``tokenizer.ggml.model = "gpt2"``) as its token
strings, BPE merges, token types (3 = control, i.e. special) and special ids; the
``tokenizer.ggml.pre`` name selects the pre-tokenizer regex. SmolLM2 (``pre = "smollm"``) splits
every digit (``\\p{N}``) before GPT-2's byte-level regex, as llama.cpp does for this name
(``llama-vocab.cpp``) and SmolLM2's ``tokenizer.json`` (``Digits(individual_digits=True)``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from llm.gguf_loader import _reader, field_value

_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL


@dataclasses.dataclass
class Tokenizer:
  """Encode/decode plus the special ids and chat template of one model."""
  backend: "tokenizers.Tokenizer"  # noqa: F821
  bos_id: int | None
  eos_id: int
  pad_id: int
  chat_template: str | None
  add_bos: bool = False

  def encode(self, text: str, *, add_special: bool = True) -> list[int]:
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if add_special and self.add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=skip_special)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation: EOS, and ``<|im_end|>`` for ChatML templates."""
    ids = {self.eos_id}
    im_end = self.backend.token_to_id("<|im_end|>")
    if im_end is not None:
      ids.add(im_end)
    return tuple(sorted(ids))

  def apply_chat_template(self, messages: Sequence[dict[str, str]], *,
                          add_generation_prompt: bool = True) -> str:
    """Renders ``messages`` (``{"role", "content"}`` dicts) with the model's Jinja template."""
    if not self.chat_template:
      raise ValueError("this model has no chat template; use a plain prompt")
    for message in messages:
      if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
        raise ValueError(f"a chat message needs 'role' and 'content', got {message!r}")
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    special = lambda i: self.backend.id_to_token(i) if i is not None else ""
    return env.from_string(self.chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt,
        bos_token=special(self.bos_id), eos_token=special(self.eos_id))


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
  """Rebuilds the tokenizer stored in a GGUF file's ``tokenizer.ggml.*`` metadata."""
  from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
  from tokenizers import Tokenizer as HFTokenizer
  reader = _reader(path)
  kind = field_value(reader, "tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"only byte-level BPE ('gpt2') GGUF tokenizers are supported, got {kind!r}")
  tokens = field_value(reader, "tokenizer.ggml.tokens")
  merges = [tuple(m.split(" ", 1)) for m in field_value(reader, "tokenizer.ggml.merges")]
  types = field_value(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
  backend = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                   fuse_unk=False, byte_fallback=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if field_value(reader, "tokenizer.ggml.pre") == "smollm":
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    backend.pre_tokenizer = byte_level
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                              for t, kind in zip(tokens, types) if kind == _CONTROL])
  eos = int(field_value(reader, "tokenizer.ggml.eos_token_id"))
  bos = field_value(reader, "tokenizer.ggml.bos_token_id")
  return Tokenizer(
      backend=backend, bos_id=None if bos is None else int(bos), eos_id=eos,
      pad_id=int(field_value(reader, "tokenizer.ggml.padding_token_id", eos)),
      chat_template=field_value(reader, "tokenizer.chat_template"),
      add_bos=bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)))
