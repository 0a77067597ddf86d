"""``jaxrepro speech make-corpus | train | eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from jaxrepro.cli import add_common_args

QUICK_CORPUS = dict(hours=0.3, test_utterances=100, max_words=2, vocab_size=200)
FULL_CORPUS = dict(hours=1.0, test_utterances=200, max_words=3, vocab_size=300)
# --quick trains from scratch in a couple of CPU minutes, where Auto-AVSR's recipe (CTC weight
# 0.1, dropout, SpecAugment) is still far from converged: a CTC-heavy loss aligns the encoder
# in a few hundred steps, and without dropout or SpecAugment the tiny model fits faster
# (ablation in the README's speech section).
QUICK_TRAIN = dict(steps=1000, batch_size=16, learning_rate=2e-3, warmup_steps=30,
                   eval_every=500, checkpoint_every=500)
QUICK_RECIPE = dict(ctc_weight=0.9, dropout=0.0, spec_augment="off")
PAPER_RECIPE = dict(ctc_weight=0.1, dropout=None, spec_augment="on")  # None: the preset's
VTLN_WARPS = tuple(round(0.8 + 0.05 * k, 2) for k in range(9))   # 0.8 .. 1.2
SPEAKER_CMVN_HELP = (
    "normalize features (log-mels or cepstra) by speaker-level statistics (Kaldi-style "
    "CMVN) instead of per utterance: training speakers by their training recordings; a "
    "speaker not in training by the pooled training statistics (split NAME), and, on the "
    "evaluation half of its recordings, also by the statistics of its adaptation half "
    "(NAME_eval_half_adapted, beside NAME_eval_half unadapted); transcripts of the adaptation "
    "half are never read")
PRIOR_MATCHING_HELP = (
    "with --speaker-cmvn and --closed-vocabulary: also decide NAME_eval_half_adapted with "
    "per-word offsets that make the model's mean posterior over the speaker's adaptation half "
    "uniform (its transcripts are never read), as split NAME_eval_half_adapted_prior_matched")
SELF_TRAIN_HELP = (
    "with --prior-matching: after training, adapt the model to each unseen speaker by ROUNDS "
    "rounds of class-balanced self-training on its adaptation half (prior-matched "
    "pseudo-labels, per word the 80%% most confident; 150 fine-tuning steps at LR 5e-4 with "
    "the training data; transcripts never read), reported as NAME_eval_half_self_trained and "
    "NAME_eval_half_self_trained_prior_matched (default 0: off)")
VTLN_HELP = ("also evaluate with test-time vocal tract length normalization: per speaker, "
             "the frequency warp in 0.8..1.2 under which the best CTC paths are most "
             "probable (no transcripts used); reported as split NAME_vtln")


def register(subparsers: argparse._SubParsersAction) -> None:
  speech = subparsers.add_parser("speech", help="speech recognition: corpora, training, "
                                 "evaluation (sparse_sr)")
  commands = speech.add_subparsers(dest="command", metavar="COMMAND", required=True)

  corpus = commands.add_parser("make-corpus", help="synthesize (espeak) or index (fsdd, "
                               "pocketsphinx) a corpus: wavs + manifest JSONL")
  add_common_args(corpus, data_help="FSDD folder for --kind fsdd (default: $JAXREPRO_DATA/"
                  "speech/fsdd, then ../shared/data/speech/fsdd)")
  corpus.add_argument("--kind", choices=("espeak", "fsdd", "pocketsphinx"), default="espeak")
  corpus.add_argument("--hours", type=float, default=None,
                      help="hours of training audio to synthesize (espeak; default 1, "
                      "--quick 0.3)")
  corpus.add_argument("--test-utterances", type=int, default=None,
                      help="held-out-voice test utterances (espeak; default 200, --quick 100)")
  corpus.add_argument("--max-words", type=int, default=None,
                      help="words per phrase (espeak; default 3, --quick 2)")
  corpus.add_argument("--vocab-size", type=int, default=None,
                      help="keep phrases of the N most frequent words; 0: all words "
                      "(espeak; default 300, --quick 200)")
  corpus.add_argument("--no-video", action="store_true", help="skip the synthetic mouth video")
  corpus.add_argument("--all-voices", action="store_true",
                      help="espeak: train on every voice variant in the wheel (99) in every "
                      "English accent (8), not the 24 default variants in en-us and en")
  corpus.add_argument("--holdout-speaker", default="george", help="FSDD speaker kept out "
                      "of training (evaluated as split test_speaker)")
  corpus.add_argument("--synthetic-digits", type=int, default=0,
                      help="fsdd: add N espeak-ng digit recordings (random voices, accents, "
                      "rates, pitches; 8 kHz) to the training split (default 0)")
  corpus.set_defaults(func=cmd_make_corpus)

  train = commands.add_parser("train", help="train a Conformer hybrid CTC/attention model")
  add_common_args(train, data_help="corpus folder with train.jsonl and test*.jsonl (default: "
                  "synthesize an espeak corpus into OUT/corpus, the embedded default)")
  train.add_argument("--modality", choices=("audio", "video", "av"), default="audio")
  train.add_argument("--model", default="conformer-tiny",
                     help="conformer-nano | conformer-tiny | conformer-small | conformer-base "
                     "(Auto-AVSR's 12-layer d=768)")
  train.add_argument("--steps", type=int, default=None, help="training steps (default 3000, "
                     f"--quick {QUICK_TRAIN['steps']})")
  train.add_argument("--batch-size", type=int, default=None)
  train.add_argument("--lr", type=float, default=None, help="peak learning rate")
  train.add_argument("--warmup-steps", type=int, default=None,
                     help="linear warm-up steps (default 300, --quick 30)")
  train.add_argument("--ctc-weight", type=float, default=None,
                     help="weight of CTC in the hybrid loss (default 0.1 as Auto-AVSR; "
                     f"--quick {QUICK_RECIPE['ctc_weight']})")
  train.add_argument("--dropout", type=float, default=None,
                     help="encoder and decoder dropout (default: the preset's; --quick 0)")
  train.add_argument("--spec-augment", choices=("on", "off"), default=None,
                     help="SpecAugment while training (default on; --quick off)")
  train.add_argument("--vtlp", type=float, default=0.0,
                     help="vocal tract length perturbation while training: warp factors "
                     "drawn from 1 +- VTLP per utterance, e.g. 0.15 (default 0: off)")
  train.add_argument("--n-mels", type=int, default=None,
                     help="mel bands (default 80, as Auto-AVSR); fewer, wider bands blur "
                     "the pitch harmonics of individual speakers. SpecAugment's widest "
                     "frequency mask scales with it")
  train.add_argument("--mfcc", type=int, default=0, metavar="C",
                     help="feed the model C mel-frequency cepstral coefficients (DCT-II of "
                     "the log-mels: the spectral envelope without the pitch harmonics) instead "
                     "of the log-mels, e.g. 20 (default 0: log-mels). SpecAugment's widest "
                     "frequency mask scales with the feature count")
  train.add_argument("--lifter", type=float, default=0.0,
                     help="with --mfcc: sinusoidal cepstral liftering, e.g. 22 (default 0: none)")
  train.add_argument("--tempo", type=float, default=0.0,
                     help="tempo perturbation while training: speaking rates drawn from "
                     "1 +- TEMPO per utterance, e.g. 0.1; with --vtlp, speed perturbation "
                     "(default 0: off)")
  train.add_argument("--label-smoothing", type=float, default=0.1)
  train.add_argument("--eval-every", type=int, default=None)
  train.add_argument("--beam", type=int, default=0,
                     help="also decode the final evaluation with joint CTC/attention beam "
                     "search of this width (0: greedy CTC only)")
  train.add_argument("--closed-vocabulary", action="store_true",
                     help="also score closed-vocabulary recognition: the best of the distinct "
                     "training transcripts (e.g. FSDD's ten digit words)")
  train.add_argument("--vtln", action="store_true", help=VTLN_HELP)
  train.add_argument("--speaker-cmvn", action="store_true", help=SPEAKER_CMVN_HELP)
  train.add_argument("--prior-matching", action="store_true", help=PRIOR_MATCHING_HELP)
  train.add_argument("--self-train", type=int, default=0, metavar="ROUNDS",
                     help=SELF_TRAIN_HELP)
  train.add_argument("--adaptation-takes", type=int, default=25,
                     help="with --speaker-cmvn: an unseen FSDD speaker's takes below this "
                     "index form the (unlabelled) adaptation half, the others the evaluation "
                     "half (default 25)")
  train.add_argument("--tokenizer", choices=("char", "sentencepiece"), default="char")
  train.add_argument("--mesh", default=None, help="device mesh, e.g. data=2 (default: all "
                     "devices on the data axis)")
  train.add_argument("--workdir", default=None, help="checkpoints and metrics (default "
                     "OUT/run); an existing run resumes")
  add_sparse_and_pruning_args(train)
  train.set_defaults(func=cmd_train)

  evaluate = commands.add_parser("eval", help="WER/CER of a trained model on a corpus split")
  add_common_args(evaluate, data_help="corpus folder (default: the one it was trained on)")
  evaluate.add_argument("--ckpt", required=True, help="the training workdir")
  evaluate.add_argument("--split", default=None, help="manifest name (default: every test*)")
  evaluate.add_argument("--beam", type=int, default=0)
  evaluate.add_argument("--ctc-weight", type=float, default=0.3,
                        help="CTC weight in joint decoding")
  evaluate.add_argument("--closed-vocabulary", action="store_true",
                        help="also pick the best of the distinct training transcripts")
  evaluate.add_argument("--vtln", action="store_true", help=VTLN_HELP)
  evaluate.add_argument("--prior-matching", action="store_true", help=PRIOR_MATCHING_HELP)
  evaluate.set_defaults(func=cmd_eval)


def add_sparse_and_pruning_args(parser: argparse.ArgumentParser) -> None:
  """MSRS and its baselines (arXiv:2406.17614), DDP-ASR data pruning (arXiv:2406.18373)."""
  from sparse_sr.ddp import DROP_DOMAINS, STRATEGIES, TIME_DROPS
  from sparse_sr.sparse_methods import METHODS
  parser.add_argument("--sparse", choices=METHODS, default="none",
                      help="sparse training: MSRS, SET, RigL, magnitude pruning at init, or "
                      "dense (none)")
  parser.add_argument("--sparsity", type=float, default=0.5,
                      help="target fraction of zero weights in the masked kernels")
  parser.add_argument("--msrs-switch", choices=("dense", "sparse"), default="sparse",
                      help="after the MSRS mask is stable: train the dense model, or only "
                      "the unpruned weights")
  parser.add_argument("--prune", choices=STRATEGIES, default="none",
                      help="dynamic data pruning: which utterances each epoch keeps")
  parser.add_argument("--keep", type=float, default=0.7, help="fraction of utterances kept")
  parser.add_argument("--prune-warmup-epochs", type=int, default=None, metavar="N",
                      help="epochs on all utterances before pruning starts, which score "
                      "every utterance (default 1; 0: the first epoch is already a random "
                      "--keep subset)")
  parser.add_argument("--reselect-every", type=int, default=0, metavar="N",
                      help="re-select the kept utterances every N steps (at most one epoch; "
                      "default 0: every epoch)")
  parser.add_argument("--time-drop", choices=("none",) + TIME_DROPS, default="none",
                      help="drop feature frames inside utterances as points or chunks")
  parser.add_argument("--drop", type=float, default=0.3, help="fraction of frames dropped")
  parser.add_argument("--time-drop-domain", choices=DROP_DOMAINS, default="waveform",
                      help="cut the frames' hops out of the waveform, or gather the kept "
                      "log-mel frames inside the model (no splice; default waveform)")
  parser.add_argument("--anneal-epochs", type=int, default=0, metavar="N",
                      help="end pruning with N epochs on all utterances, not time-dropped "
                      "(InfoBatch's annealing; default 0)")


def check_sparse_and_pruning_args(args) -> None:
  if not 0.0 <= args.sparsity < 1.0:
    raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
  if not 0.0 < args.keep <= 1.0:
    raise ValueError(f"--keep must be in (0, 1], got {args.keep}")
  if not 0.0 <= args.drop < 1.0:
    raise ValueError(f"--drop must be in [0, 1), got {args.drop}")
  if args.reselect_every < 0:
    raise ValueError(f"--reselect-every must be >= 0, got {args.reselect_every}")
  if args.anneal_epochs < 0:
    raise ValueError(f"--anneal-epochs must be >= 0, got {args.anneal_epochs}")
  if args.prune_warmup_epochs is not None and args.prune_warmup_epochs < 0:
    raise ValueError(f"--prune-warmup-epochs must be >= 0, got {args.prune_warmup_epochs}")
  if args.prune_warmup_epochs is not None and args.prune == "none":
    raise ValueError("--prune-warmup-epochs needs --prune random|easy|hard|easy2hard")
  if args.anneal_epochs and args.prune == "none":
    raise ValueError("--anneal-epochs needs --prune random|easy|hard|easy2hard")
  if args.anneal_epochs and args.reselect_every:
    raise ValueError("--anneal-epochs needs per-epoch selection (no --reselect-every)")
  if args.reselect_every and args.prune == "none":
    raise ValueError("--reselect-every needs --prune random|easy|hard|easy2hard")
  if args.modality != "audio" and args.time_drop != "none":
    raise ValueError("--time-drop applies to audio-only training (--modality audio)")


def prune_warmup_epochs(args) -> int:
  """``--prune-warmup-epochs``, 1 (the sampler's default) when not given."""
  return 1 if args.prune_warmup_epochs is None else args.prune_warmup_epochs


def sparse_and_pruning(args, optimizer, steps: int, num_examples: int, epochs: int,
                       batch_size: int):
  """``(optimizer, reparam, sampler, transform, config)`` from the flags above."""
  from sparse_sr.ddp import OutsideAnnealing, TimeDrop, make_sampler
  from sparse_sr.sparse_methods import describe, sparse_training
  optimizer, reparam = sparse_training(args.sparse, optimizer, steps=steps,
                                       target_sparsity=args.sparsity,
                                       switch=args.msrs_switch, seed=args.seed)
  sampler = None if args.prune == "none" else make_sampler(
      args.prune, num_examples, args.keep, seed=args.seed, total_epochs=epochs,
      reselect_every=args.reselect_every, batch_size=batch_size, total_steps=steps,
      warmup_epochs=prune_warmup_epochs(args), anneal_epochs=args.anneal_epochs)
  transform = None if args.time_drop == "none" else TimeDrop(
      args.time_drop, args.drop, domain=args.time_drop_domain)
  if transform is not None and args.anneal_epochs:
    transform = OutsideAnnealing(transform, sampler)
  config = {"sparse": describe(args.sparse, reparam), "sparsity": args.sparsity,
            "prune": args.prune, "keep": args.keep, "reselect_every": args.reselect_every,
            "prune_warmup_epochs": prune_warmup_epochs(args),
            "time_drop": args.time_drop, "time_drop_domain": args.time_drop_domain,
            "drop": args.drop, "anneal_epochs": args.anneal_epochs}
  return optimizer, reparam, sampler, transform, config


def _out_dir(args, default: str) -> Path:
  return Path(args.out or default)


def _write(report, args) -> None:
  from jaxrepro.bench import Report
  assert isinstance(report, Report)
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
  # Say which data was used, as every command does; on stderr so stdout stays one JSON document.
  print(f"data: {report.data}", file=sys.stderr)
  print(json.dumps(report.as_dict()["metrics"], indent=2))


def _synthesize_espeak_corpus(out_dir, config) -> dict[str, Path]:
  """espeak-ng synthesis with a progress bar: it takes minutes (seconds with --quick)."""
  from jaxrepro.progress import progress
  from sparse_sr.data import corpus
  with progress(desc="synthesize") as bar:
    return corpus.make_espeak_corpus(out_dir, config, progress_bar=bar)


def cmd_make_corpus(args) -> int:
  from jaxrepro.bench import Report
  from jaxrepro.data import resolve_data
  from sparse_sr.data import corpus
  if not args.out:
    raise ValueError("make-corpus needs --out DIR")
  start = time.perf_counter()
  if args.kind == "espeak":
    defaults = QUICK_CORPUS if args.quick else FULL_CORPUS
    given = dict(hours=args.hours, test_utterances=args.test_utterances,
                 max_words=args.max_words, vocab_size=args.vocab_size)
    settings = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    settings["vocab_size"] = settings["vocab_size"] or None  # 0: every word
    if args.all_voices:
      settings.update(train_variants=None, train_accents=corpus.ENGLISH_ACCENTS)
    config = corpus.EspeakCorpusConfig(**settings, video=not args.no_video, seed=args.seed)
    paths = _synthesize_espeak_corpus(args.out, config)
    data = "embedded:espeak-ng (espeakng-loader wheel) + pydoc_data.topics"
    cfg = dataclasses.asdict(config)
  elif args.kind == "fsdd":
    source = resolve_data("speech/fsdd", explicit=args.data)
    if args.synthetic_digits < 0:
      raise ValueError(f"--synthetic-digits must be >= 0, got {args.synthetic_digits}")
    paths = corpus.make_fsdd_corpus(source.path, args.out, args.holdout_speaker,
                                    args.synthetic_digits, args.seed)
    data = source.describe() + (" + espeak-ng synthesized digits (espeakng-loader wheel)"
                                if args.synthetic_digits else "")
    cfg = {"holdout_speaker": args.holdout_speaker,
           "synthetic_digits": args.synthetic_digits}
  else:
    root = Path(args.data) if args.data else corpus.POCKETSPHINX_TESTDATA
    paths = corpus.make_pocketsphinx_corpus(args.out, root)
    data, cfg = str(root), {}
  metrics = {}
  for split, path in paths.items():
    utterances = corpus.read_manifest(path)
    metrics[split] = {"utterances": len(utterances),
                      "hours": sum(u.duration for u in utterances) / 3600,
                      "speakers": len({u.speaker for u in utterances}),
                      "manifest": str(path)}
  _write(Report("speech-make-corpus", f"jaxrepro speech make-corpus --kind {args.kind}",
                config=cfg, data=data, metrics=metrics,
                timings={"seconds": time.perf_counter() - start}), args)
  return 0


def _splits(data_dir: Path, only: str | None) -> dict[str, Path]:
  names = [only] if only else sorted(p.stem for p in data_dir.glob("test*.jsonl"))
  splits = {name: data_dir / f"{name}.jsonl" for name in names}
  missing = [str(p) for p in splits.values() if not p.is_file()]
  if missing or not splits:
    raise FileNotFoundError(f"{data_dir}: no evaluation manifest ({missing or 'test*.jsonl'})")
  return splits


def cmd_train(args) -> int:
  from jaxrepro.bench import Report
  from jaxrepro.mesh import make_mesh
  from jaxrepro.metrics import curves_from_records, plot_curves
  from sparse_sr import model as model_lib
  from sparse_sr.data import corpus
  from sparse_sr.data.loader import Dataset
  from sparse_sr.features import FeatureConfig
  from sparse_sr.tokenizer import CharTokenizer, SentencePieceTokenizer
  from sparse_sr.train import TrainConfig, train

  out = _out_dir(args, "speech-run")
  check_sparse_and_pruning_args(args)
  if args.prior_matching and not (args.speaker_cmvn and args.closed_vocabulary):
    raise ValueError("--prior-matching adapts closed-vocabulary decisions under speaker CMVN; "
                     "give --speaker-cmvn and --closed-vocabulary")
  if args.self_train < 0 or (args.self_train and not args.prior_matching):
    raise ValueError(f"--self-train must be >= 0 and needs --prior-matching, got "
                     f"{args.self_train}")
  if args.speaker_cmvn and args.modality == "video":
    raise ValueError("--speaker-cmvn normalizes audio features; use --modality audio or av")
  if args.steps is not None and args.steps < 1:
    raise ValueError(f"--steps must be >= 1, got {args.steps}")
  if args.adaptation_takes < 1:
    raise ValueError(f"--adaptation-takes must be at least 1, got {args.adaptation_takes}")
  if not 0 <= args.mfcc <= (args.n_mels or FeatureConfig.n_mels):
    raise ValueError(f"--mfcc must be between 0 and the number of mel bands, got {args.mfcc}")
  if args.lifter and not args.mfcc:
    raise ValueError("--lifter applies to cepstra; give --mfcc too")
  if args.model not in model_lib.PRESETS:
    raise ValueError(f"unknown model {args.model!r}; choose from {sorted(model_lib.PRESETS)}")
  if args.data:
    data_dir = Path(args.data)
    if not (data_dir / "train.jsonl").is_file():
      raise FileNotFoundError(f"{data_dir}: no train.jsonl (make one with "
                              "`jaxrepro speech make-corpus`)")
    data = str(data_dir.resolve())
  else:
    data_dir = out / "corpus"
    if not (data_dir / "train.jsonl").is_file():
      config = corpus.EspeakCorpusConfig(**(QUICK_CORPUS if args.quick else FULL_CORPUS),
                                         video=args.modality != "audio", seed=args.seed)
      _synthesize_espeak_corpus(data_dir, config)
    data = f"embedded:espeak-ng synthesized corpus ({data_dir})"
  train_utts = corpus.read_manifest(data_dir / "train.jsonl")
  if args.tokenizer == "char":
    tokenizer = CharTokenizer()
  else:
    tokenizer = SentencePieceTokenizer.train([u.text for u in train_utts], vocab_size=128)
  recipe = {**(QUICK_RECIPE if args.quick else PAPER_RECIPE),
            **{k: v for k, v in dict(ctc_weight=args.ctc_weight, dropout=args.dropout,
                                     spec_augment=args.spec_augment).items() if v is not None}}
  model_config = model_lib.preset(args.model, tokenizer.vocab_size, args.modality)
  if recipe["dropout"] is not None:
    model_config = dataclasses.replace(
        model_config,
        encoder=dataclasses.replace(model_config.encoder, dropout=recipe["dropout"]),
        decoder=dataclasses.replace(model_config.decoder, dropout=recipe["dropout"]))
  if args.vtlp:
    model_config = dataclasses.replace(model_config, vtlp_warp=args.vtlp)
  if args.tempo:
    model_config = dataclasses.replace(model_config, tempo_change=args.tempo)
  if args.n_mels is not None and args.n_mels < 8:
    raise ValueError(f"--n-mels must be at least 8, got {args.n_mels}")
  if args.mfcc or args.n_mels is not None:
    base = model_config.features.dim
    features = dataclasses.replace(
        model_config.features, n_mels=args.n_mels or model_config.features.n_mels,
        n_cepstra=args.mfcc, cepstral_lifter=args.lifter)
    model_config = dataclasses.replace(
        model_config, features=features, spec_augment=dataclasses.replace(
            model_config.spec_augment,
            freq_width=round(model_config.spec_augment.freq_width * features.dim / base)))
  if recipe["spec_augment"] == "off":
    model_config = dataclasses.replace(model_config, spec_augment=None)
  defaults = QUICK_TRAIN if args.quick else dict(steps=3000, batch_size=32, learning_rate=2e-3,
                                                 warmup_steps=300, eval_every=500,
                                                 checkpoint_every=500)
  overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size,
                                     learning_rate=args.lr, eval_every=args.eval_every,
                                     warmup_steps=args.warmup_steps).items()
               if v is not None}
  train_config = TrainConfig(**{**defaults, **overrides}, ctc_weight=recipe["ctc_weight"],
                             label_smoothing=args.label_smoothing, seed=args.seed)
  uses = dict(use_audio=model_config.uses_audio, use_video=model_config.uses_video)
  train_set = Dataset(train_utts, tokenizer, **uses)
  splits = _splits(data_dir, None)
  eval_sets = {name: Dataset(corpus.read_manifest(p), tokenizer, **uses)
               for name, p in splits.items()}
  first_split = next(iter(eval_sets))
  workdir = Path(args.workdir) if args.workdir else out / "run"
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps({
      "model": dataclasses.asdict(model_config), "tokenizer": tokenizer.to_json(),
      "train": dataclasses.asdict(train_config), "data": str(data_dir.resolve()),
      "speaker_cmvn": args.speaker_cmvn, "adaptation_takes": args.adaptation_takes}, indent=1))
  mesh = make_mesh(args.mesh)
  from sparse_sr.ddp import epochs_for_steps
  from sparse_sr.msrs import zero_fraction
  from sparse_sr.train import make_optimizer
  epochs = epochs_for_steps(train_config.steps, len(train_set), train_config.batch_size,
                            1.0 if args.prune == "none" else args.keep,
                            warmup_epochs=prune_warmup_epochs(args),
                            anneal_epochs=args.anneal_epochs)
  optimizer, reparam, sampler, transform, sparse_config = sparse_and_pruning(
      args, make_optimizer(train_config), train_config.steps, len(train_set), epochs,
      train_config.batch_size)
  eval_transforms = {name: None for name in eval_sets}
  if args.speaker_cmvn:
    from sparse_sr.adaptation import speaker_cmvn_splits
    train_cmvn, cmvn_splits = speaker_cmvn_splits(train_set, eval_sets, model_config.features,
                                                  args.adaptation_takes)
    eval_sets = {name: dataset for name, (dataset, _) in cmvn_splits.items()}
    eval_transforms = {name: add_cmvn for name, (_, add_cmvn) in cmvn_splits.items()}
    transform = train_cmvn if transform is None else (
        lambda batch, rng, time_drop=transform: time_drop(train_cmvn(batch, rng), rng))
  start = time.perf_counter()
  result = train(model_config, train_config, train_set, eval_data=eval_sets[first_split],
                 mesh=mesh, workdir=workdir, optimizer=optimizer, reparam=reparam,
                 sampler=sampler, transform=transform,
                 eval_transform=eval_transforms[first_split])
  wall = time.perf_counter() - start
  from sparse_sr.train import evaluate
  candidates = sorted({u.text for u in train_utts}) if args.closed_vocabulary else None
  evaluations = {}
  for name, dataset in eval_sets.items():
    last = result["evaluations"][-1] if result["evaluations"] else {}
    if (name == first_split and not args.beam and not candidates
        and last.get("step") == result["steps"]):
      evaluations[name] = last  # evaluated at the last step already
    else:
      evaluations[name] = evaluate(result["model"], dataset, beam=args.beam, mesh=mesh,
                                   batch_size=train_config.eval_batch_size,
                                   candidates=candidates, transform=eval_transforms[name])
    if args.vtln:
      evaluations[f"{name}_vtln"] = evaluate(
          result["model"], dataset, mesh=mesh, batch_size=train_config.eval_batch_size,
          candidates=candidates, warps=VTLN_WARPS, transform=eval_transforms[name])
  if args.prior_matching:
    evaluations.update(_prior_matched(result["model"], eval_sets, eval_transforms, candidates,
                                      args.adaptation_takes, train_config.eval_batch_size))
  if args.self_train:
    evaluations.update(_self_trained(result["model"], train_set, eval_sets, eval_transforms,
                                     candidates, args.adaptation_takes, train_config,
                                     args.self_train, mesh))
  history = result["history"]
  from flax import nnx
  metrics = {
      "steps": result["steps"], "final_loss": history[-1]["loss"] if history else None,
      "throughput_audio_seconds_per_second": result["throughput"],
      "train_utterances": len(train_set),
      "weight_sparsity": zero_fraction(nnx.state(result["model"], nnx.Param)),
      "msrs_stable_step": (int(history[-1]["stable_step"])
                           if reparam is not None and history else None),
      "eval": {name: {k: v for k, v in e.items() if k not in ("examples", "step")}
               for name, e in evaluations.items()},
      "examples": evaluations[first_split]["examples"],
      "curve": [{"step": e["step"], "cer": e["greedy_ctc"]["cer"]}
                for e in result["evaluations"]],
  }
  if args.out:
    records = [{"step": h["step"], "loss": h["loss"]} for h in history]
    plot_curves({"train loss": curves_from_records(records, "loss")}, out / "loss.png",
                ylabel="hybrid loss")
    if result["evaluations"]:
      plot_curves({f"{first_split} CER": ([e["step"] for e in result["evaluations"]],
                                          [e["greedy_ctc"]["cer"] for e in result["evaluations"]])},
                  out / "cer.png", ylabel="CER (greedy CTC)")
  _write(Report("speech-train", f"jaxrepro speech train --modality {args.modality} "
                f"--model {args.model} --sparse {args.sparse} --prune {args.prune} "
                f"--time-drop {args.time_drop}" + (" --quick" if args.quick else ""),
                config={"model": dataclasses.asdict(model_config),
                        "train": dataclasses.asdict(train_config), "mesh": dict(mesh.shape),
                        **sparse_config, "speaker_cmvn": args.speaker_cmvn,
                        "prior_matching": args.prior_matching, "self_train": args.self_train,
                        "adaptation_takes": args.adaptation_takes,
                        "workdir": str(workdir)},
                data=data, metrics=metrics,
                timings={"wall_seconds": wall, "train_step_seconds": result["train_seconds"]}),
         args)
  return 0


