"""Deterministic, resumable batching of utterances with length bucketing.

The pieces are split so data pruning (DDP-ASR, arXiv:2406.18373) can plug in:
- a :class:`Sampler` chooses which utterances an epoch visits and in what order; it may
  learn from per-example losses (:meth:`Sampler.update`) and keeps its state in arrays of
  fixed shape, saved in the checkpoint with the model;
- :class:`BatchIterator` cuts the epoch's order into length-bucketed batches, reads audio
  (and video) from disk as it goes, pads to bucketed shapes (few recompilations) and
  applies an optional host-side ``transform(batch, rng)`` (e.g. time-drop);
- everything is a function of (seed, epoch, saved state), so a restored run sees the same
  batches bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from sparse_sr.data.audio import read_wav
from sparse_sr.data.corpus import SAMPLE_RATE, Utterance
from sparse_sr.tokenizer import Tokenizer

SAMPLES_PER_VIDEO_FRAME = SAMPLE_RATE // 25


class Sampler(Protocol):
  """Chooses each epoch's utterances. State is a dict of numpy arrays of fixed shapes."""

  def epoch_order(self, epoch: int) -> np.ndarray: ...
  def update(self, indices: np.ndarray, losses: np.ndarray) -> None: ...
  def state(self) -> dict[str, np.ndarray]: ...
  def load_state(self, state: dict[str, np.ndarray]) -> None: ...


class ShuffleSampler:
  """Every utterance once per epoch, in an order drawn from ``(seed, epoch)``."""

  def __init__(self, num_examples: int, seed: int = 0):
    self.num_examples = num_examples
    self.seed = seed

  def epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def update(self, indices: np.ndarray, losses: np.ndarray) -> None:
    del indices, losses  # visits everything regardless of losses

  def state(self) -> dict[str, np.ndarray]:
    return {}

  def load_state(self, state: dict[str, np.ndarray]) -> None:
    del state


@dataclasses.dataclass
class Dataset:
  """Utterances plus how to turn one into arrays (read lazily from disk)."""
  utterances: Sequence[Utterance]
  tokenizer: Tokenizer
  use_audio: bool = True
  use_video: bool = False
  sample_rate: int = SAMPLE_RATE

  def __post_init__(self):
    for u in self.utterances:
      if self.use_audio and u.audio is None:
        raise ValueError(f"utterance {u.id} has no audio, but the model needs audio")
      if self.use_video and u.video is None:
        raise ValueError(f"utterance {u.id} ({u.audio}) has no video, but the model needs video")

  def __len__(self) -> int:
    return len(self.utterances)

  def durations(self) -> np.ndarray:
    return np.asarray([u.duration for u in self.utterances], np.float64)

  def load(self, index: int) -> dict[str, np.ndarray]:
    u = self.utterances[index]
    item = {"tokens": np.asarray(self.tokenizer.encode(u.text), np.int32)}
    if self.use_audio:
      item["audio"], _ = read_wav(u.audio, self.sample_rate)
    if self.use_video:
      try:
        item["video"] = np.load(u.video)
      except (OSError, ValueError) as e:
        raise ValueError(f"{u.video}: not a readable .npy video ({e})") from None
    return item


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class Padding:
  """Padded shapes: audio widths (samples) are the smallest of ``audio_widths`` that fits
  (else the length rounded up to ``audio_multiple``); tokens at least ``token_width``.
  Few distinct shapes mean few compilations. ``audio_multiple`` is a whole number of video
  frames (640 samples) so padded audio and video stay aligned at 25 fps."""
  audio_widths: tuple[int, ...] = ()
  token_width: int = 8
  audio_multiple: int = 6400

  def audio_width(self, length: int) -> int:
    fitting = [w for w in self.audio_widths if w >= length]
    return min(fitting) if fitting else _round_up(length, self.audio_multiple)

  def tokens(self, length: int) -> int:
    return max(self.token_width, _round_up(length, 8))

  @classmethod
  def for_dataset(cls, dataset: "Dataset", num_buckets: int = 2,
                  audio_multiple: int = 6400) -> "Padding":
    """Buckets at duration quantiles of ``dataset``; one token width for all batches."""
    samples = dataset.durations() * dataset.sample_rate
    quantiles = np.quantile(samples, np.linspace(0, 1, num_buckets + 1)[1:])
    widths = sorted({_round_up(int(np.ceil(q)), audio_multiple) for q in quantiles})
    longest = max(len(dataset.tokenizer.encode(u.text)) for u in dataset.utterances)
    return cls(tuple(widths), _round_up(longest, 8), audio_multiple)


