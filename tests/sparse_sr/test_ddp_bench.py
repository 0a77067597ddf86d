"""The DDP-ASR benchmark's bookkeeping: which variants run, seed means and ratios, options."""

import dataclasses
import sys
from pathlib import Path

import pytest

from benchmarks import bench_ddp_asr as bench


def test_variants_bring_full_data_and_their_random_baselines():
  picked = [v.label for v in bench.pick_variants(("easy2hard+point0.2", "random+point"))]
  assert picked == ["full", "random+point0.2", "easy2hard+point0.2", "random+point"]
  point = bench.ALL_VARIANTS["easy2hard+point0.2"]
  assert (point.prune, point.time_drop, point.drop) == ("easy2hard", "point", 0.2)
  assert bench.ALL_VARIANTS["easy2hard+chunk30ms"].chunk_frames == 3
  for v in bench.ALL_VARIANTS.values():  # every baseline is random pruning at the same budget
    baseline = bench.ALL_VARIANTS[v.baseline]
    assert baseline.prune in ("none", "random")
    assert dataclasses.replace(v, label=baseline.label, prune=baseline.prune) == baseline
  no_warmup = [v.label for v in bench.pick_variants(("hard+w0", "easy+w0", "hard"))]
  assert no_warmup == ["full", "random+w0", "hard+w0", "easy+w0", "random", "hard"]
  assert bench.ALL_VARIANTS["hard+w0"].warmup_epochs == 0
  assert bench.ALL_VARIANTS["hard"].warmup_epochs == 1
  with pytest.raises(ValueError, match="starts with its strategy"):
    bench.Variant("w0+hard", "hard")
  with pytest.raises(ValueError, match="unknown variants"):
    bench.pick_variants(("easy2hard+dots",))


def _row(steps, seconds, cpu, wer):
  return dict(steps=steps, train_seconds=seconds, cpu_seconds=cpu, wall_seconds=seconds + 5,
              wer=wer, cer=wer / 2, attention_wer=wer, final_loss=0.1)


def test_seed_means_and_the_targets_are_of_the_means():
  seeds = [{"full": _row(100, 10.0, 8.0, 0.10), "random+point": _row(70, 5.0, 4.0, 0.14),
            "easy2hard+point": _row(70, 6.0, 5.0, 0.12)},
           {"full": _row(100, 12.0, 10.0, 0.08), "random+point": _row(70, 7.0, 6.0, 0.10),
            "easy2hard+point": _row(70, 8.0, 7.0, 0.08)}]
  mean = bench.mean_rows(seeds)
  verdicts = bench.compare(mean, bench.pick_variants(("easy2hard+point",)))
  e2h = mean["easy2hard+point"]
  assert e2h["train_seconds"] == 7.0 and e2h["wer"] == pytest.approx(0.10)
  assert e2h["speedup"] == pytest.approx(11.0 / 7.0)     # full's mean over the variant's
  assert e2h["cpu_speedup"] == pytest.approx(9.0 / 6.0)
  assert e2h["step_ratio"] == pytest.approx(100 / 70)
  assert e2h["wer_gap_points"] == pytest.approx(1.0)
  assert verdicts["easy2hard+point"] == {
      "speedup_at_least_1.4": True, "cpu_speedup_at_least_1.4": True,
      "wer_within_1_point": True, "random_baseline": "random+point",
      "beats_random_same_budget": True}
  table = bench.markdown_table(mean).splitlines()
  assert len(table) == 2 + 3
  assert table[-1].startswith("| easy2hard+point | 70 (1.43) | 7.0 / 6.0 | 1.57 / 1.50 | "
                              "10.0% / 5.0% |")


def test_options_reach_run(monkeypatch, tmp_path):
  seen = {}
  monkeypatch.setattr(bench, "benchmark_main",
                      lambda fn, description, rest: seen.update(fn.keywords, rest=rest))
  monkeypatch.setattr(sys, "argv", ["bench_ddp_asr", "--corpus", "fsdd", "--seeds", "3",
                                    "--variants", "easy2hard+point", "--quick"])
  bench._main()
  assert seen == {"corpus_names": ("fsdd",), "seeds": 3,
                  "variant_labels": ("easy2hard+point",), "rest": ["--quick"]}
  with pytest.raises(ValueError, match="seeds"):
    bench.run(True, tmp_path, seeds=0)
  with pytest.raises(ValueError, match="corpus"):
    bench.run(True, tmp_path, corpus_names=("librispeech",))



def test_point_drop_rows_are_in_the_default_and_quick_runs():
  for labels in (bench.VARIANTS, bench.QUICK_VARIANTS):
    assert {v.time_drop for v in bench.pick_variants(labels)} >= {"point"}


@pytest.mark.parametrize("label, warmup, steps", [("hard+w0", 0, 8 * 26), ("hard", 1, 37 + 7 * 26),
                                                  ("full", None, 8 * 37)])
def test_a_variant_trains_its_sampler_for_the_steps_of_its_warmup(monkeypatch, label, warmup,
                                                                  steps):
  import importlib
  import types
  train_module = importlib.import_module("sparse_sr.train")  # the package exports train()
  seen = {}

  def fake_train(model_config, config, train_set, *, sampler, transform, quiet):
    seen.update(steps=config.steps, sampler=sampler)
    return {"model": None, "steady_seconds": 1.0, "steady_cpu_seconds": 1.0,
            "history": [{"loss": 0.5}]}
  scores = {"wer": 0.1, "cer": 0.05}
  monkeypatch.setattr(train_module, "train", fake_train)
  monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {
      "greedy_ctc": scores, "greedy_attention": scores})
  train_set = type("Set", (), {"__len__": lambda self: 300,
                               "tokenizer": types.SimpleNamespace(vocab_size=30)})()
  row = bench.run_variant(bench.ALL_VARIANTS[label], train_set, None, model="conformer-nano",
                          epochs=8, batch_size=8, learning_rate=1e-3)
  # 300 utterances in batches of 8: 37 steps a full epoch, 26 a keep-0.7 epoch (210 kept)
  assert row["steps"] == seen["steps"] == steps
  assert getattr(seen["sampler"], "warmup_epochs", None) == warmup


def test_synthesized_corpora_differ_only_in_training_hours(monkeypatch, tmp_path):
  from sparse_sr.data import corpus
  import jaxrepro.data
  made = {}
  monkeypatch.setattr(corpus, "make_espeak_corpus",
                      lambda folder, config: made.__setitem__(Path(folder).name, config))
  monkeypatch.setattr(jaxrepro.data, "resolve_data", _no_fsdd)
  assert set(bench.corpora(False, tmp_path, ("espeak", "espeak-1h"))) == {"espeak",
                                                                          "espeak-1h"}
  small, large = made["espeak"], made["espeak-1h"]
  assert (small.hours, large.hours) == (0.3, 1.0)
  # same phrases, voices and seed: the test split (its own random stream) is the same one
  assert dataclasses.replace(large, hours=small.hours) == small
  made.clear()
  assert set(bench.corpora(False, tmp_path)) == {"espeak"}    # espeak-1h only when asked for
  assert set(made) == {"espeak"}
  made.clear()
  assert bench.corpora(True, tmp_path, ("espeak-1h",))["espeak-1h"][0].name == "espeak-1h-quick"
  assert made["espeak-1h-quick"].hours == 0.1
  assert bench.EPOCHS.keys() == set(bench.CORPORA)


def _no_fsdd(relative, **kwargs):
  raise FileNotFoundError(f"{relative}: not here")
