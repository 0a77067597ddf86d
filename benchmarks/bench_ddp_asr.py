"""DDP-ASR (arXiv:2406.18373): dynamic data pruning against full data and random pruning.

Audio ASR from scratch, the same number of epochs for every variant, trained to (near)
convergence as the paper's comparisons are: full data; random pruning (the baseline) and
easy-to-hard pruning (the paper's best instance-wise criterion) at ``keep=0.7``, re-selected
every epoch after one warm-up epoch on everything (which scores every utterance); and both
combined with time-wise dropping of 30% of the frames, as isolated 10 ms points or 100 ms
chunks (re-packed to shorter padded lengths; chunks are the paper's best time-wise
granularity). ``--variants`` picks among more (``ALL_VARIANTS``): point drop of 20%, 30 ms
chunks, and ``xf`` variants whose splices are crossfaded over 2.5 ms
(:func:`sparse_sr.ddp.splice_out`; a hard splice is a click in the log-mel), ``f`` variants
that drop log-mel frames inside the model (``domain="features"``), instance-wise ``hard``
(keep the highest running losses, i.e. drop the well-learned utterances: the observation
behind InfoBatch, arXiv:2303.04947, which drops a random part of the below-mean-loss samples
and rescales the rest's gradients instead) and ``easy``, and ``+w0`` variants with no warm-up epoch
(``warmup_epochs=0``: epoch 0 is already a random keep-0.7 subset, nothing being scored yet,
so all 8 epochs are pruned and the step ratio is about 1/0.7 instead of 1.36 on FSDD; their
random baseline ``random+w0`` has no warm-up either). Every pruned variant's label starts with
its strategy; its baseline is the same label with ``random`` in its place. The paper's
body was not retrievable here; the protocol follows its abstract (70% of the data matches
full data; chunk dropping plus instance pruning gives up to 1.6x) and a public summary of it
(per-epoch re-selection, easy2hard best, chunk better than point).

One addition not in DDP-ASR, as separate rows: annealing (InfoBatch, arXiv:2303.04947,
Sec. 3.3): the last epoch trains on all utterances, not time-dropped, so a model trained on
30%-faster time-dropped speech finishes on speech like the (undropped) test audio.

Timing (every variant in this one process, one after the other; the machine is shared, so
three ratios are given): ``steps`` (the compute budget: every step of one dataset costs the
same, the padded widths being fixed per length bucket, except that time-dropped steps are
shorter); ``train_seconds``, the real time of the steps that did not compile (data loading,
time-drop and sampler updates included), and ``cpu_seconds``, this process's CPU time in
those steps (less sensitive to other jobs); ``speedup`` and ``cpu_speedup`` are full data's
over the variant's. ``wall_seconds`` is the whole :func:`sparse_sr.train.train` call,
compilation included (a variant reuses the compiled step of an earlier one with the same
shapes, so its compile cost depends on the order: no ratio is taken of it). WER/CER: greedy
CTC (and greedy attention WER) on the held-out split after training; ``--seeds N`` runs
every variant with seeds 0..N-1 (model init, selection, time-drop) and reports each seed's
rows and their mean (ratios and targets of the means); one FSDD test error is 0.33 points.

Data: the embedded espeak-ng corpus (3-word phrases, 300-word vocabulary; 300 test
utterances in 5 held-out voices), synthesized into ``out_dir``; and FSDD (real recordings of
single digits; the official test takes 0-4, 300 utterances) when
``jaxrepro.data.resolve_data("speech/fsdd")`` finds it. Epochs per dataset: where the
full-data training loss of this recipe has flattened (see ``EPOCHS``), chosen without
looking at test scores. ``--corpus fsdd`` (or ``espeak``) runs one corpus only;
``--corpus espeak-1h`` (only when asked for) is the synthesized corpus with 1 hour of training
audio instead of 0.3 (3,357 utterances; the same phrases, voices and test split).

``--quick`` (about 70 s at load ~5 on 2 shared CPU cores, mostly compilation): conformer-nano, a
fixed random 640 of the FSDD training utterances (the espeak corpus without FSDD), 4 epochs
of batch 32, one length bucket, variants full / random+point / easy2hard+point; far too little
training for a meaningful WER.

Run: ``python -m benchmarks.bench_ddp_asr [--quick] [--corpus fsdd] [--seeds 2]
[--variants easy2hard+pointxf0.2,hard+w0,...]`` or ``jaxrepro bench ddp_asr [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main

TARGET = {"speedup": 1.4, "wer_gap_points": 1.0}
KEEP, DROP, WARMUP_EPOCHS = 0.7, 0.3, 1
CROSSFADE = 40  # samples (2.5 ms at 16 kHz) for the "xf" variants
CTC_WEIGHT = 0.9  # issue 7's small-data recipe: CTC-heavy loss, no dropout, no SpecAugment


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  prune: str = "none"        # sparse_sr.ddp.STRATEGIES
  time_drop: str = "none"    # "none" or sparse_sr.ddp.TIME_DROPS
  anneal_epochs: int = 0
  drop: float = DROP         # fraction of frames time-dropped
  chunk_frames: int = 10     # 10 ms frames per chunk (100 ms)
  crossfade: int = 0         # samples blended across each splice (sparse_sr.ddp.splice_out)
  domain: str = "waveform"   # sparse_sr.ddp.DROP_DOMAINS: cut audio hops or gather features
  warmup_epochs: int = WARMUP_EPOCHS  # full epochs before pruning (0: pruned from epoch 0)

  def __post_init__(self):
    if self.prune != "none" and not self.label.startswith(self.prune):
      raise ValueError(f"a pruned variant's label starts with its strategy: {self.label!r}")

  @property
  def baseline(self) -> str:
    """The random-pruning row with the same budget (warm-up, time-drop and annealing): the
    label with the strategy, its first part, replaced by ``random``."""
    if self.prune == "none":
      return self.label
    return "random" + self.label[len(self.prune):]


def _pair(suffix: str, strategies: tuple[str, ...] = ("easy2hard",), **kwargs
          ) -> tuple[Variant, ...]:
  """The random baseline and a variant per strategy in ``strategies``, all with the same
  warm-up, time-drop and annealing (``kwargs``), labelled ``<strategy><suffix>``."""
  return tuple(Variant(prune + suffix, prune, **kwargs)
               for prune in ("random", *strategies))


# Every variant the benchmark knows, by label (``--variants`` picks among them). Point drop
# removes isolated 10 ms hops: the 25 ms analysis windows overlap, so the neighbours of a
# dropped hop still cover most of its signal, whereas a 100 ms chunk can remove a whole
# character's frames.
ALL_VARIANTS = {v.label: v for v in (
    Variant("full"), *_pair("", ("easy2hard", "hard", "easy")),
    # no warm-up: epoch 0 is already a keep-0.7 subset (a random one: nothing is scored yet)
    *_pair("+w0", ("easy2hard", "hard", "easy"), warmup_epochs=0),
    *_pair("+point", time_drop="point"),
    *_pair("+chunk", time_drop="chunk"), *_pair("+chunk+anneal", time_drop="chunk",
                                                anneal_epochs=1),
    *_pair("+point+anneal", time_drop="point", anneal_epochs=1),
    *_pair("+point0.2", time_drop="point", drop=0.2),
    *_pair("+point0.2+anneal", time_drop="point", drop=0.2, anneal_epochs=1),
    *_pair("+chunk30ms", time_drop="chunk", chunk_frames=3),
    *_pair("+pointxf", time_drop="point", crossfade=CROSSFADE),
    *_pair("+pointxf0.2", time_drop="point", drop=0.2, crossfade=CROSSFADE),
    *_pair("+pointxf0.1", time_drop="point", drop=0.1, crossfade=CROSSFADE),
    *_pair("+pointxf0.2+anneal", time_drop="point", drop=0.2, crossfade=CROSSFADE,
           anneal_epochs=1),
    *_pair("+chunkxf", time_drop="chunk", crossfade=CROSSFADE),
    # feature domain: the kept log-mel frames of the whole waveform, no splice
    *_pair("+fpoint", time_drop="point", domain="features"),
    *_pair("+fpoint0.2", time_drop="point", drop=0.2, domain="features"),
    *_pair("+fpoint0.1", time_drop="point", drop=0.1, domain="features"),
    *_pair("+fpoint0.2+anneal", time_drop="point", drop=0.2, domain="features",
           anneal_epochs=1),
    *_pair("+fchunk", time_drop="chunk", domain="features"),
    *_pair("+fchunk0.2", time_drop="chunk", drop=0.2, domain="features"))}
QUICK_VARIANTS = ("full", "random+point", "easy2hard+point")
VARIANTS = ("full", "random", "easy2hard", "random+point", "easy2hard+point", "random+chunk",
            "easy2hard+chunk", "random+chunk+anneal", "easy2hard+chunk+anneal")
CORPORA = ("espeak", "espeak-1h", "fsdd")
# Epochs per dataset, where full data's training CTC loss per utterance flattens (FSDD: under
# 0.01 from epoch 7; espeak: about 0.03 from epoch 13 of a 16-epoch run; espeak-1h: 0.031 at
# epoch 13 of a 16-epoch run, 0.014 at 14, 0.004 at 16)
EPOCHS = {"espeak": 14, "espeak-1h": 14, "fsdd": 8}
ESPEAK = dict(hours=0.3, test_utterances=300, max_words=3, vocab_size=300, video=False)
# the synthesized corpora: "espeak-1h" is the same phrases, vocabulary, voices and test split
# (the test split depends only on seed, texts and test voices) with 3.3x the training audio,
# the size of `jaxrepro speech corpus`'s default; run only when asked for (--corpus)
SYNTHESIZED = {"espeak": ESPEAK, "espeak-1h": {**ESPEAK, "hours": 1.0}}


def corpora(quick: bool, out_dir: Path, names: tuple[str, ...] | None = None
            ) -> dict[str, tuple[Path, str]]:
  """``name -> (corpus folder, description)``: by default the 0.3-hour synthesized corpus
  (not with ``--quick`` when FSDD is found) and FSDD when found; ``names`` asks for those
  corpora only (FSDD then must be found)."""
  from jaxrepro.data import resolve_data
  from sparse_sr.data import corpus
  found = {}
  if names is None or "fsdd" in names:
    try:
      source = resolve_data("speech/fsdd")
      folder = out_dir / "ddp_asr_corpora" / "fsdd"
      if not (folder / "train.jsonl").is_file():
        corpus.make_fsdd_corpus(source.path, folder, "george")
      found["fsdd"] = (folder, source.describe())
    except FileNotFoundError as missing:
      if names is not None:
        raise FileNotFoundError(f"--corpus fsdd: FSDD not found ({missing})") from missing
      print(f"FSDD not found ({missing}); the synthesized corpus only")
  if names is None:
    names = () if quick and found else ("espeak",)
  synthesized = {}
  for name in (n for n in SYNTHESIZED if n in names):
    settings = {**SYNTHESIZED[name], **(dict(hours=0.1, test_utterances=100) if quick else {})}
    folder = out_dir / "ddp_asr_corpora" / (f"{name}-quick" if quick else name)
    if not (folder / "train.jsonl").is_file():
      corpus.make_espeak_corpus(folder, corpus.EspeakCorpusConfig(**settings))
    synthesized[name] = (folder, f"embedded:espeak-ng synthesized corpus, "
                                 f"{settings['hours']} h of training audio")
  return {**synthesized, **found}


def small_data_model(model: str, vocab_size: int, modality: str):
  """``preset(model)`` without dropout or SpecAugment, which only slow learning from scratch
  on these small corpora."""
  from sparse_sr.model import PRESETS, preset
  base = PRESETS[model]
  return preset(model, vocab_size, modality, spec_augment=None,
                encoder=dataclasses.replace(base["encoder"], dropout=0.0),
                decoder=dataclasses.replace(base["decoder"], dropout=0.0))


def run_variant(variant: Variant, train_set, test_set, *, model: str, epochs: int,
                batch_size: int, learning_rate: float, num_buckets: int = 2,
                seed: int = 0) -> dict:
  from sparse_sr.ddp import OutsideAnnealing, TimeDrop, make_sampler, run_steps
  from sparse_sr.train import TrainConfig, evaluate, train
  n = len(train_set)
  pruned = variant.prune != "none"
  steps = run_steps(n, batch_size, epochs, KEEP if pruned else 1.0,
                    warmup_epochs=variant.warmup_epochs, anneal_epochs=variant.anneal_epochs)
  config = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       warmup_steps=max(1, steps // 10), eval_every=10 ** 9,
                       checkpoint_every=10 ** 9, log_every=max(1, steps // 20),
                       num_buckets=num_buckets, ctc_weight=CTC_WEIGHT, seed=seed)
  extra = (dict(warmup_epochs=variant.warmup_epochs, anneal_epochs=variant.anneal_epochs)
           if pruned else {})
  sampler = make_sampler(variant.prune, n, KEEP, seed=seed, total_epochs=epochs, **extra)
  transform = None if variant.time_drop == "none" else TimeDrop(
      variant.time_drop, variant.drop, chunk_frames=variant.chunk_frames,
      crossfade=variant.crossfade, domain=variant.domain)
  if transform is not None and variant.anneal_epochs:
    transform = OutsideAnnealing(transform, sampler)
  model_config = small_data_model(model, train_set.tokenizer.vocab_size, "audio")
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  result = train(model_config, config, train_set, sampler=sampler, transform=transform,
                 quiet=True)
  wall = time.perf_counter() - start
  scores = evaluate(result["model"], test_set, batch_size=64)
  return {"steps": steps, "wall_seconds": wall, "train_seconds": result["steady_seconds"],
          "cpu_seconds": result["steady_cpu_seconds"],
          "wer": scores["greedy_ctc"]["wer"], "cer": scores["greedy_ctc"]["cer"],
          "attention_wer": scores["greedy_attention"]["wer"],
          "final_loss": result["history"][-1]["loss"],
          "load_average": [load_before, os.getloadavg()[0]]}


def compare(rows: dict[str, dict], variants) -> dict[str, dict]:
  """Ratios against full data, and the targets per DDP variant."""
  full = rows["full"]
  for row in rows.values():
    row["step_ratio"] = full["steps"] / row["steps"]
    row["speedup"] = full["train_seconds"] / row["train_seconds"]
    row["cpu_speedup"] = full["cpu_seconds"] / row["cpu_seconds"]
    row["wer_gap_points"] = 100 * (row["wer"] - full["wer"])
    row["cer_gap_points"] = 100 * (row["cer"] - full["cer"])
  verdicts = {}
  for v in variants:
    if v.prune in ("none", "random"):
      continue
    row, baseline = rows[v.label], rows[v.baseline]
    verdicts[v.label] = {
        "speedup_at_least_1.4": row["speedup"] >= TARGET["speedup"],
        "cpu_speedup_at_least_1.4": row["cpu_speedup"] >= TARGET["speedup"],
        # WERs are ratios of counts: 3 errors in 300 is 1.0000000000000009 points
        "wer_within_1_point": row["wer_gap_points"] <= TARGET["wer_gap_points"] + 1e-9,
        "random_baseline": v.baseline,
        "beats_random_same_budget": row["wer"] < baseline["wer"]}
  return verdicts


MEAN_KEYS = ("steps", "train_seconds", "cpu_seconds", "wall_seconds", "wer", "cer",
             "attention_wer", "final_loss")


def mean_rows(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
  """Each variant's times, WER/CER and loss averaged over the seeds (ratios are then taken
  of the means by :func:`compare`)."""
  return {label: {k: float(np.mean([rows[label][k] for rows in per_seed])) for k in MEAN_KEYS}
          for label in per_seed[0]}


def pick_variants(labels: tuple[str, ...]) -> tuple[Variant, ...]:
  """``labels`` in the order given, plus full data and each variant's random baseline
  (which every comparison needs) where missing."""
  unknown = [label for label in labels if label not in ALL_VARIANTS]
  if unknown:
    raise ValueError(f"unknown variants {unknown}; known: {', '.join(ALL_VARIANTS)}")
  wanted = ["full"]
  for label in labels:
    for needed in (ALL_VARIANTS[label].baseline, label):
      if needed not in wanted:
        wanted.append(needed)
  return tuple(ALL_VARIANTS[label] for label in wanted)


def markdown_table(rows: dict[str, dict]) -> str:
  """One corpus's rows (a seed's or the mean) as the README's table."""
  lines = ["| variant | steps (ratio) | train s, real / CPU | speedup, real / CPU | "
           "greedy-CTC WER / CER | greedy-attention WER |", "| --- | --- | --- | --- | --- | --- |"]
  for label, r in rows.items():
    lines.append(f"| {label} | {r['steps']:.0f} ({r['step_ratio']:.2f}) | "
                 f"{r['train_seconds']:.1f} / {r['cpu_seconds']:.1f} | "
                 f"{r['speedup']:.2f} / {r['cpu_speedup']:.2f} | "
                 f"{100 * r['wer']:.1f}% / {100 * r['cer']:.1f}% | "
                 f"{100 * r['attention_wer']:.1f}% |")
  return "\n".join(lines)


