"""DDP-ASR: dynamic data pruning for speech recognition (Xiao et al. 2024, arXiv:2406.18373).

Two pipeline components for :class:`sparse_sr.data.loader.BatchIterator`:

- :class:`DataPruningSampler` (Sec. 3.1, instance-wise): every epoch (or, with
  ``reselect_every=N``, every N training steps) re-selects a fraction ``keep`` of the
  utterances by a running per-utterance score, the exponential moving average of the
  per-example hybrid loss the training step returns (:meth:`update`). ``easy`` keeps the
  lowest scores, ``hard`` the highest, ``easy2hard`` slides the kept window from the easy end
  to the hard end over the run (a curriculum), ``random`` draws a fresh random subset (the
  baseline). The first ``warmup_epochs`` visit everything so every utterance is scored
  (with ``warmup_epochs=0`` the first selection has no scores to rank by, so it is a random
  subset for every strategy, and utterances not yet seen rank at the mean score until they
  are); with ``anneal_epochs`` the last ones visit everything again, undropped (see below).
  Its state (scores, which were scored, the last selection, the steps seen and the step and
  round of the last selection) is arrays of fixed shape, saved in checkpoints; randomness is
  counter-based, a function of ``(seed, round)`` with the round in the iterator's state, so
  resumed runs are bit-exact.
- :class:`TimeDrop` (Sec. 3.2, time-wise): drops a fraction of each utterance's feature frames,
  as isolated ``point`` frames or contiguous ``chunk`` s, and re-packs the batch to a shorter
  padded length so the compiled step really costs less. Features are computed inside the model
  from waveforms. With ``domain="waveform"`` (the default) a frame is dropped as its 10 ms hop
  of samples; the log-mel of the re-packed waveform has the stated fraction fewer frames.
  ``crossfade`` blends each splice (:func:`splice_out`) so that it is not a click. With
  ``domain="features"`` (the paper's setting, where frames are dropped from the features) the
  waveform stays whole and the batch gets the indices of the kept feature frames
  (``frame_index``, ``frame_len``): the model computes the log-mels of the whole waveform and
  gathers those frames before normalization, so there is no splice and the encoder runs on
  the shorter sequence. Transcripts are unchanged, so an utterance
  keeps at least ``min_frames_per_token`` frames per token (CTC needs one encoder frame per
  token after the 4x subsampling; short digit words would otherwise become untrainable).
- Annealing (an addition, not in DDP-ASR): InfoBatch (Qin et al. 2024, arXiv:2303.04947,
  Sec. 3.3) ends dynamic pruning with a few epochs on the whole, unmodified data, so the model
  finishes on the training distribution instead of a pruned one. ``anneal_epochs`` gives the
  sampler those final full epochs, and :class:`OutsideAnnealing` switches a time-drop off in
  them (the test audio is not time-dropped).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from sparse_sr.data.loader import ShuffleSampler

STRATEGIES = ("none", "random", "easy", "hard", "easy2hard")
TIME_DROPS = ("point", "chunk")
DROP_DOMAINS = ("waveform", "features")


class DataPruningSampler:
  """Keeps exactly ``round(keep * num_examples)`` utterances per selection after warm-up.

  A selection is made at the start of every epoch, or with ``reselect_every=N`` every ``N``
  training steps: the loader's "epoch" is then a selection round of ``N`` batches drawn from
  the kept utterances (each visited once before any twice), so the loader asks again exactly
  every ``N`` steps. The warm-up epochs stay whole epochs. :meth:`update` is called once per
  training step (as :func:`sparse_sr.train.train` does), which is how the sampler counts steps.
  ``easy2hard`` slides over the pruned epochs of ``total_epochs`` (from the first after
  warm-up to the last before annealing), or with ``reselect_every`` over the rounds of
  ``total_steps`` steps of batch ``batch_size`` after warm-up. The last ``anneal_epochs`` of
  ``total_epochs`` (per-epoch selection only) visit everything again.
  """

  def __init__(self, num_examples: int, keep: float = 0.7, strategy: str = "easy", *,
               seed: int = 0, momentum: float = 0.5, warmup_epochs: int = 1,
               total_epochs: int = 10, reselect_every: int = 0,
               batch_size: int | None = None, total_steps: int | None = None,
               anneal_epochs: int = 0):
    if strategy not in STRATEGIES[1:]:
      raise ValueError(f"strategy must be one of {STRATEGIES[1:]}, got {strategy!r}")
    if not 0.0 < keep <= 1.0:
      raise ValueError(f"keep must be in (0, 1], got {keep}")
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if reselect_every < 0:
      raise ValueError(f"reselect_every must be >= 0 (0: every epoch), got {reselect_every}")
    if warmup_epochs < 0:
      raise ValueError(f"warmup_epochs must be >= 0 (0: prune from the first epoch), "
                       f"got {warmup_epochs}")
    if anneal_epochs < 0 or (anneal_epochs and warmup_epochs + anneal_epochs >= total_epochs):
      raise ValueError(f"anneal_epochs must be >= 0 and leave pruned epochs between "
                       f"{warmup_epochs} warm-up and the annealing epochs of {total_epochs}, "
                       f"got {anneal_epochs}")
    if anneal_epochs and reselect_every:
      raise ValueError("annealing epochs need per-epoch selection (reselect_every=0)")
    if reselect_every and (batch_size is None or total_steps is None):
      raise ValueError("re-selecting every N steps needs batch_size and total_steps")
    # the loader keeps an epoch's order in an array of num_examples entries (its state)
    if reselect_every and reselect_every * batch_size > num_examples:
      raise ValueError(f"re-selecting every {reselect_every} steps of batch {batch_size} "
                       f"visits more than the {num_examples} utterances between selections; "
                       "re-select every epoch instead")
    self.num_examples = num_examples
    self.keep = keep
    self.strategy = strategy
    self.seed = seed
    self.momentum = momentum
    self.warmup_epochs = warmup_epochs
    self.total_epochs = total_epochs
    self.reselect_every = reselect_every
    self.batch_size = batch_size
    self.total_steps = total_steps
    self.anneal_epochs = anneal_epochs
    self.scores = np.zeros(num_examples, np.float32)
    self.scored = np.zeros(num_examples, bool)
    self.selected = np.ones(num_examples, bool)
    self.step = 0              # update() calls: training steps seen
    self.selection_step = 0    # self.step when the current selection was made
    self.selection_round = 0   # the loader's epoch (a round with reselect_every) it was for

  @property
  def num_kept(self) -> int:
    return round(self.keep * self.num_examples)

  def pruned_selections(self) -> int:
    """Selections after warm-up in the whole run: the span of the easy2hard curriculum."""
    if not self.reselect_every:
      return self.total_epochs - self.warmup_epochs - self.anneal_epochs
    warmup_steps = self.warmup_epochs * batches_per_epoch(self.num_examples, self.batch_size)
    return -(-(self.total_steps - warmup_steps) // self.reselect_every)

  def annealing_epoch(self, epoch: int) -> bool:
    """Whether ``epoch`` is one of the final full (annealing) epochs."""
    return bool(self.anneal_epochs) and epoch >= self.total_epochs - self.anneal_epochs

  @property
  def annealing(self) -> bool:
    """Whether the current selection (the loader's epoch) is an annealing epoch."""
    return self.annealing_epoch(self.selection_round)

  def _filled_scores(self) -> np.ndarray:
    """Scores, with never-scored utterances at the mean score (neither easy nor hard)."""
    fill = float(np.mean(self.scores[self.scored])) if self.scored.any() else 0.0
    return np.where(self.scored, self.scores, fill)

  def select(self, epoch: int) -> np.ndarray:
    """Indices kept in ``epoch`` (a round with ``reselect_every``), sorted."""
    n, k = self.num_examples, self.num_kept
    rng = np.random.default_rng([self.seed, epoch, 7])
    if epoch < self.warmup_epochs or self.annealing_epoch(epoch):
      return np.arange(n)
    if self.strategy == "random":
      return np.sort(rng.choice(n, k, replace=False))
    # easiest first; ties broken at random so equal scores do not favour low indices
    ranked = np.lexsort((rng.permutation(n), self._filled_scores()))
    if self.strategy == "easy":
      start = 0
    elif self.strategy == "hard":
      start = n - k
    else:  # easy2hard: the window slides linearly over the remaining selections
      span = max(1, self.pruned_selections() - 1)
      start = round(min(1.0, (epoch - self.warmup_epochs) / span) * (n - k))
    return np.sort(ranked[start:start + k])

  def epoch_order(self, epoch: int) -> np.ndarray:
    kept = self.select(epoch)
    self.selected = np.zeros(self.num_examples, bool)
    self.selected[kept] = True
    self.selection_step, self.selection_round = self.step, epoch
    rng = np.random.default_rng([self.seed, epoch])
    if not self.reselect_every or epoch < self.warmup_epochs:
      return rng.permutation(kept)
    visits = self.reselect_every * self.batch_size
    cycles = -(-visits // len(kept))
    return np.concatenate([rng.permutation(kept) for _ in range(cycles)])[:visits]

  def update(self, indices: np.ndarray, losses: np.ndarray) -> None:
    """Running score: first loss as is, then ``momentum * old + (1 - momentum) * loss``."""
    indices = np.asarray(indices)
    losses = np.asarray(losses, np.float32)
    old = self.scores[indices]
    self.scores[indices] = np.where(self.scored[indices],
                                    self.momentum * old + (1 - self.momentum) * losses, losses)
    self.scored[indices] = True
    self.step += 1

  def state(self) -> dict[str, np.ndarray]:
    return {"scores": self.scores.copy(), "scored": self.scored.copy(),
            "selected": self.selected.copy(), "step": np.int32(self.step),
            "selection_step": np.int32(self.selection_step),
            "selection_round": np.int32(self.selection_round)}

  def load_state(self, state: dict[str, np.ndarray]) -> None:
    self.scores = np.array(state["scores"], np.float32)
    self.scored = np.array(state["scored"], bool)
    self.selected = np.array(state["selected"], bool)
    self.step = int(state["step"])
    self.selection_step = int(state["selection_step"])
    self.selection_round = int(state["selection_round"])


def make_sampler(strategy: str, num_examples: int, keep: float = 0.7, *, seed: int = 0,
                 **kwargs):
  """``ShuffleSampler`` for ``"none"`` (full data), else :class:`DataPruningSampler`."""
  if strategy == "none":
    return ShuffleSampler(num_examples, seed)
  return DataPruningSampler(num_examples, keep, strategy, seed=seed, **kwargs)


def batches_per_epoch(num_utterances: int, batch_size: int, bucket_batches: int = 8) -> int:
  """Full batches :func:`sparse_sr.data.loader.bucketed_batches` cuts from an epoch."""
  window = batch_size * bucket_batches
  return sum(min(window, num_utterances - start) // batch_size
             for start in range(0, num_utterances - batch_size + 1, window))


def run_steps(num_examples: int, batch_size: int, epochs: int, keep: float = 1.0, *,
              warmup_epochs: int = 1, anneal_epochs: int = 0) -> int:
  """Training steps of ``epochs`` epochs: ``warmup_epochs`` and ``anneal_epochs`` whole, the
  others of ``round(keep * num_examples)`` utterances (``keep=1``: full data throughout)."""
  full = batches_per_epoch(num_examples, batch_size)
  if keep >= 1.0:
    return epochs * full
  whole = min(epochs, warmup_epochs + anneal_epochs)
  return whole * full + (epochs - whole) * batches_per_epoch(round(keep * num_examples),
                                                             batch_size)


def epochs_for_steps(steps: int, num_examples: int, batch_size: int, keep: float = 1.0, *,
                     warmup_epochs: int = 1, anneal_epochs: int = 0) -> int:
  """The fewest epochs whose :func:`run_steps` reach ``steps`` (pruned epochs are shorter,
  so a pruned run of a given number of steps spans more epochs than a full one)."""
  epochs = 1
  while run_steps(num_examples, batch_size, epochs, keep, warmup_epochs=warmup_epochs,
                  anneal_epochs=anneal_epochs) < steps:
    epochs += 1
  return epochs


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def dropped_frames(rng: np.random.Generator, num_frames: int, count: int, mode: str,
                   chunk_frames: int) -> np.ndarray:
  """Sorted indices of ``count`` of ``num_frames`` frames: uniformly random isolated frames
  (``point``) or non-overlapping runs of ``chunk_frames`` (the last one shorter when
  ``count`` is not a multiple), placed uniformly at random (``chunk``)."""
  if count <= 0:
    return np.zeros(0, np.int64)
  if mode == "point":
    return np.sort(rng.choice(num_frames, count, replace=False))
  lengths = [chunk_frames] * (count // chunk_frames) + ([count % chunk_frames]
                                                         if count % chunk_frames else [])
  kept = num_frames - count
  # Stars and bars: chunk j goes after the slots[j] - j-th kept frame, so chunks never overlap.
  slots = np.sort(rng.choice(kept + len(lengths), len(lengths), replace=False))
  starts = slots - np.arange(len(lengths)) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
  return np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])


