"""Pretraining the tiny LLaMA: every optimizer lowers the loss; resume is bit-exact; the memory
table's components follow from the shapes; the example runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxrepro.checkpoint import tree_equal_bitwise
from qgalore_jax.cli import run_pretrain

SMALL = dict(batch=4, seq=32, vocab=256, rank=8, gap=10, max_chars=200_000, quiet=True)


@pytest.mark.parametrize("optimizer,lr", [("adamw", 3e-3), ("galore", 0.01), ("qgalore", 0.015),
                                          ("adam8bit", 3e-3)])
def test_loss_falls_for_every_optimizer(optimizer, lr):
  result = run_pretrain("tiny", optimizer, 40, lr=lr, **SMALL)
  losses = result["losses"]
  assert result["data"].startswith("embedded:")
  # from ln(256) = 5.55 at init; a unigram model of Python source already reaches ~4.5
  assert np.mean(losses[-10:]) < losses[0] - 1.0
  assert np.all(np.isfinite(losses))
  if optimizer in ("galore", "qgalore"):
    # 14 projected kernels, refreshed at steps 0, 10, ...; Q-GaLore may skip some
    assert result["svd"]["total"] <= 14 * 4 and result["svd"]["total"] >= 14


def test_resume_is_bit_exact(tmp_path):
  full = run_pretrain("tiny", "qgalore", 12, lr=0.015, **SMALL)
  run_pretrain("tiny", "qgalore", 6, lr=0.015, ckpt=str(tmp_path), save_every=3, **SMALL)
  resumed = run_pretrain("tiny", "qgalore", 12, lr=0.015, ckpt=str(tmp_path), resume=True,
                         **SMALL)
  assert resumed["losses"] == full["losses"]
  assert tree_equal_bitwise(resumed["state"], full["state"])


def test_memory_components_follow_from_shapes():
  from llm.model import CONFIGS
  from qgalore_jax import memory
  config = memory.bf16(CONFIGS["llama_60m"])
  rows = {n: memory.training_state_bytes(config, memory.paper_optimizer(n, "llama_60m"), 1, 256)
          for n in ("adamw", "galore", "qgalore")}
  h, i, layers, v = 512, 1376, 8, 32000
  projected = layers * (4 * h * h + 3 * h * i)
  rest = 2 * v * h + (2 * layers + 1) * h
  assert rows["adamw"]["weights"] == 2 * (projected + rest)            # bf16
  # bf16 mu and nu, plus the int32 counts of Adam and of the learning-rate schedule
  assert rows["adamw"]["optimizer"] == 2 * 2 * (projected + rest) + 8
  # INT8 kernels + one f32 scale and zero per 256-group, bf16 rest
  groups = layers * (4 * -(-h * h // 256) + 3 * -(-h * i // 256))
  assert rows["qgalore"]["weights"] == projected + 8 * groups + 2 * rest
  # rank 128 float32 projectors: torch side reduces the smaller dimension of each kernel
  r = 128
  assert rows["galore"]["projectors"] == 4 * layers * (4 * h * r + 3 * h * r)
  assert rows["qgalore"]["projectors"] < rows["galore"]["projectors"] / 7
  assert rows["qgalore"]["total"] < rows["galore"]["total"] < rows["adamw"]["total"]


@pytest.mark.slow
def test_cli_json_and_bad_input(tmp_path):
  out = tmp_path / "r.json"
  cmd = [sys.executable, "-m", "jaxrepro.cli", "--quiet", "qgalore", "pretrain", "--quick",
         "--optimizer", "galore", "--steps", "3", "--chars", "50000", "--json", str(out)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  report = json.loads(out.read_text())
  assert set(report) >= {"command", "config", "data", "metrics", "timings", "env"}
  assert len(report["metrics"]["losses"]) == 3
  bad = subprocess.run(cmd[:-2] + ["--data", str(tmp_path / "missing.txt")],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "no such file" in bad.stderr


@pytest.mark.slow
def test_example_runs():
  example = Path(__file__).resolve().parents[2] / "examples" / "qgalore_custom_loop.py"
  proc = subprocess.run([sys.executable, str(example), "--steps", "20"], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  match = re.search(r"loss ([\d.]+) -> ([\d.]+); SVDs (\d+)", proc.stdout)
  assert match, proc.stdout
  assert float(match[2]) < float(match[1]) - 0.5
  assert int(match[3]) == 14  # 14 projected kernels, refreshed once at step 0 (T = 20)


@pytest.mark.parametrize("optimizer", ["adamw", "qgalore"])
def test_init_from_a_key_matches_eager_construction_without_folded_constants(optimizer):
  import jax
  from flax import nnx

  from llm.model import Llama
  from qgalore_jax import pretrain
  config = pretrain.model_config("tiny", vocab_size=256, max_seq_len=32)
  trainer = pretrain.build(config, pretrain.OptimizerConfig(name=optimizer, rank=8), 3)
  key = jax.random.key(3)
  state = trainer.init(key)
  _, eager = nnx.split(Llama(config, rngs=nnx.Rngs(3)))
  from qgalore_jax.quantization import dequantize_params
  for got, want in zip(jax.tree.leaves(dequantize_params(state.params, config.param_dtype)),
                       jax.tree.leaves(eager)):
    # the same random bits; compiled and eager float ops may differ in the last place, and
    # Q-GaLore's INT8 kernels are within a quantization step (weights are ~0.02-0.1)
    step = (np.max(want) - np.min(want)) / 255 if optimizer == "qgalore" else 1e-7
    np.testing.assert_allclose(got, want, rtol=0, atol=step)
  # a second key gives other weights from the same compiled function
  assert not tree_equal_bitwise(trainer.init(jax.random.key(4)).params, state.params)
  # no constant the size of a weight: the key is an input, so XLA has nothing to fold
  hlo = trainer.init.lower(key).as_text()
  shapes = re.findall(r"stablehlo\.constant dense<[^>]*> : tensor<([0-9x]+)x?[a-z]", hlo)
  largest = max((int(np.prod([int(d) for d in s.split("x") if d])) for s in shapes), default=1)
  smallest_kernel = min(int(np.size(leaf)) for leaf in jax.tree.leaves(eager)
                        if np.ndim(leaf) == 2)
  assert largest < smallest_kernel
