"""MSRS (arXiv:2406.17614) against dense, magnitude pruning at init, SET and RigL, from scratch.

VSR (video only, synthetic mouth corpus) and AVSR models trained from scratch with every
method, same steps, data, target sparsity (0.5 of the masked kernels) and optimizer. Reported
per run: CER/WER (greedy CTC, held-out voices) against cumulative real training time (each
run's compilation included, and without the steps that compiled) and step, the step at which
the MSRS mask became stable, final weight sparsity, and per-layer-group gradient-norm
statistics over the first steps (the paper's gradient-flow argument, Sec. 5: the sparse
model's gradients reach the front end).

Target (the paper's claim): MSRS reaches the dense model's final CER in at most half of the
dense run's training time, or trains where dense fails (final CER above ``FAIL_CER``);
``verdict`` says which, if either, happened.

``--quick`` (a pipeline check; mostly compilation): VSR only, conformer-nano, 40 steps of
batch 8 on 0.02 hours of spoken digit words with mouth video, methods dense / magnitude /
MSRS (sparse switch); far too little to learn lip reading. ``--medium`` (CPU-sized; dense and
both MSRS switches take 3-3.5 minutes on 2 idle cores): VSR only, conformer-nano, 200 steps
of batch 16 on a small-vocabulary lip-reading task (the ten digit words, 0.1 hours, 552
utterances; 60 held-out utterances in voices, hence lip geometries, never seen in training),
on which the dense model does learn (CER 52% after 200 steps in a pilot run), evaluated every
20 steps: dense, MSRS with both switches, then magnitude pruning at init, SET and RigL. Each
finished run is appended to ``<out>/msrs_rows.jsonl``. Full (for a GPU; about an hour per run
on 2 CPU cores): VSR and AVSR, conformer-tiny, 1500 steps of batch 32 on the 1-hour sentence
corpus, all six methods. ``--words``: as ``--medium`` for 150 steps on single words of a
20-word vocabulary (0.05 hours, 32 held-out utterances), chosen because dense reached only
90% CER after 150 steps in an earlier run (on a re-synthesized corpus it reached 65%), dense
and MSRS with both switches. MSRS uses the defaults
of :func:`sparse_sr.sparse_methods.sparse_training` everywhere: the mask is learned in the
first 10% of the steps.

Options: ``--model NAME`` replaces the size's model by a preset of
:data:`sparse_sr.model.PRESETS` (e.g. ``--medium --model conformer-tiny``: the same task, corpus
and schedule with a larger model); ``--seed N`` (default 0) seeds initialization, data order
and masks; ``--methods a,b`` runs only those of the size's methods (labels of ``dense``,
``magnitude``, ``set``, ``rigl``, ``msrs-dense``, ``msrs-sparse``), in the order given;
``--modalities M[,M]`` trains those models (``video``: VSR, ``av``: AVSR; default ``video``,
``video,av`` for the full size) on the size's corpus; ``--learning-rate X`` replaces the
size's peak learning rate (3e-3, 2e-3 for the full size); ``--evals N`` evaluates N times,
evenly spaced (default 10): a finer curve locates the step at which MSRS first reaches dense's
final CER more precisely, and evaluation neither changes the training trajectory nor counts
in the training time. Rows record size, modality, method label, model, seed, learning rate and
number of evaluations, and ``--resume`` reuses only rows whose seven agree, so runs of
different models, seeds, learning rates or curve resolutions share one ``msrs_rows.jsonl``
without mixing (rows written before a field was recorded ran the size's default). The verdict
needs a dense row of the same configuration (run now or resumed).

Run: ``python -m benchmarks.bench_msrs [--quick | --medium | --words] [--model NAME]
[--seed N] [--methods a,b] [--modalities M[,M]] [--learning-rate X] [--evals N] [--resume]`` or
``jaxrepro bench msrs [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main

FAIL_CER = 0.8
SPARSITY = 0.5
MODALITIES = ("video", "av")  # VSR, AVSR
QUICK_METHODS = [("dense", "none", "sparse"), ("magnitude", "magnitude", "sparse"),
                 ("msrs-sparse", "msrs", "sparse")]
ALL_METHODS = [("dense", "none", "sparse"), ("magnitude", "magnitude", "sparse"),
               ("set", "set", "sparse"), ("rigl", "rigl", "sparse"),
               ("msrs-dense", "msrs", "dense"), ("msrs-sparse", "msrs", "sparse")]


def make_corpus(size: str, out_dir: Path) -> Path:
  from sparse_sr.cli import FULL_CORPUS
  from sparse_sr.data import corpus
  folder = out_dir / "msrs_corpus" / size
  if not (folder / "train.jsonl").is_file():
    digits = dict(texts=corpus.DIGIT_WORDS)  # a small-vocabulary lip-reading task
    settings = {"quick": dict(hours=0.02, test_utterances=16, **digits),
                "medium": dict(hours=0.1, test_utterances=60, **digits),
                # single words of a 20-word vocabulary (dense was at 90% CER after 150 steps once)
                "words": dict(hours=0.05, test_utterances=32, max_words=1, vocab_size=20),
                "full": FULL_CORPUS}[size]
    corpus.make_espeak_corpus(folder, corpus.EspeakCorpusConfig(**settings, video=True))
  return folder


def layer_group(name: str) -> str:
  """``video_encoder/blocks/0/ff1/up/kernel`` -> ``video_encoder/blocks/0``: a layer."""
  parts = name.split("/")
  if parts[0] in ("weights", "logits"):
    parts = parts[1:]
  depth = 3 if len(parts) > 2 and parts[1] in ("blocks", "stages") else 2
  return "/".join(parts[:depth])


def gradient_flow(records: list[dict]) -> dict[str, dict[str, float]]:
  """Per layer group: the gradient norm (L2 over its weight leaves) at each early step,
  summarized by median, min and max over the steps."""
  groups: dict[str, list[float]] = {}
  for record in records:
    squares: dict[str, float] = {}
    for name, value in record.items():
      if name == "step" or name.startswith("logits/"):
        continue
      squares[layer_group(name)] = squares.get(layer_group(name), 0.0) + value ** 2
    for group, total in squares.items():
      groups.setdefault(group, []).append(total ** 0.5)
  return {g: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}
          for g, v in sorted(groups.items())}


def pick_modalities(size: str, names: tuple[str, ...] | None) -> tuple[str, ...]:
  """The models to train, from ``names`` (``video``, ``av``) in that order; by default
  ``video``, and both for the full size."""
  if names is None:
    return MODALITIES if size == "full" else ("video",)
  unknown = [name for name in names if name not in MODALITIES]
  if unknown or not names:
    raise ValueError(f"unknown modalities {unknown}; choose from {', '.join(MODALITIES)}")
  return tuple(dict.fromkeys(names))


def pick_methods(size_methods: list[tuple[str, str, str]],
                 labels: tuple[str, ...] | None) -> list[tuple[str, str, str]]:
  """The (label, method, switch) entries of ``size_methods`` named by ``labels``, in that
  order; all of them when ``labels`` is None."""
  if labels is None:
    return list(size_methods)
  known = {entry[0]: entry for entry in size_methods}
  unknown = [label for label in labels if label not in known]
  if unknown or not labels:
    raise ValueError(f"unknown methods {unknown} for this size; known: {', '.join(known)}")
  return [known[label] for label in dict.fromkeys(labels)]


KEY_FIELDS = ("size", "modality", "label", "model", "seed", "learning_rate", "evals")


def row_key(row: dict) -> tuple:
  """What a row of ``msrs_rows.jsonl`` was run with: (size, modality, label, model, seed,
  learning rate, evaluations). Rows written before model, seed, learning rate and evaluations
  were recorded ran the size's defaults, seed 0."""
  defaults = SETTINGS[row["size"]]
  return (row["size"], row["modality"], row["label"], row.get("model", defaults["model"]),
          row.get("seed", 0), float(row.get("learning_rate", defaults["learning_rate"])),
          int(row.get("evals", defaults["evals"])))