def collate(items: list[dict[str, np.ndarray]], padding: Padding = Padding(), *,
            valid: np.ndarray | None = None,
            indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Pads items into a batch of the shapes chosen by ``padding``.

  Audio and video are padded to a common duration (video frames = audio samples / 640),
  so the two streams stay aligned at 25 fps.
  """
  batch: dict[str, np.ndarray] = {}
  n = len(items)
  token_len = np.asarray([len(it["tokens"]) for it in items], np.int32)
  tokens = np.zeros((n, padding.tokens(int(token_len.max()))), np.int32)
  for i, it in enumerate(items):
    tokens[i, :token_len[i]] = it["tokens"]
  batch["tokens"], batch["token_len"] = tokens, token_len
  if "audio" in items[0]:
    audio_len = np.asarray([len(it["audio"]) for it in items], np.int32)
    longest = int(audio_len.max())
  else:
    longest = 0
  if "video" in items[0]:
    video_len = np.asarray([len(it["video"]) for it in items], np.int32)
    longest = max(longest, int(video_len.max()) * SAMPLES_PER_VIDEO_FRAME)
  width = padding.audio_width(longest)
  if "video" in items[0]:
    frames = width // SAMPLES_PER_VIDEO_FRAME
    video = np.zeros((n, frames) + items[0]["video"].shape[1:], np.uint8)
    for i, it in enumerate(items):
      video[i, :video_len[i]] = it["video"][:frames]
    batch["video"], batch["video_len"] = video, np.minimum(video_len, frames)
  if "audio" in items[0]:
    audio = np.zeros((n, width), np.float32)
    for i, it in enumerate(items):
      audio[i, :audio_len[i]] = it["audio"]
    batch["audio"], batch["audio_len"] = audio, audio_len
  batch["valid"] = np.ones(n, bool) if valid is None else valid
  batch["index"] = np.arange(n, dtype=np.int32) if indices is None else indices.astype(np.int32)
  return batch


def bucketed_batches(order: np.ndarray, durations: np.ndarray, batch_size: int,
                     rng: np.random.Generator, bucket_batches: int = 8) -> list[np.ndarray]:
  """Cuts ``order`` into full batches of similar durations: windows of ``bucket_batches``
  batches are sorted by duration, split, and the batches shuffled (a remainder is dropped)."""
  batches = []
  window = batch_size * bucket_batches
  for start in range(0, len(order) - batch_size + 1, window):
    chunk = order[start:start + window]
    chunk = chunk[np.argsort(durations[chunk], kind="stable")]
    batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1,
                                                       batch_size)]
  return [batches[i] for i in rng.permutation(len(batches))]


class BatchIterator:
  """Endless training batches over epochs; ``state()``/``load_state()`` make it resumable."""

  def __init__(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None,
               seed: int = 0, transform: Callable[[dict, np.random.Generator], dict] | None = None,
               padding: Padding | None = None):
    if batch_size > len(dataset):
      raise ValueError(f"batch size {batch_size} exceeds the {len(dataset)} utterances")
    self.dataset = dataset
    self.batch_size = batch_size
    self.sampler = sampler or ShuffleSampler(len(dataset), seed)
    self.seed = seed
    self.transform = transform
    self.padding = padding or Padding.for_dataset(dataset)
    self._durations = dataset.durations()
    self.epoch, self.position = 0, 0
    self._order = self.sampler.epoch_order(0)

  def _batches(self) -> list[np.ndarray]:
    rng = np.random.default_rng([self.seed, self.epoch, 1])
    return bucketed_batches(self._order, self._durations, self.batch_size, rng)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = self._batches()
    while self.position >= len(batches):
      self.epoch, self.position = self.epoch + 1, 0
      self._order = self.sampler.epoch_order(self.epoch)
      batches = self._batches()
    indices = batches[self.position]
    batch = collate([self.dataset.load(int(i)) for i in indices], self.padding,
                    indices=indices)
    if self.transform is not None:
      batch = self.transform(batch, np.random.default_rng([self.seed, self.epoch,
                                                           self.position, 2]))
    self.position += 1
    return batch

  def state(self) -> dict[str, Any]:
    """Arrays of fixed shapes: the epoch, the position in it, its order (padded with -1,
    since a pruning sampler may visit a subset) and the sampler's state."""
    order = np.full(len(self.dataset), -1, np.int32)
    order[:len(self._order)] = self._order
    return {"epoch": np.int32(self.epoch), "position": np.int32(self.position),
            "order": order, "sampler": self.sampler.state()}

  def load_state(self, state: dict[str, Any]) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    order = np.asarray(state["order"])
    self._order = order[order >= 0]
    self.sampler.load_state(state["sampler"])


def eval_batches(dataset: Dataset, batch_size: int, padding: Padding | None = None):
  """Every utterance once, in duration order, the last batch padded with ``valid=False``."""
  padding = padding or Padding.for_dataset(dataset)
  order = np.argsort(dataset.durations(), kind="stable")
  for start in range(0, len(order), batch_size):
    indices = order[start:start + batch_size]
    valid = np.ones(batch_size, bool)
    valid[len(indices):] = False
    padded = np.concatenate([indices, np.repeat(indices[:1], batch_size - len(indices))])
    yield collate([dataset.load(int(i)) for i in padded], padding, valid=valid,
                  indices=padded)
