"""Training loop: learning, bit-exact resume, sharding over the data axis, the sampler hook."""

import dataclasses

import numpy as np
import pytest

from jaxrepro.checkpoint import tree_equal_bitwise
from jaxrepro.testing import run_with_devices
from sparse_sr.conformer import ConformerConfig
from sparse_sr.data import corpus
from sparse_sr.data.loader import Dataset, ShuffleSampler
from sparse_sr.decoder import DecoderConfig
from sparse_sr.model import ModelConfig
from sparse_sr.tokenizer import CharTokenizer
from sparse_sr.train import TrainConfig, evaluate, restore_model, train

NANO = dict(encoder=ConformerConfig(32, 2, 1, conv_kernel=5), decoder=DecoderConfig(1, 2),
            subsample_channels=4)
CONFIG = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=1000,
                     checkpoint_every=2, log_every=1, num_buckets=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  out = tmp_path_factory.mktemp("corpus")
  paths = corpus.make_espeak_corpus(out, corpus.EspeakCorpusConfig(
      hours=0.003, test_utterances=3, max_words=1, vocab_size=20, video=False, seed=1))
  tok = CharTokenizer()
  return (Dataset(corpus.read_manifest(paths["train"]), tok),
          Dataset(corpus.read_manifest(paths["test"]), tok))


class RecordingSampler(ShuffleSampler):
  """Records the per-example losses it is given (the DDP-ASR hook)."""

  def __init__(self, n, seed):
    super().__init__(n, seed)
    self.seen = np.zeros(n)

  def update(self, indices, losses):
    self.seen[indices] = losses

  def state(self):
    return {"seen": self.seen}

  def load_state(self, state):
    self.seen = np.asarray(state["seen"], np.float64)


def test_resume_is_bit_exact(data, tmp_path):
  train_set, _ = data
  model_config = ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO)
  straight = train(model_config, CONFIG, train_set, workdir=tmp_path / "a", quiet=True,
                   sampler=RecordingSampler(len(train_set), 0))
  train(model_config, CONFIG, train_set, workdir=tmp_path / "b", quiet=True, stop_after=2,
        sampler=RecordingSampler(len(train_set), 0))
  sampler = RecordingSampler(len(train_set), 0)
  resumed = train(model_config, CONFIG, train_set, workdir=tmp_path / "b", quiet=True,
                  sampler=sampler)
  for key in ("params", "other", "opt_state", "key"):
    assert tree_equal_bitwise(straight[key], resumed[key]), key
  assert straight["history"][-1] == resumed["history"][-1]
  # the sampler saw per-utterance losses, and its state travelled with the checkpoint
  assert np.count_nonzero(sampler.seen) >= CONFIG.batch_size
  model, step = restore_model(model_config, tmp_path / "a")
  assert step == 4
  assert tree_equal_bitwise(straight["params"], __import__("flax").nnx.state(
      model, __import__("flax").nnx.Param))


def test_evaluation_scores_every_utterance(data):
  train_set, test_set = data
  from flax import nnx
  from sparse_sr.model import SpeechRecognizer
  model = SpeechRecognizer(ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO),
                           rngs=nnx.Rngs(0))
  result = evaluate(model, test_set, batch_size=2, beam=2)
  assert result["utterances"] == len(test_set)
  for decoder in ("greedy_ctc", "greedy_attention", "beam2"):
    assert result[decoder]["cer"] >= 0.5  # an untrained model cannot transcribe


@pytest.mark.slow
def test_data_parallel_step_matches_one_device(data, tmp_path):
  train_set, _ = data
  manifest = tmp_path / "train.jsonl"
  corpus.write_manifest(manifest, list(train_set.utterances))
  code = f"""
import numpy as np
from jaxrepro.mesh import make_mesh
from sparse_sr.conformer import ConformerConfig
from sparse_sr.data import corpus
from sparse_sr.data.loader import Dataset
from sparse_sr.decoder import DecoderConfig
from sparse_sr.model import ModelConfig
from sparse_sr.tokenizer import CharTokenizer
from sparse_sr.train import TrainConfig, train
import jax
data = Dataset(corpus.read_manifest({str(manifest)!r}), CharTokenizer())
config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_every=1000, log_every=1,
                     num_buckets=1)
model = ModelConfig(vocab_size=CharTokenizer().vocab_size,
                    encoder=ConformerConfig(32, 2, 1, conv_kernel=5, dropout=0.0),
                    decoder=DecoderConfig(1, 2, dropout=0.0), subsample_channels=4)
one = train(model, config, data, mesh=make_mesh(devices=jax.devices()[:1]), quiet=True)
two = train(model, config, data, mesh=make_mesh("data=2"), quiet=True)
print([h["loss"] for h in one["history"]], [h["loss"] for h in two["history"]])
print(jax.tree.leaves(two["params"])[0].sharding.mesh.shape)
"""
  out = run_with_devices(code, n_devices=2).strip().splitlines()
  one, two = eval(out[-2].replace("] [", "], ["))
  np.testing.assert_allclose(one, two, rtol=1e-4)
  assert "('data', 2)" in out[-1]