def _prior_matched(model, eval_sets: dict, transforms: dict, candidates, adaptation_takes: int,
                   batch_size: int = 32, ctc_weight: float = 0.3) -> dict:
  """``NAME_eval_half_adapted_prior_matched`` for each ``NAME_eval_half_adapted`` split."""
  return {f"{name}_prior_matched": _prior_matched_split(
              model, name, eval_sets, transforms, candidates, adaptation_takes, batch_size,
              ctc_weight)
          for name in eval_sets if name.endswith("_eval_half_adapted")}


def _prior_matched_split(model, name: str, eval_sets: dict, transforms: dict, candidates,
                         adaptation_takes: int, batch_size: int = 32,
                         ctc_weight: float = 0.3) -> dict:
  """Split ``name`` (``NAME_eval_half_adapted``) decided with the prior-matching offsets of
  its speakers' adaptation halves (taken from ``NAME``, which holds all their takes)."""
  from sparse_sr.adaptation import prior_matching_biases
  from sparse_sr.train import evaluate
  dataset = eval_sets[name]
  speakers = {u.speaker for u in dataset.utterances}
  source = eval_sets[name.removesuffix("_eval_half_adapted")]
  biases = prior_matching_biases(
      model, [u for u in source.utterances if u.speaker in speakers], transforms[name].stats,
      candidates, dataset.tokenizer, adaptation_takes, ctc_weight)
  return {**evaluate(model, dataset, batch_size=batch_size, candidates=candidates,
                     ctc_weight=ctc_weight, transform=transforms[name],
                     candidate_bias=biases),
          "prior_matching_bias": {s: [round(float(x), 3) for x in b] for s, b in biases.items()}}


