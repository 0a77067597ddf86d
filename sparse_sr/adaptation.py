"""Unsupervised adaptation to an unseen speaker: speaker-level feature normalization and
self-training on confident pseudo-labels.

The protocol (``adaptation_split``) divides a held-out speaker's recordings by take index:
the first takes form the *adaptation* half, whose audio may be used but whose transcripts
are dropped before anything else sees them; the remaining takes form the *evaluation*
half, which adaptation never touches. Accuracy is reported on the evaluation half only,
before and after adaptation.

Speaker-level CMVN (cepstral mean and variance normalization per speaker, as Kaldi's
``compute-cmvn-stats --spk2utt``; Viikki & Laurila 1998, Speech Communication 25(1-3),
"Cepstral domain segmental feature vector normalization for noise robust speech
recognition"): log-mel features are normalized by the mean and standard deviation of all
frames of the speaker rather than of the utterance, so a short isolated word keeps its own
spectral shape while the speaker's static characteristics (spectral tilt, level) are
removed. Training speakers' statistics come from their training recordings; the unseen
speaker's from the adaptation half only.

Self-training (Scudder 1965; for speech, Kahn, Lee & Hannun 2020, "Self-training for
end-to-end speech recognition", ICASSP, arXiv:1909.09116): the trained model recognizes
the adaptation half with a closed vocabulary, utterances whose best hypothesis wins by a
large margin keep it as a pseudo-label (Kahn et al. filter by confidence, Sec. 3.2), and
the model is fine-tuned briefly on the pseudo-labelled utterances mixed with its labelled
training data (so it does not forget the training speakers). Rounds repeat this with the
adapted model.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrepro.mesh import make_mesh, shard_batch
from sparse_sr.data.corpus import Utterance
from sparse_sr.data.loader import BatchIterator, Dataset, Padding, eval_batches
from sparse_sr.decoding import score_candidates
from sparse_sr.features import FeatureConfig, log_mel_from_power, power_spectrogram
from sparse_sr.model import SpeechRecognizer
from sparse_sr.train import TrainConfig, make_train_step

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
    features = log_mel_from_power(power_spectrogram(audio, config), config)
    frames = jnp.maximum(0, 1 + (audio_len - config.n_fft) // config.hop_length)
    mask = (jnp.arange(features.shape[1])[None, :] < frames[:, None])[..., None]
    return (jnp.sum(features * mask, 1), jnp.sum(features ** 2 * mask, 1), frames)
  return sums


def speaker_cmvn_stats(dataset: Dataset, config: FeatureConfig, batch_size: int = 32,
                       variance_floor: float = 1e-5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per speaker of ``dataset``, the mean and standard deviation ``(n_mels,)`` of the
  log-mel features of all valid frames of all their utterances (transcripts not read)."""
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
  pooled = Dataset([dataclasses.replace(u, speaker="") for u in dataset.utterances],
                   dataset.tokenizer, dataset.use_audio, dataset.use_video, dataset.sample_rate)
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


def _without_transcripts(dataset: Dataset) -> Dataset:
  return Dataset([dataclasses.replace(u, text=UNKNOWN_TRANSCRIPT) for u in dataset.utterances],
                 dataset.tokenizer, dataset.use_audio, dataset.use_video, dataset.sample_rate)


@functools.lru_cache(maxsize=8)
def _scores_fn(graphdef, ctc_weight: float):
  @jax.jit
  def scores(state, batch, tokens, token_len):
    model = nnx.merge(graphdef, state)
    memory, valid = model.encode(batch)
    return score_candidates(model, memory, valid, tokens, token_len, ctc_weight)
  return scores


