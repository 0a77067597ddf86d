"""``jaxrepro llm eval-skip`` end to end on a tiny random LLaMA written as a GGUF file (gguf-py's
writer) with SmolLM2's tokenizer metadata."""

import json

import numpy as np
import pytest

from jaxrepro.cli import main
from llm import gguf_loader

NUM_LAYERS = 4


def _write_tiny_gguf(path, source):
  """A random 4-layer LLaMA (hidden 32, F32 tensors) carrying ``source``'s tokenizer."""
  from gguf import GGUFWriter
  field = lambda key: gguf_loader.field_value(source, key)
  tokens = field("tokenizer.ggml.tokens")
  hidden, ffn, heads, kv_heads = 32, 64, 4, 2
  head_dim = hidden // heads
  writer = GGUFWriter(str(path), "llama")
  writer.add_block_count(NUM_LAYERS)
  writer.add_context_length(512)
  writer.add_embedding_length(hidden)
  writer.add_feed_forward_length(ffn)
  writer.add_head_count(heads)
  writer.add_head_count_kv(kv_heads)
  writer.add_rope_freq_base(10000.0)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(field("tokenizer.ggml.pre"))
  writer.add_token_list(tokens)
  writer.add_token_merges(field("tokenizer.ggml.merges"))
  writer.add_token_types(field("tokenizer.ggml.token_type"))
  writer.add_eos_token_id(int(field("tokenizer.ggml.eos_token_id")))
  writer.add_bos_token_id(int(field("tokenizer.ggml.bos_token_id")))
  writer.add_pad_token_id(int(field("tokenizer.ggml.padding_token_id")))
  writer.add_chat_template(field("tokenizer.chat_template"))
  rng = np.random.default_rng(0)
  weight = lambda rows, cols, std=0.3: (rng.normal(size=(rows, cols)) * std).astype(np.float32)
  writer.add_tensor("token_embd.weight", weight(len(tokens), hidden, 1.0))
  writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
  shapes = {"attn_q": (heads * head_dim, hidden), "attn_k": (kv_heads * head_dim, hidden),
            "attn_v": (kv_heads * head_dim, hidden), "attn_output": (hidden, heads * head_dim),
            "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}
  for i in range(NUM_LAYERS):
    writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    for name, shape in shapes.items():
      writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.mark.slow  # ~35 XLA compilations and two parses of a 49k-token vocabulary: ~100 s here
def test_eval_skip_cli_end_to_end(tmp_path, capsys):
  try:
    source = gguf_loader._reader(gguf_loader.smollm2_path())
  except FileNotFoundError as e:
    pytest.skip(str(e))
  tiny = tmp_path / "tiny.gguf"
  _write_tiny_gguf(tiny, source)
  report_path = tmp_path / "eval.json"
  code = main(["llm", "eval-skip", "--gguf", str(tiny), "--quick", "--ratios", "0,0.25",
               "--prompts", "2", "--new-tokens", "8", "--json", str(report_path),
               "--out", str(tmp_path / "out")])
  assert code == 0
  report = json.loads(report_path.read_text())
  results = report["metrics"]["results"]
  assert set(results) == {"full", "adaptive@0.25", "random@0.25", "static@0.25"}
  assert results["full"]["agreement"] == 1.0 and results["full"]["decode_skip_ratio"] == 0.0
  # Static skipping drops round(0.25 * 4) = 1 layer of every post-warm-up token.
  assert results["static@0.25"]["decode_skip_ratio"] == pytest.approx(1 / NUM_LAYERS)
  assert results["static@0.25"]["heldout_skip_ratio"] == pytest.approx(1 / NUM_LAYERS)
  start, end = report["metrics"]["cold_start"], report["metrics"]["cold_end"]
  assert 0 <= start < end <= NUM_LAYERS and len(report["metrics"]["layer_cosine"]) == NUM_LAYERS
  for name, row in results.items():
    assert 0.0 <= row["agreement"] <= 1.0 and row["tokens_per_s"] > 0
    assert row["perplexity"] > 1.0
    if name != "full":  # skipping perturbs a random model's predictions
      assert row["perplexity"] != results["full"]["perplexity"]
  assert (tmp_path / "out" / "ffn_layer_cosine.png").stat().st_size > 0
  assert "adaptive@0.25" in capsys.readouterr().out
