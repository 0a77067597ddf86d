"""Unsupervised adaptation to an unseen speaker: speaker-level feature normalization, prior
matching of closed-vocabulary decisions, class-balanced self-training.

The protocol (:func:`adaptation_split`) divides a held-out speaker's recordings by take
index: the first takes form the *adaptation* half, whose audio may be used but whose
transcripts are dropped before anything else sees them; the remaining takes form the
*evaluation* half, which adaptation never reads. Accuracy is reported on the evaluation half
only, before adaptation (the speaker normalized by the pooled training statistics) and after.

Speaker-level CMVN (cepstral mean and variance normalization per speaker, as Kaldi's
``compute-cmvn-stats --spk2utt``; Viikki & Laurila 1998, Speech Communication 25(1-3),
"Cepstral domain segmental feature vector normalization for noise robust speech
recognition"): features (log-mels or cepstra) are normalized by the mean and standard deviation of all
frames of the speaker rather than of the utterance, so a short isolated word keeps its own
spectral shape while the speaker's static characteristics (spectral tilt, level) are
removed. Training speakers' statistics come from their training recordings; the unseen
speaker's from the adaptation half only.

Prior matching (:func:`prior_matching_bias`) adapts the closed-vocabulary decision rule to the
speaker: an unseen speaker's errors are systematic (one word heard as another on most of its
takes), so the scores of the adaptation half favour some words far more often than the
training prior (uniform over FSDD's ten digits) allows. Per-word offsets are chosen so that
the model's mean posterior over the adaptation half equals that prior (Sinkhorn's
equipartition, as in Asano et al. 2020, arXiv:1911.05371, Sec. 3.1; the inverse of Saerens et
al. 2002, Neural Computation 14(1), who estimate new priors under fixed likelihoods), and
are added to the evaluation half's scores.

Class-balanced self-training (:func:`self_train`) fine-tunes a copy of the model on the
adaptation half with prior-matched pseudo-labels (per word, the most confident ones) plus the
training data; unlike plain confidence filtering, whose pseudo-labels repeat the speaker's
systematic errors, every word keeps its share.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.special import logsumexp

from jaxrepro.mesh import make_mesh, shard_batch
from sparse_sr.data.corpus import Utterance
from sparse_sr.data.loader import BatchIterator, Dataset, Padding, eval_batches
from sparse_sr.decoding import candidate_tokens, score_candidates
from sparse_sr.features import (FeatureConfig, feature_lengths, features_from_power,
                                power_spectrogram)
from sparse_sr.train import make_optimizer, make_train_step

UNKNOWN_TRANSCRIPT = "unknown"  # what the adaptation half's transcripts become


def take_index(utterance: Utterance) -> int:
  """The take index of an FSDD recording, from its id ``{digit}_{speaker}_{index}``."""
  match = re.fullmatch(r"\d_[A-Za-z]+_(\d+)", utterance.id)
  if not match:
    raise ValueError(f"{utterance.id} ({utterance.audio}): not an FSDD recording id "
                     "{digit}_{speaker}_{index}")
  return int(match[1])


def adaptation_split(utterances: Sequence[Utterance], adaptation_takes: int = 25
                     ) -> tuple[list[Utterance], list[Utterance]]:
  """``(adaptation, evaluation)`` halves of one speaker's FSDD recordings by take index:
  takes ``0 .. adaptation_takes - 1`` adapt, the later takes evaluate. The adaptation
  half's transcripts are replaced by :data:`UNKNOWN_TRANSCRIPT`, so adaptation cannot read
  them."""
  speakers = {u.speaker for u in utterances}
  if len(speakers) != 1:
    raise ValueError(f"adaptation is per speaker; got speakers {sorted(speakers)}")
  adaptation = [dataclasses.replace(u, text=UNKNOWN_TRANSCRIPT) for u in utterances
                if take_index(u) < adaptation_takes]
  evaluation = [u for u in utterances if take_index(u) >= adaptation_takes]
  if not adaptation or not evaluation:
    raise ValueError(f"adaptation_takes={adaptation_takes} leaves an empty half "
                     f"({len(adaptation)} adaptation, {len(evaluation)} evaluation recordings)")
  return adaptation, evaluation


@functools.lru_cache(maxsize=8)
def _log_mel_sums_fn(config: FeatureConfig):
  @jax.jit
  def sums(audio, audio_len):
    features = features_from_power(power_spectrogram(audio, config), config)
    frames = feature_lengths(audio_len, config)
    mask = (jnp.arange(features.shape[1])[None, :] < frames[:, None])[..., None]
    return (jnp.sum(features * mask, 1), jnp.sum(features ** 2 * mask, 1), frames)
  return sums


def speaker_cmvn_stats(dataset: Dataset, config: FeatureConfig, batch_size: int = 32,
                       variance_floor: float = 1e-5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per speaker of ``dataset``, the mean and standard deviation ``(config.dim,)`` of the
  features (log-mels or cepstra) of all valid frames of all their utterances (transcripts
  not read)."""
  sums_fn = _log_mel_sums_fn(config)
  speakers = [u.speaker for u in dataset.utterances]
  totals: dict[str, list] = {}
  no_text = _without_transcripts(dataset)
  for batch in eval_batches(no_text, batch_size, Padding.for_dataset(no_text, 1)):
    s1, s2, n = (np.asarray(x, np.float64) for x in sums_fn(batch["audio"], batch["audio_len"]))
    for j in np.flatnonzero(batch["valid"]):
      acc = totals.setdefault(speakers[int(batch["index"][j])], [0.0, 0.0, 0.0])
      acc[0], acc[1], acc[2] = acc[0] + s1[j], acc[1] + s2[j], acc[2] + n[j]
  stats = {}
  for speaker, (s1, s2, n) in totals.items():
    mean = s1 / n
    var = np.maximum(s2 / n - mean ** 2, 0.0)
    stats[speaker] = (mean.astype(np.float32), np.sqrt(var + variance_floor).astype(np.float32))
  return stats


