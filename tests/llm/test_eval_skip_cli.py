"""``jaxrepro llm eval-skip`` and ``generate`` end to end on a tiny random LLaMA written as a
GGUF file (gguf-py's writer) with SmolLM2's tokenizer metadata."""

import json
import sys

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


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
  try:
    source = gguf_loader._reader(gguf_loader.smollm2_path())
  except FileNotFoundError as e:
    pytest.skip(str(e))
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  _write_tiny_gguf(path, source)
  return path


@pytest.mark.slow  # ~35 XLA compilations and two parses of a 49k-token vocabulary: ~100 s here
def test_eval_skip_cli_end_to_end(tiny_gguf, tmp_path, capsys):
  tiny = tiny_gguf
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


@pytest.mark.slow
def test_generate_cli_streams_the_greedy_continuation(tiny_gguf, tmp_path, capsys, monkeypatch):
  from llm.generate import Generator, SamplingParams
  from llm.tokenizer import tokenizer_from_gguf
  writes = []
  real_write = sys.stdout.write
  monkeypatch.setattr("sys.stdout.write", lambda text: writes.append(text) or real_write(text))
  report_path = tmp_path / "gen.json"
  assert main(["llm", "generate", "--gguf", str(tiny_gguf), "--prompt", "The sea is",
               "--max-new-tokens", "12", "--json", str(report_path)]) == 0
  text = json.loads(report_path.read_text())["metrics"]["text"]
  tokenizer = tokenizer_from_gguf(tiny_gguf)
  ids = Generator(gguf_loader.load_gguf(tiny_gguf), stop_ids=tokenizer.stop_ids).generate(
      [tokenizer.encode("The sea is")], SamplingParams(max_new_tokens=12)).tokens[0]
  assert text == tokenizer.decode(ids)
  assert "".join(writes).strip() == text.strip()
  assert sum(bool(w.strip()) for w in writes) > 1  # printed piece by piece, not at the end


def test_agreement_tokens_must_outlast_the_warm_up():
  from llm.skip_eval import SkipEvalConfig
  with pytest.raises(ValueError, match="must exceed warmup_tokens"):
    SkipEvalConfig(new_tokens=8, warmup_tokens=16)
  assert SkipEvalConfig(new_tokens=17, warmup_tokens=16).new_tokens == 17