def candidate_scores(model: SpeechRecognizer, dataset: Dataset, candidates: Sequence[str], *,
                     ctc_weight: float = 0.3, batch_size: int = 32,
                     cmvn: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
  """Hybrid negative log-likelihoods ``(utterances, K)`` of the ``candidates`` (closed
  vocabulary, e.g. the ten digit words) for every utterance of ``dataset``, in its order,
  with speaker-level normalization by ``cmvn`` (:func:`speaker_cmvn_stats`) if given.
  Transcripts are not read."""
  encoded = [dataset.tokenizer.encode(c) for c in candidates]
  tokens = np.zeros((len(encoded), max(map(len, encoded))), np.int32)
  for i, ids in enumerate(encoded):
    tokens[i, :len(ids)] = ids
  token_len = np.asarray([len(ids) for ids in encoded], np.int32)
  graphdef, state = nnx.split(model)
  scores_fn = _scores_fn(graphdef, ctc_weight)
  no_text = _without_transcripts(dataset)
  add_cmvn = SpeakerCMVN(no_text, cmvn) if cmvn is not None else (lambda batch: batch)
  out = np.zeros((len(dataset), len(candidates)), np.float32)
  for batch in eval_batches(no_text, batch_size, Padding.for_dataset(no_text, 1)):
    batch = add_cmvn(batch)
    inputs = {k: v for k, v in batch.items() if k not in ("index", "tokens", "token_len")}
    scores = np.asarray(scores_fn(state, inputs, tokens, token_len))
    ok = batch["valid"]
    out[batch["index"][ok]] = scores[ok]
  return out


def confident_pseudo_labels(scores: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
  """``(selected indices, labels)``: the best candidate of each utterance, for the fraction
  ``keep`` of utterances whose best score beats the runner-up by the largest margin
  (confidence filtering, Kahn et al. 2020, Sec. 3.2; ties broken by index)."""
  if not 0.0 < keep <= 1.0:
    raise ValueError(f"keep must be in (0, 1], got {keep}")
  ordered = np.sort(scores, axis=1)
  margin = ordered[:, 1] - ordered[:, 0]
  count = max(1, int(round(keep * len(scores))))
  selected = np.sort(np.argsort(-margin, kind="stable")[:count])
  return selected, np.argmin(scores[selected], axis=1)


@dataclasses.dataclass(frozen=True)
class SelfTrainingConfig:
  rounds: int = 2
  keep: float = 0.5              # fraction of the adaptation half pseudo-labelled per round
  steps: int = 150               # fine-tuning steps per round
  learning_rate: float = 5e-4
  pseudo_weight: float = 0.5     # expected share of pseudo-labelled utterances in a batch
  ctc_weight: float = 0.3        # in the closed-vocabulary scores (as evaluation)


def fine_tune(model: SpeechRecognizer, dataset: Dataset, config: TrainConfig, mesh=None,
              transform=None) -> SpeechRecognizer:
  """``config.steps`` AdamW steps (warm-up then cosine decay) from ``model``'s weights on
  ``dataset``, with the training augmentations and dropout of ``model.config``; ``transform``
  as :class:`sparse_sr.data.loader.BatchIterator`'s (e.g. :class:`SpeakerCMVN`)."""
  mesh = mesh or make_mesh()
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps, max(config.steps, 2),
      end_value=0.01 * config.learning_rate)
  optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                          optax.adamw(schedule, b1=0.9, b2=0.98,
                                      weight_decay=config.weight_decay))
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


def self_train(model: SpeechRecognizer, adaptation: Sequence[Utterance],
               labelled: Sequence[Utterance], candidates: Sequence[str], tokenizer,
               train_config: TrainConfig,
               config: SelfTrainingConfig = SelfTrainingConfig(), mesh=None,
               cmvn: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
               ) -> tuple[SpeechRecognizer, list[dict]]:
  """Adapts ``model`` to the speaker of ``adaptation`` (unlabelled: transcripts are never
  read) by ``config.rounds`` rounds of pseudo-labelling and fine-tuning on the pseudo-labelled
  utterances plus ``labelled`` (the training data). Every round starts from the adapted model
  of the previous one; ``cmvn`` (speaker statistics of every speaker involved) switches to
  speaker-level normalization. Returns the adapted model and, per round, the pseudo-labels."""
  candidates = list(candidates)
  unlabelled = [dataclasses.replace(u, text=UNKNOWN_TRANSCRIPT) for u in adaptation]
  rounds = []
  for r in range(config.rounds):
    scores = candidate_scores(model, Dataset(unlabelled, tokenizer), candidates,
                              ctc_weight=config.ctc_weight, cmvn=cmvn)
    selected, labels = confident_pseudo_labels(scores, config.keep)
    pseudo = [dataclasses.replace(unlabelled[i], text=candidates[c])
              for i, c in zip(selected, labels)]
    # repeat the pseudo-labelled utterances so they make up ``pseudo_weight`` of the data
    repeats = max(1, round(config.pseudo_weight / (1 - config.pseudo_weight)
                           * len(labelled) / len(pseudo)))
    mixed = Dataset(list(labelled) + pseudo * repeats, tokenizer)
    step_config = dataclasses.replace(
        train_config, steps=config.steps, learning_rate=config.learning_rate,
        warmup_steps=min(train_config.warmup_steps, config.steps // 5),
        seed=train_config.seed + 1 + r)
    model = fine_tune(model, mixed, step_config, mesh,
                      None if cmvn is None else SpeakerCMVN(mixed, cmvn))
    rounds.append({"round": r + 1, "ids": [unlabelled[i].id for i in selected],
                   "labels": [candidates[c] for c in labels]})
  return model, rounds