def pooled_cmvn_stats(dataset: Dataset, config: FeatureConfig,
                      batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """The statistics of all of ``dataset``'s frames as if spoken by one speaker (global
  CMVN): what an unseen speaker is normalized by without adaptation."""
  pooled = dataclasses.replace(dataset, utterances=[dataclasses.replace(u, speaker="")
                                                    for u in dataset.utterances])
  return speaker_cmvn_stats(pooled, config, batch_size)[""]


def held_out_cmvn_splits(utterances: Sequence[Utterance], training_stats: dict,
                         pooled: tuple[np.ndarray, np.ndarray], config: FeatureConfig,
                         tokenizer, adaptation_takes: int = 25
                         ) -> tuple[list[Utterance], dict, dict]:
  """The protocol for speakers of ``utterances`` not in ``training_stats``: each is split by
  :func:`adaptation_split`, its statistics come from its adaptation half only. Returns the
  evaluation halves (one list), the statistics with every unseen speaker *adapted*, and
  *unadapted* (unseen speakers normalized by the ``pooled`` training statistics)."""
  unseen = sorted({u.speaker for u in utterances} - set(training_stats))
  evaluation, adapted, unadapted = [], dict(training_stats), dict(training_stats)
  for speaker in unseen:
    adaptation, held = adaptation_split([u for u in utterances if u.speaker == speaker],
                                        adaptation_takes)
    adapted.update(speaker_cmvn_stats(Dataset(adaptation, tokenizer), config))
    unadapted[speaker] = pooled
    evaluation += held
  return evaluation, adapted, unadapted


class SpeakerCMVN:
  """Batch ``transform(batch, rng)`` (see :class:`sparse_sr.data.loader.BatchIterator`) adding
  each utterance's speaker statistics as ``cmvn_mean``/``cmvn_std``, which the model then
  normalizes by instead of per utterance."""

  def __init__(self, dataset: Dataset, stats: dict[str, tuple[np.ndarray, np.ndarray]]):
    missing = sorted({u.speaker for u in dataset.utterances} - set(stats))
    if missing:
      raise ValueError(f"no CMVN statistics for speakers {missing}")
    self.speakers = [u.speaker for u in dataset.utterances]
    self.stats = stats

  def __call__(self, batch: dict, rng: np.random.Generator | None = None) -> dict:
    chosen = [self.stats[self.speakers[int(i)]] for i in batch["index"]]
    return {**batch, "cmvn_mean": np.stack([m for m, _ in chosen]),
            "cmvn_std": np.stack([s for _, s in chosen])}


def speaker_cmvn_splits(train_set: Dataset, eval_sets: dict[str, Dataset],
                        features: FeatureConfig, adaptation_takes: int = 25):
  """``(training transform, {split: (dataset, transform)})`` under speaker-level CMVN, as
  the CLI's ``train --speaker-cmvn`` and ``eval`` use it. Every split is evaluated
  *unadapted* (a speaker not in training normalized by the pooled training statistics); a
  split holding the evaluation half of such a speaker's recordings also gives
  ``NAME_eval_half`` (unadapted) and ``NAME_eval_half_adapted`` (by the statistics of the
  speaker's adaptation half)."""
  training = speaker_cmvn_stats(train_set, features)
  pooled = pooled_cmvn_stats(train_set, features)
  union = {u.id: u for dataset in eval_sets.values() for u in dataset.utterances}
  evaluation, adapted, unadapted = held_out_cmvn_splits(
      list(union.values()), training, pooled, features, train_set.tokenizer, adaptation_takes)
  held = {u.id for u in evaluation}
  splits = {}
  for name, dataset in eval_sets.items():
    splits[name] = (dataset, SpeakerCMVN(dataset, unadapted))
    half = [u for u in dataset.utterances if u.id in held]
    if half:
      half_set = dataclasses.replace(dataset, utterances=half)
      splits[f"{name}_eval_half"] = (half_set, SpeakerCMVN(half_set, unadapted))
      splits[f"{name}_eval_half_adapted"] = (half_set, SpeakerCMVN(half_set, adapted))
  return SpeakerCMVN(train_set, training), splits


@functools.lru_cache(maxsize=8)
def _scores_fn(graphdef, ctc_weight: float):
  @jax.jit
  def scores(state, batch, tokens, token_len):
    model = nnx.merge(graphdef, state)
    memory, valid = model.encode(batch)
    return score_candidates(model, memory, valid, tokens, token_len, ctc_weight)
  return scores


def candidate_scores(model, dataset: Dataset, candidates: Sequence[str], *,
                     ctc_weight: float = 0.3, batch_size: int = 32,
                     transform=None) -> np.ndarray:
  """Hybrid negative log-likelihoods ``(utterances, K)`` of ``sorted(set(candidates))`` (as
  :func:`sparse_sr.train.evaluate` scores them) for every utterance of ``dataset``, in its
  order; ``transform`` adds inputs to each batch (e.g. :class:`SpeakerCMVN`). Transcripts
  are not read."""
  tokens, token_len = candidate_tokens(dataset.tokenizer, sorted(set(candidates)))
  graphdef, state = nnx.split(model)
  scores_fn = _scores_fn(graphdef, ctc_weight)
  no_text = _without_transcripts(dataset)
  out = np.zeros((len(dataset), len(tokens)), np.float32)
  for batch in eval_batches(no_text, batch_size, Padding.for_dataset(no_text, 1)):
    if transform is not None:
      batch = transform(batch)
    inputs = {k: v for k, v in batch.items() if k not in ("index", "valid")}
    scores = np.asarray(scores_fn(state, inputs, tokens, token_len))
    ok = batch["valid"].astype(bool)
    out[batch["index"][ok]] = scores[ok]
  return out


def prior_matching_bias(scores: np.ndarray, prior: np.ndarray | None = None,
                        iterations: int = 10000, tolerance: float = 1e-7) -> np.ndarray:
  """Offsets ``b (K,)`` (mean zero) for negative log-likelihoods ``scores (N, K)`` such that
  the posteriors ``softmax(b - scores)`` average to ``prior`` (uniform by default) over the
  ``N`` utterances: Sinkhorn's alternating normalization, whose fixed point minimizes the
  convex ``mean_i logsumexp(b - scores_i) - prior . b``. Decisions are then
  ``argmin(scores - b)``."""
  scores = np.asarray(scores, np.float64)
  k = scores.shape[1]
  prior = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, np.float64)
  bias = np.zeros(k)
  for _ in range(iterations):
    logits = bias - scores
    mean_posterior = np.mean(np.exp(logits - logsumexp(logits, axis=1, keepdims=True)), 0)
    step = np.log(prior) - np.log(mean_posterior)
    bias += step
    if np.max(np.abs(step)) < tolerance:
      break
  return bias - bias.mean()


