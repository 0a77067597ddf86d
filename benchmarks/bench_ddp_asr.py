"""DDP-ASR (arXiv:2406.18373): dynamic data pruning against full data and random pruning.

Audio ASR from scratch, same number of epochs for every variant: full data; random pruning
(the baseline) and keep-easy / keep-hard / easy-to-hard pruning at ``keep=0.7`` (one warm-up
epoch on everything scores every utterance); and instance pruning combined with time-wise chunk
and point dropping (30% of frames, re-packed to shorter padded lengths) against random pruning
with the same chunk drop. Every variant trains in this one process, one after the other.
``train_seconds`` is the real time of the training steps, data loading, time-drop and sampler
updates included, without the steps that compiled; ``speedup`` is full data's over the
variant's. ``wall_seconds`` is the real time of the whole :func:`sparse_sr.train.train` call,
compilation included where the variant compiled (a variant reuses the compiled step of an
earlier one with the same number of steps): a constant per run that real training lengths make
negligible, so no ratio is taken of it. WER/CER: greedy CTC on the held-out split after training.

Data: FSDD (real recordings; evaluated on the official test takes 0-4) when found by
``jaxrepro.data.resolve_data("speech/fsdd")``, else the embedded espeak-ng corpus synthesized
into ``out_dir`` (0.3 hours; 0.1 with ``--quick``).

``--quick`` (about 3 minutes on 2 shared CPU cores, mostly compilation): conformer-nano, a
fixed random 640 of the FSDD training utterances, 4 epochs of batch 32, one length bucket,
variants full / random+chunk / easy2hard+chunk; far too little training for a meaningful WER
(every variant ends at WER 100%). The default configuration learns on 2 CPU cores (about 7
minutes of CPU time, 25 minutes wall at load ~10): all 2 250 FSDD training utterances,
conformer-tiny with the speech stack's short-run recipe (``jaxrepro speech train --quick``: CTC
weight 0.9, no dropout, no SpecAugment, batch 16, peak LR 2e-3), 4 epochs, two length buckets;
full data, random pruning with and without chunk drop, and keep-easy / keep-hard / easy-to-hard
with chunk drop (easy-to-hard also without).

Run: ``python -m benchmarks.bench_ddp_asr [--quick]`` or ``jaxrepro bench ddp_asr [--quick]``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main

TARGET = {"speedup": 1.4, "wer_gap_points": 1.0}
QUICK_VARIANTS = [("full", "none", "none"), ("random+chunk", "random", "chunk"),
                  ("easy2hard+chunk", "easy2hard", "chunk")]
VARIANTS = [("full", "none", "none"), ("random", "random", "none"),
            ("random+chunk", "random", "chunk"), ("easy+chunk", "easy", "chunk"),
            ("hard+chunk", "hard", "chunk"), ("easy2hard+chunk", "easy2hard", "chunk"),
            ("easy2hard", "easy2hard", "none")]


def corpora(quick: bool, out_dir: Path) -> dict[str, tuple[Path, str]]:
  """``name -> (corpus folder, description)``."""
  from jaxrepro.data import resolve_data
  from sparse_sr.data import corpus
  found = {}
  try:
    source = resolve_data("speech/fsdd")
    folder = out_dir / "ddp_asr_corpora" / "fsdd"
    if not (folder / "train.jsonl").is_file():
      corpus.make_fsdd_corpus(source.path, folder, "george")
    found["fsdd"] = (folder, source.describe())
  except FileNotFoundError as missing:
    print(f"FSDD not found ({missing}); using the embedded espeak-ng synthesized corpus")
  if not found:
    folder = out_dir / "ddp_asr_corpora" / "espeak"
    if not (folder / "train.jsonl").is_file():
      corpus.make_espeak_corpus(folder, corpus.EspeakCorpusConfig(
          hours=0.1 if quick else 0.3, test_utterances=100, max_words=2, vocab_size=200,
          video=False))
    found["espeak"] = (folder, "embedded:espeak-ng synthesized corpus")
  return found


CTC_WEIGHT = 0.9  # issue 7's small-data recipe: CTC-heavy loss, no dropout, no SpecAugment


def small_data_model(model: str, vocab_size: int, modality: str):
  """``preset(model)`` without dropout or SpecAugment, which only slow learning from scratch
  on these small corpora."""
  import dataclasses

  from sparse_sr.model import PRESETS, preset
  base = PRESETS[model]
  return preset(model, vocab_size, modality, spec_augment=None,
                encoder=dataclasses.replace(base["encoder"], dropout=0.0),
                decoder=dataclasses.replace(base["decoder"], dropout=0.0))


def run_variant(prune: str, time_drop: str, train_set, test_set, *, model: str, epochs: int,
                batch_size: int, learning_rate: float, num_buckets: int = 2,
                keep: float = 0.7, drop: float = 0.3, seed: int = 0) -> dict:
  from sparse_sr.ddp import TimeDrop, batches_per_epoch, make_sampler
  from sparse_sr.train import TrainConfig, evaluate, train
  n = len(train_set)
  per_epoch = batches_per_epoch(n, batch_size)
  kept = per_epoch if prune == "none" else batches_per_epoch(round(keep * n), batch_size)
  steps = per_epoch + (epochs - 1) * kept  # the first epoch visits everything
  config = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       warmup_steps=max(1, steps // 10), eval_every=10 ** 9,
                       checkpoint_every=10 ** 9, log_every=max(1, steps // 20),
                       num_buckets=num_buckets, ctc_weight=CTC_WEIGHT, seed=seed)
  sampler = make_sampler(prune, n, keep, seed=seed, total_epochs=epochs)
  transform = None if time_drop == "none" else TimeDrop(time_drop, drop)
  model_config = small_data_model(model, train_set.tokenizer.vocab_size, "audio")
  start, cpu_start = time.perf_counter(), time.process_time()
  result = train(model_config, config, train_set, sampler=sampler, transform=transform,
                 quiet=True)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  scores = evaluate(result["model"], test_set, batch_size=64)
  return {"steps": steps, "wall_seconds": wall, "cpu_seconds": cpu,
          "train_seconds": result["steady_seconds"],
          "wer": scores["greedy_ctc"]["wer"], "cer": scores["greedy_ctc"]["cer"],
          "attention_wer": scores["greedy_attention"]["wer"],
          "final_loss": result["history"][-1]["loss"]}


@benchmark("ddp_asr")
def run(quick: bool, out_dir: Path) -> Report:
  from sparse_sr.data import corpus
  from sparse_sr.data.loader import Dataset
  from sparse_sr.tokenizer import CharTokenizer
  settings = (dict(model="conformer-nano", epochs=4, batch_size=32, learning_rate=3e-3,
                   num_buckets=1)
              if quick else dict(model="conformer-tiny", epochs=4, batch_size=16,
                                 learning_rate=2e-3, num_buckets=2))
  variants = QUICK_VARIANTS if quick else VARIANTS
  found = corpora(quick, out_dir)
  tokenizer = CharTokenizer()
  metrics, data = {}, {}
  for name, (folder, description) in found.items():
    data[name] = description
    utterances = corpus.read_manifest(folder / "train.jsonl")
    if quick:  # a fixed random subset (the manifest is ordered by speaker and digit)
      pick = np.random.default_rng(0).permutation(len(utterances))[:640]
      utterances = [utterances[i] for i in sorted(pick)]
    train_set = Dataset(utterances, tokenizer)
    test_path = sorted(folder.glob("test*.jsonl"))[0]
    test_set = Dataset(corpus.read_manifest(test_path), tokenizer)
    rows = {label: run_variant(prune, drop, train_set, test_set, **settings)
            for label, prune, drop in variants}
    full = rows["full"]
    for row in rows.values():
      row["speedup"] = full["train_seconds"] / row["train_seconds"]
      row["wer_gap_points"] = 100 * (row["wer"] - full["wer"])
      row["cer_gap_points"] = 100 * (row["cer"] - full["cer"])
    verdicts = {}
    for label, row in rows.items():
      if label in ("full",) or label.startswith("random"):
        continue
      baseline = "random+chunk" if "+" in label and "random+chunk" in rows else "random"
      verdicts[label] = {
          "speedup_at_least_1.4": row["speedup"] >= TARGET["speedup"],
          "wer_within_1_point": row["wer_gap_points"] <= TARGET["wer_gap_points"],
          "random_baseline": baseline,
          "beats_random_same_budget": row["wer"] < rows[baseline]["wer"]}
    metrics[name] = {"train_utterances": len(train_set), "test_split": test_path.stem,
                     "test_utterances": len(test_set), "variants": rows,
                     "targets_met": verdicts}
  return Report(
      "ddp_asr", "python -m benchmarks.bench_ddp_asr" + (" --quick" if quick else ""),
      config={**settings, "keep": 0.7, "drop": 0.3, "warmup_epochs": 1,
              "variants": [v[0] for v in variants], "target": TARGET},
      data=data, metrics=metrics,
      timings={name: {label: {"train_seconds": row["train_seconds"],
                              "wall_seconds": row["wall_seconds"],
                              "cpu_seconds": row["cpu_seconds"]}
                      for label, row in m["variants"].items()}
               for name, m in metrics.items()},
      notes=["all variants measured one after the other in one process (on CPU: shared with "
             "other jobs); train_seconds excludes the steps that compiled, wall_seconds "
             "includes each variant's compilation",
             "WER/CER: greedy CTC decoding of the held-out split, one seed (on FSDD's 300 "
             "one-word test utterances one error is 0.33 WER points)"])


if __name__ == "__main__":
  benchmark_main(run, __doc__.splitlines()[0])