def splice_out(signal: np.ndarray, dropped: np.ndarray, hop: int, crossfade: int = 0
               ) -> np.ndarray:
  """``signal`` without the hops ``dropped`` (sorted frame indices), ``len(dropped) * hop``
  samples shorter. A hard splice jumps from the sample before a removed run to the one after
  it: a click, whose broadband energy (raised further by pre-emphasis) lands in every 25 ms
  analysis window around it, which isolated-frame drops put in most windows. With
  ``crossfade=L`` (at most ``hop``) the last ``L`` kept samples before each run are blended
  by a raised-cosine ramp into the run's last ``L`` samples, which the signal after the run
  continues, so it stays continuous; every other sample is the hard splice's."""
  keep = np.ones(len(signal), bool)
  keep[(dropped[:, None] * hop + np.arange(hop)[None, :]).ravel()] = False
  out = signal[keep]
  if not crossfade or not len(dropped):
    return out
  breaks = np.flatnonzero(np.diff(dropped) != 1) + 1
  starts = dropped[np.concatenate([[0], breaks])] * hop               # removed runs [start,
  ends = (dropped[np.concatenate([breaks - 1, [len(dropped) - 1]])] + 1) * hop  # end)
  at = starts - np.concatenate([[0], np.cumsum(ends - starts)[:-1]])  # the run's place in out
  inner = (starts > 0) & (ends < len(signal))  # a run at either end leaves no junction
  starts, ends, at = starts[inner, None], ends[inner, None], at[inner, None]
  ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(crossfade) + 0.5) / crossfade)
  offsets = np.arange(-crossfade, 0)
  out[at + offsets] = (signal[starts + offsets] * (1 - ramp)
                       + signal[ends + offsets] * ramp).astype(out.dtype)
  return out