def prior_matching_biases(model, utterances: Sequence[Utterance], stats: dict,
                          candidates: Sequence[str], tokenizer, adaptation_takes: int = 25,
                          ctc_weight: float = 0.3) -> dict[str, np.ndarray]:
  """Per speaker of ``utterances`` (each an unseen speaker's recordings, all takes): the
  :func:`prior_matching_bias` of the closed-vocabulary scores of its adaptation half only
  (:func:`adaptation_split`: transcripts dropped, evaluation half not read), normalized by
  the speaker statistics ``stats`` (the adapted ones)."""
  biases = {}
  for speaker in sorted({u.speaker for u in utterances}):
    adaptation, _ = adaptation_split([u for u in utterances if u.speaker == speaker],
                                     adaptation_takes)
    dataset = Dataset(adaptation, tokenizer)
    biases[speaker] = prior_matching_bias(candidate_scores(
        model, dataset, candidates, ctc_weight=ctc_weight,
        transform=SpeakerCMVN(dataset, stats)))
  return biases


def balanced_pseudo_labels(scores: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
  """``(selected indices, labels)`` for unlabelled utterances with candidate scores
  ``(N, K)``: prior-matched decisions (:func:`prior_matching_bias`), and of the utterances
  given each word, the fraction ``keep`` whose decision beats the runner-up by the largest
  margin (class-balanced confidence selection, Zou et al. 2018, ECCV, "Unsupervised domain
  adaptation for semantic segmentation via class-balanced self-training", Sec. 3.2)."""
  if not 0.0 < keep <= 1.0:
    raise ValueError(f"keep must be in (0, 1], got {keep}")
  adjusted = np.asarray(scores, np.float64) - prior_matching_bias(scores)
  labels = np.argmin(adjusted, axis=1)
  ordered = np.sort(adjusted, axis=1)
  margin = ordered[:, 1] - ordered[:, 0]
  selected = []
  for word in np.unique(labels):
    members = np.flatnonzero(labels == word)
    count = max(1, int(round(keep * len(members))))
    selected += list(members[np.argsort(-margin[members], kind="stable")[:count]])
  selected = np.sort(np.asarray(selected, int))
  return selected, labels[selected]


def fine_tune(model, dataset: Dataset, config, transform=None, mesh=None):
  """``config.steps`` steps of :func:`sparse_sr.train.make_train_step` (AdamW, warm-up and
  cosine decay from ``config.learning_rate``) from ``model``'s weights on ``dataset``, with
  the training augmentations of ``model.config``; ``transform`` as
  :class:`sparse_sr.data.loader.BatchIterator`'s (e.g. :class:`SpeakerCMVN`)."""
  mesh = mesh or make_mesh()
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  optimizer = make_optimizer(config)
  opt_state = optimizer.init(params)
  step = make_train_step(graphdef, optimizer, config)
  iterator = BatchIterator(dataset, config.batch_size, seed=config.seed, transform=transform,
                           padding=Padding.for_dataset(dataset, config.num_buckets))
  key = jax.random.key(config.seed)
  for _ in range(config.steps):
    batch = next(iterator)
    batch.pop("index")
    key, step_key = jax.random.split(key)
    params, other, opt_state, _ = step(params, other, opt_state, step_key,
                                       shard_batch(batch, mesh))
  return nnx.merge(graphdef, params, other)


@dataclasses.dataclass(frozen=True)
class SelfTrainingConfig:
  rounds: int = 1
  keep: float = 0.8             # per word, the fraction of its pseudo-labels kept
  steps: int = 150              # fine-tuning steps per round
  learning_rate: float = 5e-4
  pseudo_weight: float = 0.5    # expected share of pseudo-labelled utterances in a batch
  ctc_weight: float = 0.3       # in the closed-vocabulary scores (as evaluation)


def self_train(model, adaptation: Sequence[Utterance], train_set: Dataset,
               candidates: Sequence[str], stats: dict, train_config,
               config: SelfTrainingConfig = SelfTrainingConfig(), mesh=None):
  """Adapts ``model`` to unseen speakers from their adaptation halves ``adaptation``
  (transcripts dropped before anything reads them): per round, prior-matched
  class-balanced pseudo-labels (:func:`balanced_pseudo_labels`, per speaker), then
  fine-tuning on them plus the labelled ``train_set``, every speaker normalized by
  ``stats`` (training speakers' and the unseen speakers' adapted statistics). Returns the
  adapted model and, per round, the pseudo-labels by utterance id."""
  candidates = sorted(set(candidates))
  unlabelled = [dataclasses.replace(u, text=UNKNOWN_TRANSCRIPT) for u in adaptation]
  rounds = []
  for r in range(config.rounds):
    pseudo = []
    for speaker in sorted({u.speaker for u in unlabelled}):
      own = Dataset([u for u in unlabelled if u.speaker == speaker], train_set.tokenizer)
      scores = candidate_scores(model, own, candidates, ctc_weight=config.ctc_weight,
                                transform=SpeakerCMVN(own, stats))
      selected, labels = balanced_pseudo_labels(scores, config.keep)
      pseudo += [dataclasses.replace(own.utterances[i], text=candidates[c])
                 for i, c in zip(selected, labels)]
    # repeat the pseudo-labelled utterances so they make up ``pseudo_weight`` of the data
    repeats = max(1, round(config.pseudo_weight / (1 - config.pseudo_weight)
                           * len(train_set) / len(pseudo)))
    mixed = dataclasses.replace(train_set, utterances=list(train_set.utterances)
                                + pseudo * repeats)
    step_config = dataclasses.replace(
        train_config, steps=config.steps, learning_rate=config.learning_rate,
        warmup_steps=min(train_config.warmup_steps, config.steps // 5),
        seed=train_config.seed + 1 + r)
    model = fine_tune(model, mixed, step_config, SpeakerCMVN(mixed, stats), mesh)
    rounds.append({"round": r + 1, "labels": {u.id: u.text for u in pseudo}})
  return model, rounds


def _without_transcripts(dataset: Dataset) -> Dataset:
  return dataclasses.replace(dataset, utterances=[
      dataclasses.replace(u, text=UNKNOWN_TRANSCRIPT) for u in dataset.utterances])
