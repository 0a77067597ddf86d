"""The fine-tuning recipe: the pydoc QA task (extraction, split, answer-only loss mask, multiple
choice), memory accounting against closed-form counts, and short runs that must learn."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from llm.model import CONFIGS, Llama, count_params
from qgalore_jax import finetune as ft, qa

CONFIG = dataclasses.replace(CONFIGS["tiny"], num_layers=3, max_seq_len=64)


class CharTokenizer:
  """Bytes as ids 2..257 folded into the tiny vocabulary; 0 pads, 1 ends."""
  pad_id, eos_id = 0, 1

  def encode(self, text, add_special=True):
    return [2 + b % 254 for b in text.encode()]


def test_pydoc_items_split_and_first_paragraph():
  train, heldout, source = qa.load_qa(None, seed=0)
  assert source.describe() == "embedded:pydoc_data.topics"
  assert len(train) > 3 * len(heldout) >= 12
  assert not {i.question for i in train} & {i.question for i in heldout}
  items = {i.question: i.answer for i in train + heldout}
  assert items['Explain The "assert" statement.'].startswith(
      "Assert statements are a convenient way to insert debugging assertions into a program")


def test_encode_masks_exactly_the_answer_and_eos():
  tok = CharTokenizer()
  item = qa.QAItem("Explain x.", "An answer.")
  tokens, mask = qa.encode([item], tok, 40)
  targets = tokens[0, 1:][mask[0] > 0]
  assert list(targets) == tok.encode(" An answer.") + [tok.eos_id]
  with pytest.raises(ValueError, match="longer --seq"):
    qa.encode([item], tok, 10)
  rows, answers, correct = qa.multiple_choice([qa.QAItem(f"q{i}", f"a{i}") for i in range(6)],
                                              seed=1)
  assert len(rows) == len(answers) == 24
  for i, right in enumerate(correct):
    assert answers[4 * i + right] == f"a{i}" and rows[4 * i].question == f"q{i}"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_abstract_memory_matches_closed_form(method):
  n = count_params(nnx.eval_shape(lambda: Llama(CONFIG, rngs=nnx.Rngs(0))))
  cfg = ft.FinetuneConfig(method=method, lora_rank=2)
  mem = ft.abstract_training_memory(CONFIG, cfg)
  if method == "full":
    trainable = n
  else:  # r * (in + out) for the 7 linears of each block
    h, i, hd = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.head_dim
    q, kv = CONFIG.num_heads * hd, CONFIG.num_kv_heads * hd
    trainable = CONFIG.num_layers * 2 * (2 * (h + q) + 2 * (h + kv) + 3 * (h + i))
  assert mem["grads"] == 4 * trainable
  assert mem["weights"] == 4 * (n + (trainable if method == "lora" else 0))
  # AdamW: two float32 moments per trainable parameter plus int32 step counters
  assert 8 * trainable <= mem["optimizer"] <= 8 * trainable + 64


def test_owlore_optimizer_bytes_split_matches_closed_form():
  """Dense leaves: two float32 AdamW moments each; every block: rank-r GaLore moments
  (r x the larger side), an (r x the smaller side) projector and its first vector per kernel,
  Adam moments for the two norms, plus a few scalars and the similarity queue per kernel."""
  rank = 8
  mem = ft.abstract_training_memory(CONFIG, ft.FinetuneConfig(method="owlore", rank=rank, gamma=2))
  model = nnx.eval_shape(lambda: Llama(CONFIG, rngs=nnx.Rngs(0)))
  dense = count_params(model) - sum(count_params(layer) for layer in model.layers)
  assert 8 * dense <= mem["optimizer"] - mem["optimizer_blocks"] <= 8 * dense + 64
  h, i, hd = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.head_dim
  q, kv = CONFIG.num_heads * hd, CONFIG.num_kv_heads * hd
  kernels = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
  per_block = sum(4 * (2 * rank * max(s) + rank * min(s) + min(s)) for s in kernels) + 16 * h
  low = CONFIG.num_layers * per_block
  assert low <= mem["optimizer_blocks"] <= low + CONFIG.num_layers * 7 * 64


def _task(seq=96):
  train, heldout, _ = qa.load_qa(None, seed=0)
  return train, ft.eval_set(heldout[:8], CharTokenizer(), seq, 0)


@pytest.mark.parametrize("method,lr", [("lora", 2e-2),
                                       pytest.param("owlore", 3e-3, marks=pytest.mark.slow)])
def test_short_finetune_learns_and_reports(method, lr):
  train, evaluation = _task()
  cfg = ft.FinetuneConfig(method=method, steps=8, batch=4, seq=96, lr=lr, rank=8, gamma=2,
                          lod_m=3.0, lora_rank=4)
  model = Llama(CONFIG, rngs=nnx.Rngs(0))
  result = ft.finetune(model, CharTokenizer(), cfg, train, evaluation)
  losses = result["losses"]
  assert np.mean(losses[-3:]) < losses[0] - 0.1
  assert np.isclose(result["heldout_ppl"], np.exp(result["heldout_loss"]))
  assert 0.0 <= result["mc_accuracy"] <= 1.0
  memory = result["memory"]
  assert memory["compiled_step"]["peak_estimate"] > memory["weights_bytes"]
  if method == "owlore":
    # gamma blocks per draw, a draw every K = steps // 8 = 1 step
    assert sum(result["times_sampled"]) == cfg.gamma * cfg.steps
    assert len(result["lod"]) == CONFIG.num_layers
    assert memory["trainable_params"] == count_params(model)
  else:
    assert memory["trainable_params"] < count_params(model) // 4


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "qlora", "galore", "qgalore", "lisa"])
def test_other_methods_learn(method):
  train, evaluation = _task()
  lr = {"full": 3e-3, "qlora": 2e-2, "galore": 3e-3, "qgalore": 3e-3, "lisa": 3e-3}[method]
  cfg = ft.FinetuneConfig(method=method, steps=8, batch=4, seq=96, lr=lr, rank=8,
                          lora_rank=4, lisa_gamma=2, lisa_interval=2)
  result = ft.finetune(Llama(CONFIG, rngs=nnx.Rngs(0)), CharTokenizer(), cfg, train, evaluation)
  assert np.mean(result["losses"][-3:]) < result["losses"][0] - 0.1


def test_bad_method():
  with pytest.raises(ValueError, match="method"):
    ft.FinetuneConfig(method="sgd")


@pytest.mark.slow
def test_cli_finetune_quick_writes_report(tmp_path):
  import json

  from jaxrepro.cli import main
  out = tmp_path / "ft.json"
  assert main(["qgalore", "finetune", "--quick", "--method", "lora", "--json", str(out)]) == 0
  report = json.loads(out.read_text())
  assert report["data"] == "embedded:pydoc_data.topics"
  assert report["metrics"]["memory"]["trainable_params"] > 0
  assert len(report["metrics"]["losses"]) == report["config"]["steps"]