def _self_trained(model, train_set, eval_sets: dict, transforms: dict, candidates,
                  adaptation_takes: int, train_config, rounds: int, mesh) -> dict:
  """``NAME_eval_half_self_trained`` (and ``..._prior_matched``): each
  ``NAME_eval_half_adapted`` split decided by the model self-trained on its speakers'
  adaptation halves (:func:`sparse_sr.adaptation.self_train`)."""
  from sparse_sr.adaptation import SelfTrainingConfig, adaptation_split, self_train
  from sparse_sr.train import evaluate
  out = {}
  for name, dataset in eval_sets.items():
    if not name.endswith("_eval_half_adapted"):
      continue
    base = name.removesuffix("_adapted")
    speakers = sorted({u.speaker for u in dataset.utterances})
    source = eval_sets[name.removesuffix("_eval_half_adapted")]
    adaptation = [u for s in speakers for u in adaptation_split(
        [u for u in source.utterances if u.speaker == s], adaptation_takes)[0]]
    stats = transforms[name].stats
    adapted, history = self_train(model, adaptation, train_set, candidates, stats, train_config,
                                  SelfTrainingConfig(rounds=rounds), mesh)
    out[f"{base}_self_trained"] = {
        **evaluate(adapted, dataset, batch_size=train_config.eval_batch_size,
                   candidates=candidates, transform=transforms[name]),
        "pseudo_labels": [len(r["labels"]) for r in history]}
    out[f"{base}_self_trained_prior_matched"] = _prior_matched_split(
        adapted, name, eval_sets, transforms, candidates, adaptation_takes,
        train_config.eval_batch_size)
  return out