@benchmark("ddp_asr")
def run(quick: bool, out_dir: Path, corpus_names: tuple[str, ...] | None = None,
        seeds: int = 1, variant_labels: tuple[str, ...] | None = None) -> Report:
  """``corpus_names`` (default: every corpus found), ``seeds`` (0..seeds-1; every variant
  once per seed, the seeds' rows and their mean reported), ``variant_labels`` (default
  ``VARIANTS``, ``QUICK_VARIANTS`` with ``quick``; full data and the random baselines are
  added)."""
  from sparse_sr.data import corpus
  from sparse_sr.data.loader import Dataset
  from sparse_sr.tokenizer import CharTokenizer
  if seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {seeds}")
  if corpus_names is not None and not set(corpus_names) <= set(CORPORA):
    raise ValueError(f"--corpus must be among {CORPORA}, got {corpus_names}")
  settings = (dict(model="conformer-nano", batch_size=32, learning_rate=3e-3, num_buckets=1)
              if quick else dict(model="conformer-tiny", batch_size=16, learning_rate=2e-3,
                                 num_buckets=2))
  variants = pick_variants(variant_labels or (QUICK_VARIANTS if quick else VARIANTS))
  found = corpora(quick, out_dir, corpus_names)
  tokenizer = CharTokenizer()
  metrics, data, epochs_used, tables = {}, {}, {}, []
  for name, (folder, description) in found.items():
    data[name] = description
    utterances = corpus.read_manifest(folder / "train.jsonl")
    if quick and name == "fsdd":  # a fixed random subset (the manifest is ordered)
      pick = np.random.default_rng(0).permutation(len(utterances))[:640]
      utterances = [utterances[i] for i in sorted(pick)]
    train_set = Dataset(utterances, tokenizer)
    test_path = sorted(folder.glob("test*.jsonl"))[0]
    test_set = Dataset(corpus.read_manifest(test_path), tokenizer)
    epochs_used[name] = epochs = 4 if quick else EPOCHS[name]
    per_seed = []
    for seed in range(seeds):
      rows = {}
      for v in variants:
        rows[v.label] = run_variant(v, train_set, test_set, epochs=epochs, seed=seed,
                                    **settings)
        print(f"{name} seed {seed} {v.label}: {rows[v.label]}", flush=True)
      per_seed.append(rows)
    seed_verdicts = [compare(rows, variants) for rows in per_seed]
    mean = mean_rows(per_seed)
    verdicts = compare(mean, variants)
    metrics[name] = {"train_utterances": len(train_set), "test_split": test_path.stem,
                     "test_utterances": len(test_set), "epochs": epochs, "seeds": seeds,
                     "variants": mean if seeds > 1 else per_seed[0], "targets_met": verdicts}
    if seeds > 1:
      metrics[name]["per_seed"] = [{"variants": rows, "targets_met": v}
                                   for rows, v in zip(per_seed, seed_verdicts)]
    tables += [f"{name}, seed {seed}:\n{markdown_table(rows)}"
               for seed, rows in enumerate(per_seed)]
    if seeds > 1:
      tables.append(f"{name}, mean of {seeds} seeds:\n{markdown_table(mean)}")
  print("\n\n".join(tables))
  options = ((" --quick" if quick else "")
             + (f" --corpus {','.join(corpus_names)}" if corpus_names else "")
             + (f" --seeds {seeds}" if seeds > 1 else "")
             + (f" --variants {','.join(variant_labels)}" if variant_labels else ""))
  return Report(
      "ddp_asr", "python -m benchmarks.bench_ddp_asr" + options,
      config={**settings, "epochs": epochs_used, "keep": KEEP,
              "reselect": "every epoch", "seeds": list(range(seeds)),
              "variants": [dataclasses.asdict(v) for v in variants], "target": TARGET},
      data=data, metrics=metrics,
      timings={name: {label: {k: row[k] for k in ("train_seconds", "cpu_seconds",
                                                  "wall_seconds", "steps")}
                      for label, row in m["variants"].items()}
               for name, m in metrics.items()},
      notes=["all variants measured one after the other in one process on a CPU shared with "
             "other jobs (load_average per row: 1-minute load before and after); "
             "train_seconds / cpu_seconds exclude the steps that compiled, wall_seconds "
             "includes each variant's compilation",
             "WER/CER: greedy CTC decoding of the held-out split (300 test utterances: one "
             "FSDD error is 0.33 WER points); with several seeds `variants` and the targets "
             "are of the seeds' means, `per_seed` has each seed's rows"])


def _main() -> None:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--corpus", dest="corpus_names", default=None,
                      type=lambda s: tuple(s.split(",")))
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--variants", dest="variant_labels", default=None,
                      type=lambda s: tuple(s.split(",")))
  extra, rest = parser.parse_known_args()
  description = (__doc__.splitlines()[0] + " Also: --corpus fsdd|espeak|espeak,fsdd (default: "
                 "every corpus found), --seeds N (default 1), --variants a,b (labels of "
                 f"{', '.join(ALL_VARIANTS)}; full data and random baselines are added).")
  benchmark_main(functools.partial(run, **vars(extra)), description, rest)


if __name__ == "__main__":
  _main()