@dataclasses.dataclass(frozen=True)
class TimeDrop:
  """``transform(batch, rng)`` for :class:`BatchIterator`: drops ``round(fraction * frames)``
  frames of every utterance (fewer where that would leave under ``min_frames_per_token``
  frames per token) and re-packs the batch to a shorter width.

  ``domain="waveform"``: whole hops are cut out of the audio, re-packed to a shorter width
  (``(1 - fraction) * width`` plus two hops of slack, rounded up to ``multiple``).
  ``domain="features"``: of the ``1 + (length - n_fft) // hop`` feature frames
  (:meth:`sparse_sr.features.FeatureConfig.num_frames`), the kept ones' indices, in order,
  go into ``frame_index (batch, packed_frames)`` (padding 0) and their count into
  ``frame_len``; the audio is unchanged. Either new width depends only on the old one (the
  old width when a capped utterance does not fit), so each length bucket compiles once more,
  not once per batch.
  """
  mode: str = "chunk"
  fraction: float = 0.3
  chunk_frames: int = 10        # 100 ms
  hop: int = 160                # samples per feature frame (10 ms at 16 kHz)
  multiple: int = 640           # one video frame, the loader's alignment unit
  min_frames_per_token: int = 6
  crossfade: int = 0            # samples blended across each splice (see splice_out)
  domain: str = "waveform"      # DROP_DOMAINS: cut audio hops, or gather feature frames
  n_fft: int = 512              # samples per analysis frame (FeatureConfig.n_fft)
  frame_multiple: int = 4       # packed feature frames: whole encoder frames (4x subsampling)

  def __post_init__(self):
    if self.mode not in TIME_DROPS:
      raise ValueError(f"time drop must be one of {TIME_DROPS}, got {self.mode!r}")
    if not 0.0 <= self.fraction < 1.0:
      raise ValueError(f"drop fraction must be in [0, 1), got {self.fraction}")
    if self.chunk_frames < 1:
      raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
    if not 0 <= self.crossfade <= self.hop:
      raise ValueError(f"crossfade must be in [0, hop={self.hop}] samples, got {self.crossfade}")
    if self.domain not in DROP_DOMAINS:
      raise ValueError(f"time-drop domain must be one of {DROP_DOMAINS}, got {self.domain!r}")
    if self.domain == "features" and self.crossfade:
      raise ValueError("crossfade blends waveform splices; feature-domain drop has none")

  def packed_width(self, width: int) -> int:
    return min(width, _round_up(math.ceil((1 - self.fraction) * width) + 2 * self.hop,
                                self.multiple))

  def packed_frames(self, frames: int) -> int:
    """Width of ``frame_index`` for a bucket of ``frames`` feature frames: the most any
    uncapped utterance keeps (``n - round(fraction * n)`` grows with ``n``), rounded up."""
    return min(frames, _round_up(frames - round(self.fraction * frames), self.frame_multiple))

  def num_frames(self, length: int) -> int:
    """Frames of an utterance of ``length`` samples in this transform's domain."""
    if self.domain == "waveform":
      return length // self.hop
    return max(0, 1 + (length - self.n_fft) // self.hop)

  def num_dropped(self, length: int, tokens: int) -> int:
    frames = self.num_frames(length)
    return max(0, min(round(self.fraction * frames),
                      frames - self.min_frames_per_token * tokens))

  def _dropped(self, rng: np.random.Generator, length: int, tokens: int) -> np.ndarray:
    return dropped_frames(rng, self.num_frames(length), self.num_dropped(length, tokens),
                          self.mode, self.chunk_frames)

  def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    if "video" in batch:
      raise ValueError("time-drop re-packs audio only; the video stream would lose alignment")
    if self.domain == "features":
      return self._gather_frames(batch, rng)
    audio, lengths = batch["audio"], batch["audio_len"]
    kept_audio = []
    for i, length in enumerate(lengths):
      drop = self._dropped(rng, int(length), int(batch["token_len"][i]))
      kept_audio.append(splice_out(audio[i, :int(length)], drop, self.hop, self.crossfade))
    new_lengths = np.asarray([len(a) for a in kept_audio], lengths.dtype)
    width = self.packed_width(audio.shape[1])
    if new_lengths.max() > width:  # a capped utterance: keep the bucket's width
      width = audio.shape[1]
    packed = np.zeros((audio.shape[0], width), audio.dtype)
    for i, kept in enumerate(kept_audio):
      packed[i, :len(kept)] = kept
    return {**batch, "audio": packed, "audio_len": new_lengths}

  def _gather_frames(self, batch: dict[str, np.ndarray], rng: np.random.Generator
                     ) -> dict[str, np.ndarray]:
    """The feature-domain drop: the kept frames' indices, the audio as it is."""
    lengths = batch["audio_len"]
    kept_frames = []
    for i, length in enumerate(lengths):
      keep = np.ones(self.num_frames(int(length)), bool)
      keep[self._dropped(rng, int(length), int(batch["token_len"][i]))] = False
      kept_frames.append(np.flatnonzero(keep))
    frame_len = np.asarray([len(k) for k in kept_frames], np.int32)
    frames = self.num_frames(batch["audio"].shape[1])
    width = self.packed_frames(frames)
    if frame_len.max(initial=0) > width:  # a capped utterance: keep the bucket's frames
      width = frames
    frame_index = np.zeros((len(lengths), width), np.int32)
    for i, kept in enumerate(kept_frames):
      frame_index[i, :len(kept)] = kept
    return {**batch, "frame_index": frame_index, "frame_len": frame_len}


@dataclasses.dataclass(frozen=True)
class OutsideAnnealing:
  """``transform`` (e.g. :class:`TimeDrop`) in every epoch but ``sampler``'s annealing ones,
  where batches pass unchanged. The sampler's epoch is in its checkpointed state, so a
  resumed run switches at the same step."""
  transform: Callable[[dict, np.random.Generator], dict]
  sampler: DataPruningSampler

  def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    return batch if self.sampler.annealing else self.transform(batch, rng)