def load_run(workdir: Path):
  """``(model, tokenizer, config dict, step)`` of a training workdir."""
  from sparse_sr.model import model_config_from_dict
  from sparse_sr.tokenizer import tokenizer_from_json
  from sparse_sr.train import restore_model
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{workdir}: not a training workdir (no config.json)")
  config = json.loads(config_path.read_text())
  model, step = restore_model(model_config_from_dict(config["model"]), workdir)
  return model, tokenizer_from_json(config["tokenizer"]), config, step


def cmd_eval(args) -> int:
  from jaxrepro.bench import Report
  from sparse_sr.data import corpus
  from sparse_sr.data.loader import Dataset
  from sparse_sr.train import evaluate
  workdir = Path(args.ckpt)
  model, tokenizer, config, step = load_run(workdir)
  data_dir = Path(args.data or config["data"])
  uses = dict(use_audio=model.config.uses_audio, use_video=model.config.uses_video)
  start = time.perf_counter()
  metrics = {"step": step}
  candidates = None
  if args.closed_vocabulary:
    candidates = sorted({u.text for u in corpus.read_manifest(data_dir / "train.jsonl")})
  eval_sets = {name: Dataset(corpus.read_manifest(path), tokenizer, **uses)
               for name, path in _splits(data_dir, args.split).items()}
  splits = {name: (dataset, None) for name, dataset in eval_sets.items()}
  if config.get("speaker_cmvn"):  # the model was trained with speaker-level CMVN
    from sparse_sr.adaptation import speaker_cmvn_splits
    train_set = Dataset(corpus.read_manifest(data_dir / "train.jsonl"), tokenizer, **uses)
    _, splits = speaker_cmvn_splits(train_set, eval_sets, model.config.features,
                                    config["adaptation_takes"])
  if args.prior_matching and not (config.get("speaker_cmvn") and candidates):
    raise ValueError("--prior-matching needs --closed-vocabulary and a model trained with "
                     "--speaker-cmvn")
  for name, (dataset, transform) in splits.items():
    metrics[name] = evaluate(model, dataset, beam=args.beam, ctc_weight=args.ctc_weight,
                             candidates=candidates, transform=transform)
    if args.vtln:
      metrics[f"{name}_vtln"] = evaluate(model, dataset, ctc_weight=args.ctc_weight,
                                         candidates=candidates, warps=VTLN_WARPS,
                                         transform=transform)
  if args.prior_matching:
    metrics.update(_prior_matched(model, {name: d for name, (d, _) in splits.items()},
                                  {name: t for name, (_, t) in splits.items()}, candidates,
                                  config["adaptation_takes"], ctc_weight=args.ctc_weight))
  _write(Report("speech-eval", f"jaxrepro speech eval --ckpt {workdir}",
                config={"beam": args.beam, "ctc_weight": args.ctc_weight,
                        "speaker_cmvn": bool(config.get("speaker_cmvn")),
                        "vtln_warps": list(VTLN_WARPS) if args.vtln else None},
                data=str(data_dir.resolve()), metrics=metrics,
                timings={"seconds": time.perf_counter() - start}), args)
  return 0