def test_vtln_gives_each_speaker_the_warp_of_most_probable_best_paths(data):
  import jax
  from flax import nnx
  from sparse_sr.data.loader import collate
  from sparse_sr.model import SpeechRecognizer
  _, test_set = data
  model = SpeechRecognizer(ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO),
                           rngs=nnx.Rngs(0))
  warps = (0.8, 1.0, 1.2)
  result = evaluate(model, test_set, batch_size=2, warps=warps)
  # brute force: one utterance at a time, the summed per-frame maximum log-probability
  totals = {}
  for i, u in enumerate(test_set.utterances):
    batch = collate([test_set.load(i)])
    for w in warps:
      memory, valid = model.encode({"audio": batch["audio"], "audio_len": batch["audio_len"],
                                    "warp": np.asarray([w], np.float32)})
      log_probs = jax.nn.log_softmax(model.ctc_logits(memory))
      best = float(np.sum(np.max(np.asarray(log_probs), -1) * np.asarray(valid)))
      totals[u.speaker, w] = totals.get((u.speaker, w), 0.0) + best
  speakers = {u.speaker for u in test_set.utterances}
  assert result["vtln"] == {s: max(warps, key=lambda w: totals[s, w]) for s in speakers}
  # a warp of 1 everywhere is no warp at all
  plain, unit = evaluate(model, test_set, batch_size=2), evaluate(model, test_set, batch_size=2,
                                                                  warps=(1.0,))
  assert plain["greedy_ctc"] == unit["greedy_ctc"]
  assert plain["greedy_attention"] == unit["greedy_attention"]


def test_evaluation_shows_a_progress_bar_per_warp(data, monkeypatch):
  import importlib

  from flax import nnx

  from sparse_sr.model import SpeechRecognizer
  train_module = importlib.import_module("sparse_sr.train")  # the package exports train()
  bars = []

  def recording_progress(iterable, *, total, desc, quiet=None, **kwargs):
    bars.append((desc, total, quiet))
    return iterable
  monkeypatch.setattr(train_module, "progress", recording_progress)
  _, test_set = data
  model = SpeechRecognizer(ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO),
                           rngs=nnx.Rngs(0))
  evaluate(model, test_set, batch_size=2, warps=(0.9, 1.0))
  batches = -(-len(test_set) // 2)
  assert bars == [("decode (warp 0.9)", batches, None), ("decode (warp 1)", batches, None)]
  # train(quiet=True), as the benchmarks call it, must silence its evaluations' bars too.
  bars.clear()
  evaluate(model, test_set, batch_size=2, quiet=True)
  assert bars == [("decode", batches, True)]


def test_evaluations_carry_time_with_and_without_the_compiling_steps(data):
  train_set, test_set = data
  model_config = ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO)
  config = TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=2,
                       checkpoint_every=1000, log_every=1, num_buckets=1)
  result = train(model_config, config, train_set, eval_data=test_set, quiet=True)
  first, last = result["evaluations"]
  assert (first["step"], last["step"]) == (2, 4)
  # step 1 compiled (seconds) and step 2 did not: far below half of the two steps' time
  assert 0 < first["steady_seconds"] < 0.5 * first["seconds"]
  assert first["steady_seconds"] < last["steady_seconds"] < last["seconds"]
  assert last["seconds"] == result["step_seconds"]
  assert last["steady_seconds"] == result["steady_seconds"]


def test_recording_layer_gradient_norms_costs_no_second_compilation(data):
  import jax
  compiled = []

  def record(event, seconds, **kwargs):
    if (event == "/jax/core/compile/backend_compile_duration"
        and kwargs.get("fun_name") == "jit(step)"):
      compiled.append(seconds)
  train_set, _ = data
  model_config = ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO)
  # a configuration of its own: make_train_step caches compiled steps per configuration
  config = dataclasses.replace(CONFIG, seed=7)
  jax.monitoring.register_event_duration_secs_listener(record)
  try:
    result = train(model_config, config, train_set, layer_norm_steps=2, quiet=True)
  finally:
    jax.monitoring.unregister_event_duration_listener(record)
  # one padded length (num_buckets=1): one compilation, with or without recording norms
  assert len(compiled) == 1
  assert [r["step"] for r in result["layer_grad_norms"]] == [1, 2]
  first = result["layer_grad_norms"][0]
  assert len(first) > 10 and all(v > 0 for k, v in first.items() if k != "step")