def finished_rows(rows_path: Path) -> dict[tuple, dict]:
  """The rows of ``rows_path`` by :func:`row_key`, without the key fields (a later row of
  the same key wins: a rerun replaces an earlier one)."""
  done = {}
  if rows_path.is_file():
    for line in rows_path.read_text().splitlines():
      row = json.loads(line)
      key = row_key(row)
      done[key] = {k: v for k, v in row.items() if k not in KEY_FIELDS}
  return done


def run_method(method: str, switch: str, modality: str, train_set, test_set, *, model: str,
               steps: int, batch_size: int, learning_rate: float, evals: int,
               norm_steps: int, msrs: dict, seed: int = 0) -> dict:
  from flax import nnx
  from benchmarks.bench_ddp_asr import CTC_WEIGHT, small_data_model
  from sparse_sr.msrs import zero_fraction
  from sparse_sr.sparse_methods import describe, sparse_training
  from sparse_sr.train import TrainConfig, make_optimizer, train
  config = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       warmup_steps=max(1, steps // 10), eval_every=max(1, steps // evals),
                       checkpoint_every=10 ** 9, log_every=max(1, steps // 20),
                       eval_batch_size=32, num_buckets=1, ctc_weight=CTC_WEIGHT, seed=seed)
  optimizer, reparam = sparse_training(method, make_optimizer(config), steps=steps,
                                       target_sparsity=SPARSITY, switch=switch, seed=seed,
                                       **(msrs if method == "msrs" else {}))
  model_config = small_data_model(model, train_set.tokenizer.vocab_size, modality)
  result = train(model_config, config, train_set, eval_data=test_set, optimizer=optimizer,
                 reparam=reparam, layer_norm_steps=norm_steps, quiet=True)
  curve = [{"step": e["step"], "seconds": e["seconds"], "steady_seconds": e["steady_seconds"],
            "cer": e["greedy_ctc"]["cer"], "wer": e["greedy_ctc"]["wer"]}
           for e in result["evaluations"]]
  row = {"config": describe(method, reparam), "curve": curve,
         "final_cer": curve[-1]["cer"], "final_wer": curve[-1]["wer"],
         "seconds": result["step_seconds"], "steady_seconds": result["steady_seconds"],
         "final_sparsity": zero_fraction(nnx.state(result["model"], nnx.Param)),
         "gradient_norms_early": gradient_flow(result["layer_grad_norms"]),
         "final_loss": result["history"][-1]["loss"]}
  if reparam is not None:
    stability = result["opt_state"].stability
    row["mask_stable_step"] = int(stability.stable_step)  # -1: never stabilized
    row["switched"] = bool(int(result["opt_state"].phase))
    row["mask_sparsity"] = result["history"][-1]["mask_sparsity"]  # of the hard mask
    row["mask_history"] = [{k: h[k] for k in ("step", "mask_sparsity", "penalty_weight",
                                               "beta", "phase")} for h in result["history"]]
  return row


def steady_fraction(point: dict | None, dense: dict) -> float | None:
  """``point``'s cumulative time without compiling steps over the whole dense run's."""
  if point is None or "steady_seconds" not in point or "steady_seconds" not in dense:
    return None
  return point["steady_seconds"] / dense["steady_seconds"]


def verdict(rows: dict[str, dict]) -> dict:
  """Did MSRS reach dense's final CER in at most half of dense's time, or train where dense
  failed? The target is judged on real time with compilation included; the fraction of
  dense's time without the steps that compiled (``fraction_of_dense_steady_time``, None for
  rows recorded before it was) says how much of the difference is compilation, which at
  these CPU sizes is a sizeable share of a run and at the paper's scale is not."""
  dense = rows["dense"]
  target = dense["final_cer"]
  out = {"dense_final_cer": target, "dense_seconds": dense["seconds"],
         "dense_failed": target > FAIL_CER}
  for label, row in rows.items():
    if not label.startswith("msrs"):
      continue
    # against a failed dense run "reaching its CER" means nothing: only the second test counts
    reached = [p for p in row["curve"] if p["cer"] <= target] if target <= FAIL_CER else []
    first = reached[0] if reached else None
    out[label] = {
        "seconds_to_dense_cer": first["seconds"] if first else None,
        "fraction_of_dense_time": first["seconds"] / dense["seconds"] if first else None,
        "fraction_of_dense_steady_time": steady_fraction(first, dense),
        "fraction_of_dense_steps": first["step"] / dense["curve"][-1]["step"] if first
        else None,
        "half_time_target_met": bool(first and first["seconds"] <= 0.5 * dense["seconds"]),
        "trains_where_dense_fails": bool(target > FAIL_CER and row["final_cer"] <= FAIL_CER)}
  return out


SETTINGS = {
    "quick": dict(model="conformer-nano", steps=40, batch_size=8, learning_rate=3e-3,
                  evals=2, norm_steps=5, msrs={}),
    "medium": dict(model="conformer-nano", steps=200, batch_size=16, learning_rate=3e-3,
                   evals=10, norm_steps=10, msrs={}),
    "words": dict(model="conformer-nano", steps=150, batch_size=16, learning_rate=3e-3,
                  evals=10, norm_steps=10, msrs={}),
    "full": dict(model="conformer-tiny", steps=1500, batch_size=32, learning_rate=2e-3,
                 evals=10, norm_steps=50, msrs={}),
}
MEDIUM_METHODS = [("dense", "none", "sparse"), ("msrs-sparse", "msrs", "sparse"),
                  ("msrs-dense", "msrs", "dense"), ("magnitude", "magnitude", "sparse"),
                  ("set", "set", "sparse"), ("rigl", "rigl", "sparse")]
WORDS_METHODS = MEDIUM_METHODS[:3]


@benchmark("msrs")
def run(quick: bool, out_dir: Path, size: str | None = None, resume: bool = False,
        model: str | None = None, seed: int = 0,
        method_labels: tuple[str, ...] | None = None,
        modalities: tuple[str, ...] | None = None,
        learning_rate: float | None = None, evals: int | None = None) -> Report:
  """``size``: ``quick``, ``medium`` (``--medium``: VSR, dense vs MSRS, on a CPU),
  ``words`` (``--words``: the same on 20 single words) or ``full``; by default ``quick`` or
  ``full`` as ``quick`` says. ``resume`` (``--resume``) reuses the runs already in
  ``<out>/msrs_rows.jsonl`` of this configuration (size, modality, model, seed, learning
  rate) instead of rerunning.
  ``model`` (``--model``) replaces the size's model preset, ``seed`` (``--seed``) seeds
  everything, ``method_labels`` (``--methods``) picks a subset of the size's methods,
  ``modalities`` (``--modalities``) the models (``video``, ``av``), ``learning_rate``
  (``--learning-rate``) replaces the size's peak learning rate, ``evals`` (``--evals``) the
  number of evaluations."""
  from sparse_sr.data import corpus
  from sparse_sr.data.loader import Dataset
  from sparse_sr.model import PRESETS
  from sparse_sr.tokenizer import CharTokenizer
  size = size or ("quick" if quick else "full")
  if model is not None and model not in PRESETS:
    raise ValueError(f"unknown model {model!r}; choose from {sorted(PRESETS)}")
  if learning_rate is not None and not learning_rate > 0:
    raise ValueError(f"--learning-rate must be positive, got {learning_rate}")
  if evals is not None and not 1 <= evals <= SETTINGS[size]["steps"]:
    raise ValueError(f"--evals must be between 1 and the {SETTINGS[size]['steps']} steps, "
                     f"got {evals}")
  settings = {**SETTINGS[size], **({"model": model} if model else {}), "seed": seed,
              **({"learning_rate": float(learning_rate)} if learning_rate is not None else {}),
              **({"evals": evals} if evals is not None else {})}
  chosen_modalities = pick_modalities(size, modalities)
  methods = pick_methods({"quick": QUICK_METHODS, "medium": MEDIUM_METHODS,
                          "words": WORDS_METHODS, "full": ALL_METHODS}[size], method_labels)
  folder = make_corpus(size, out_dir)
  rows_path = out_dir / "msrs_rows.jsonl"
  done = finished_rows(rows_path) if resume else {}
  configuration = {"model": settings["model"], "seed": seed,
                   "learning_rate": settings["learning_rate"], "evals": settings["evals"]}
  tokenizer = CharTokenizer()
  metrics = {}
  for modality in chosen_modalities:
    uses = dict(use_audio=modality != "video", use_video=True)
    train_set = Dataset(corpus.read_manifest(folder / "train.jsonl"), tokenizer, **uses)
    test_set = Dataset(corpus.read_manifest(folder / "test.jsonl"), tokenizer, **uses)
    rows = {}
    for label, method, switch in methods:
      key = row_key({"size": size, "modality": modality, "label": label, **configuration})
      if key in done:
        rows[label] = done[key]
        continue
      rows[label] = run_method(method, switch, modality, train_set, test_set, **settings)
      with rows_path.open("a") as f:  # survives an interrupted run
        f.write(json.dumps({"size": size, "modality": modality, "label": label,
                            **configuration, **rows[label]}) + "\n")
    metrics[modality] = {"train_utterances": len(train_set),
                         "test_utterances": len(test_set), "runs": rows,
                         "verdict": verdict(rows) if "dense" in rows else None}
  _plot(metrics, out_dir)
  options = ("" if size == "full" else f" --{size}") + (f" --model {model}" if model else "") \
      + (f" --seed {seed}" if seed else "") \
      + (f" --methods {','.join(method_labels)}" if method_labels else "") \
      + (f" --modalities {','.join(modalities)}" if modalities else "") \
      + (f" --learning-rate {learning_rate:g}" if learning_rate is not None else "") \
      + (f" --evals {evals}" if evals is not None else "")
  return Report(
      "msrs", "python -m benchmarks.bench_msrs" + options,
      config={**settings, "target_sparsity": SPARSITY, "fail_cer": FAIL_CER,
              "methods": [m[0] for m in methods], "modalities": list(chosen_modalities)},
      data=f"embedded:espeak-ng synthesized corpus with synthetic mouth video ({folder})",
      metrics=metrics,
      timings={m: {label: row["seconds"] for label, row in v["runs"].items()}
               for m, v in metrics.items()},
      notes=["runs measured one after the other in one process (on CPU: shared with other "
             "jobs); seconds include each run's compilation",
             "CER/WER: greedy CTC on the held-out voices"])


def _plot(metrics: dict, out_dir: Path) -> None:
  from jaxrepro.metrics import plot_curves
  for modality, m in metrics.items():
    plot_curves({label: ([p["seconds"] for p in row["curve"]], [p["cer"] for p in row["curve"]])
                 for label, row in m["runs"].items()},
                out_dir / f"msrs_{modality}_cer_vs_time.png", xlabel="training seconds",
                ylabel="CER (greedy CTC)")


def _main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(add_help=False)
  sizes = parser.add_mutually_exclusive_group()
  for size in ("medium", "words"):
    sizes.add_argument(f"--{size}", dest="size", action="store_const", const=size)
  parser.add_argument("--resume", action="store_true")
  parser.add_argument("--model", default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--methods", dest="method_labels", default=None,
                      type=lambda s: tuple(s.split(",")))
  parser.add_argument("--modalities", default=None, type=lambda s: tuple(s.split(",")))
  parser.add_argument("--learning-rate", dest="learning_rate", type=float, default=None)
  parser.add_argument("--evals", type=int, default=None)
  extra, rest = parser.parse_known_args(argv)
  description = (__doc__.splitlines()[0] + " Also: --medium | --words (CPU-sized tasks), "
                 "--model NAME (a sparse_sr.model preset), --seed N (default 0), --methods a,b "
                 f"(of {', '.join(m[0] for m in ALL_METHODS)}), --modalities M[,M] (of "
                 f"{', '.join(MODALITIES)}; default video, both for the full size), "
                 "--learning-rate X (replaces the size's peak LR), --evals N (evaluations, "
                 "evenly spaced; default 10), --resume (reuse the finished runs of the same "
                 "size, model, seed, learning rate and evaluations in <out>/msrs_rows.jsonl).")
  benchmark_main(functools.partial(run, **vars(extra)), description, rest)


if __name__ == "__main__":
  _main()
