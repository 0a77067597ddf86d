"""DDP-ASR (arXiv:2406.18373): instance-wise pruning sampler, time-wise frame dropping, and
bit-exact resume of the pruning state (and of MSRS's mask state) through checkpoints."""

import numpy as np
import pytest

from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
from sparse_sr.conformer import ConformerConfig
from sparse_sr.data import corpus
from sparse_sr.data.audio import write_wav
from sparse_sr.data.loader import BatchIterator, Dataset, bucketed_batches
from sparse_sr.ddp import (DataPruningSampler, OutsideAnnealing, TimeDrop, batches_per_epoch,
                           dropped_frames, epochs_for_steps, make_sampler,
                           run_steps, splice_out)
from sparse_sr.decoder import DecoderConfig
from sparse_sr.features import FeatureConfig, feature_lengths
from sparse_sr.model import ModelConfig
from sparse_sr.sparse_methods import sparse_training
from sparse_sr.tokenizer import CharTokenizer
from sparse_sr.train import TrainConfig, make_optimizer, train


NANO = dict(encoder=ConformerConfig(32, 2, 1, conv_kernel=5), decoder=DecoderConfig(1, 2),
            subsample_channels=4)


@pytest.mark.parametrize("strategy", ["random", "easy", "hard", "easy2hard"])
def test_keeps_exactly_round_k_n_utterances(strategy):
  n = 37
  sampler = DataPruningSampler(n, 0.7, strategy, seed=3, warmup_epochs=1, total_epochs=5)
  assert sorted(sampler.epoch_order(0)) == list(range(n))  # warm-up visits everything
  sampler.update(np.arange(n), np.random.default_rng(0).random(n))
  for epoch in range(1, 6):
    order = sampler.epoch_order(epoch)
    assert len(order) == round(0.7 * n) == 26 and len(set(order)) == 26
    assert sampler.selected.sum() == 26 and set(np.flatnonzero(sampler.selected)) == set(order)


def test_easy_and_hard_keep_the_right_ends_and_scores_are_running_averages():
  n, keep = 50, 0.6
  rng = np.random.default_rng(1)
  first, second = rng.random(n), rng.random(n)
  sampler = DataPruningSampler(n, keep, "easy", momentum=0.25, warmup_epochs=1,
                               total_epochs=6)
  sampler.update(np.arange(n), first)
  sampler.update(np.arange(n), second)
  expected = 0.25 * first + 0.75 * second
  np.testing.assert_allclose(sampler.scores, expected, rtol=1e-6)
  k = round(keep * n)
  easiest, hardest = set(np.argsort(expected)[:k]), set(np.argsort(expected)[-k:])
  assert set(sampler.epoch_order(1)) == easiest
  sampler.strategy = "hard"
  assert set(sampler.epoch_order(1)) == hardest
  sampler.strategy = "easy2hard"  # a curriculum: easy first, hard last
  assert set(sampler.epoch_order(1)) == easiest
  assert set(sampler.epoch_order(5)) == hardest
  middle = np.argsort(expected)[10:10 + k]
  assert set(sampler.epoch_order(3)) == set(middle)


@pytest.mark.parametrize("strategy", ["random", "easy", "hard", "easy2hard"])
def test_without_warmup_the_first_epoch_is_a_random_subset(strategy):
  n, k, seeds = 37, 26, 400
  counts = np.zeros(n)
  for seed in range(seeds):
    sampler = DataPruningSampler(n, 0.7, strategy, seed=seed, warmup_epochs=0, total_epochs=5)
    order = sampler.epoch_order(0)
    assert len(order) == k and len(set(order)) == k and sampler.selected.sum() == k
    counts[order] += 1
  # nothing is scored yet, so each utterance is kept with probability k / n = 0.703 whatever
  # the strategy: binomial(400, 0.703) has sd 9.1 kept counts; 5 sd either side
  assert np.all(np.abs(counts - seeds * k / n) < 5 * np.sqrt(seeds * k / n * (1 - k / n)))
  # and later epochs keep exactly k too
  sampler = DataPruningSampler(n, 0.7, strategy, seed=3, warmup_epochs=0, total_epochs=5)
  for epoch in range(5):
    order = sampler.epoch_order(epoch)
    sampler.update(order, np.random.default_rng(epoch).random(len(order)))
    assert len(set(order)) == k == sampler.selected.sum()


def test_without_warmup_unseen_utterances_rank_at_the_mean_and_easy2hard_spans_the_run():
  n, k = 10, 4
  unseen, drawn = {6, 7, 8, 9}, set()
  for seed in range(20):
    sampler = DataPruningSampler(n, 0.4, "hard", seed=seed, warmup_epochs=0, total_epochs=5)
    # epoch 0 saw 0-5 with losses 0-5; the unseen 6-9 rank at their mean, 2.5
    sampler.update(np.arange(6), np.arange(6, dtype=np.float32))
    kept = set(sampler.epoch_order(1))
    assert kept - unseen == {3, 4, 5} and len(kept & unseen) == 1
    drawn |= kept & unseen
    sampler.strategy = "easy"
    kept = set(sampler.epoch_order(1))
    assert kept - unseen == {0, 1, 2} and len(kept & unseen) == 1
  assert len(drawn) > 1   # ties are broken at random, not by index
  # easy2hard slides over all five epochs: epoch 0 at the easy end, epoch 4 at the hard end
  scores = np.random.default_rng(0).random(n)
  ranked = np.argsort(scores)
  e2h = DataPruningSampler(n, 0.4, "easy2hard", warmup_epochs=0, total_epochs=5)
  e2h.update(np.arange(n), scores)
  assert e2h.pruned_selections() == 5
  for epoch, start in ((0, 0), (2, 3), (4, 6)):              # round(epoch / 4 * (n - k))
    assert set(e2h.epoch_order(epoch)) == set(ranked[start:start + k])
  stepwise = DataPruningSampler(40, 0.5, "easy2hard", warmup_epochs=0, reselect_every=5,
                                batch_size=4, total_steps=40)
  assert stepwise.pruned_selections() == 8                   # 40 steps in rounds of 5
  with pytest.raises(ValueError, match="warmup_epochs"):
    DataPruningSampler(40, 0.5, "easy", warmup_epochs=-1)


def test_dropped_frames_points_and_chunks():
  rng = np.random.default_rng(0)
  points = dropped_frames(rng, 100, 30, "point", 10)
  assert len(set(points)) == 30 and points.max() < 100
  for _ in range(20):
    chunks = dropped_frames(rng, 100, 25, "chunk", 10)
    assert len(set(chunks)) == 25 and chunks.max() < 100
    runs = np.split(chunks, np.flatnonzero(np.diff(chunks) != 1) + 1)
    # runs are whole chunks (adjacent chunks merge): lengths are sums of 10, 10 and 5
    assert sorted(len(r) % 5 for r in runs) == [0] * len(runs)


@pytest.mark.parametrize("mode,fraction,chunk_frames", [("point", 0.3, 10), ("chunk", 0.3, 10),
                                                       ("point", 0.2, 10), ("chunk", 0.3, 3)])
def test_time_drop_shortens_by_the_fraction_and_keeps_alignment(mode, fraction, chunk_frames):
  hop, width = 160, 16000
  lengths = np.asarray([16000, 12345, 8000, 3210], np.int32)
  audio = np.zeros((4, width), np.float32)
  for i, n in enumerate(lengths):
    audio[i, :n] = np.arange(1, n + 1)  # every sample distinct and non-zero
  batch = {"audio": audio, "audio_len": lengths, "tokens": np.ones((4, 8), np.int32),
           "token_len": np.ones(4, np.int32), "valid": np.ones(4, bool),
           "index": np.arange(4)}
  drop = TimeDrop(mode, fraction, chunk_frames=chunk_frames, hop=hop)
  out = drop(batch, np.random.default_rng(0))
  assert out["audio"].shape[1] == drop.packed_width(width) < width
  np.testing.assert_array_equal(out["tokens"], batch["tokens"])  # transcripts unchanged
  for i, n in enumerate(lengths):
    frames = n // hop
    removed = round(fraction * frames)
    assert out["audio_len"][i] == n - removed * hop
    kept = out["audio"][i, :out["audio_len"][i]]
    assert np.all(np.diff(kept) > 0)  # original order, a subsequence
    assert np.all(out["audio"][i, out["audio_len"][i]:] == 0)  # padding stays padding
    gone = np.setdiff1d(np.arange(1, n + 1), kept) - 1  # dropped sample positions
    assert len(gone) == removed * hop and np.all(gone % hop == np.tile(np.arange(hop),
                                                                        removed))
  old, new = (np.asarray(feature_lengths(x, FeatureConfig()))
              for x in (lengths, out["audio_len"]))
  np.testing.assert_allclose(new, old - np.round(fraction * (lengths // hop)), atol=0)
  # a long transcript caps the drop: at least 6 frames per token stay
  capped = drop({**batch, "token_len": np.asarray([1, 1, 1, 3], np.int32)},
                np.random.default_rng(0))
  assert capped["audio_len"][3] == 3210 - (3210 // hop - 6 * 3) * hop
  assert capped["audio_len"][0] == out["audio_len"][0]
  with pytest.raises(ValueError, match="video"):
    drop({**batch, "video": np.zeros((4, 25, 8, 8), np.uint8)}, np.random.default_rng(0))


def test_crossfade_keeps_the_signal_continuous_and_changes_only_the_blends():
  hop, fade = 160, 40
  signal = np.sin(np.arange(3000) * 2 * np.pi / 37).astype(np.float32)  # 18 frames and a tail
  dropped = np.asarray([0, 3, 4, 7, 12, 17])
  hard, soft = splice_out(signal, dropped, hop), splice_out(signal, dropped, hop, fade)
  kept = [signal[f * hop:(f + 1) * hop] for f in range(18) if f not in dropped]
  np.testing.assert_array_equal(hard, np.concatenate(kept + [signal[18 * hop:]]))
  assert len(soft) == len(hard) == 3000 - 6 * hop
  # runs [3, 4], [7], [12], [17] end in the output at 320, 640, 1280, 1920 (the one at the
  # start has no sample before it); only the fade samples before them change
  junctions = {320: (480, 800), 640: (1120, 1280), 1280: (1920, 2080), 1920: (2720, 2880)}
  blended = np.concatenate([np.arange(at - fade, at) for at in junctions])
  np.testing.assert_array_equal(np.flatnonzero(hard != soft), blended)
  ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
  for at, (start, end) in junctions.items():
    np.testing.assert_allclose(soft[at - fade:at], signal[start - fade:start] * (1 - ramp)
                               + signal[end - fade:end] * ramp, rtol=1e-6, atol=1e-7)
  # continuous: a step is at most the signal's own plus the ramp's slope times |difference|
  step = np.abs(np.diff(signal)).max()
  assert np.abs(np.diff(hard)).max() > 5 * step  # the hard splices jump
  assert np.abs(np.diff(soft)).max() <= step + 2 * np.pi / (2 * fade)
  with pytest.raises(ValueError, match="crossfade"):
    TimeDrop("point", 0.3, crossfade=hop + 1)


def test_batches_per_epoch_matches_the_loader():
  rng = np.random.default_rng(0)
  for n in (7, 64, 70, 300, 301):
    durations = rng.random(n)
    batches = bucketed_batches(np.arange(n), durations, 8, rng)
    assert len(batches) == batches_per_epoch(n, 8)


@pytest.mark.parametrize("warmup_epochs", [1, 0])
def test_sampler_state_checkpoints_bit_exactly(tmp_path, warmup_epochs):
  sampler = make_sampler("easy2hard", 20, 0.5, seed=1, warmup_epochs=warmup_epochs)
  sampler.epoch_order(0)
  sampler.update(np.arange(20), np.random.default_rng(2).random(20))
  sampler.epoch_order(1)
  with Checkpointer(tmp_path, keep=1) as ckpt:
    ckpt.save(1, sampler.state(), force=True)
    restored, _ = ckpt.restore(like=sampler.state())
  assert tree_equal_bitwise(restored, sampler.state())
  twin = make_sampler("easy2hard", 20, 0.5, seed=1, warmup_epochs=warmup_epochs)
  twin.load_state(restored)
  np.testing.assert_array_equal(twin.epoch_order(2), sampler.epoch_order(2))


@pytest.fixture(scope="module")
def noise_dataset(tmp_path_factory):
  """40 utterances of noise, 0.1-0.5 s, transcripts of 1-3 letters: no synthesis needed."""
  folder = tmp_path_factory.mktemp("noise")
  rng = np.random.default_rng(0)
  utterances = []
  for i in range(40):
    seconds = float(rng.uniform(0.1, 0.5))
    path = folder / f"{i}.wav"
    write_wav(path, 0.1 * rng.standard_normal(int(seconds * 16000)), 16000)
    utterances.append(corpus.Utterance(str(i), path, "abc"[:1 + i % 3], "s", seconds))
  return Dataset(utterances, CharTokenizer())


def fake_losses(indices, step):
  """A deterministic per-utterance loss that changes with the step."""
  return np.sin(np.asarray(indices) * 1.7 + step * 0.3) + 1.0


def run_loader(dataset, steps, *, reselect_every=3, state=None, warmup_epochs=1):
  """Steps of (batch indices, sampler state after the step's update); ``state`` resumes."""
  sampler = DataPruningSampler(len(dataset), 0.5, "hard", seed=4, reselect_every=reselect_every,
                               batch_size=4, total_steps=30, warmup_epochs=warmup_epochs)
  iterator = BatchIterator(dataset, 4, sampler, seed=4)
  if state is not None:
    iterator.load_state(state)
  out = []
  for _ in range(steps):
    batch = next(iterator)
    sampler.update(batch["index"], fake_losses(batch["index"], sampler.step))
    out.append((batch["index"].copy(), sampler.state()))
  return out, iterator


def test_reselects_the_hardest_half_every_n_steps(noise_dataset):
  n, per_epoch, every = len(noise_dataset), batches_per_epoch(40, 4), 3
  steps, _ = run_loader(noise_dataset, per_epoch + 4 * every)
  # independent reference: the running scores recomputed from the losses fed in
  scores, scored = np.zeros(n), np.zeros(n, bool)
  kept = None
  for step, (indices, state) in enumerate(steps):   # the batch of training step step + 1
    if step >= per_epoch and (step - per_epoch) % every == 0:
      # a selection just before this batch, from the scores of the `step` steps so far
      assert state["selection_step"] == step
      assert state["selection_round"] == 1 + (step - per_epoch) // every
      kept = set(np.argsort(scores)[-20:])
      assert set(np.flatnonzero(state["selected"])) == kept
    elif step < per_epoch:
      assert state["selection_step"] == 0 and state["selection_round"] == 0
    if kept is not None:
      assert set(indices) <= kept
    losses = fake_losses(indices, step)
    scores[indices] = np.where(scored[indices], 0.5 * scores[indices] + 0.5 * losses, losses)
    scored[indices] = True
    np.testing.assert_allclose(state["scores"], scores, rtol=1e-6)
  # between selections every kept utterance is visited once before any twice
  round_indices = np.concatenate([i for i, _ in steps[per_epoch:per_epoch + every]])
  assert len(set(round_indices)) == every * 4


# selections every 3 steps after a warm-up epoch of 10 steps (10, 13, 16), or from step 0
@pytest.mark.parametrize("warmup_epochs, last_selection", [(1, 16), (0, 18)])
def test_stepwise_selection_resumes_bit_exactly(noise_dataset, tmp_path, warmup_epochs,
                                                last_selection):
  straight, _ = run_loader(noise_dataset, 19, warmup_epochs=warmup_epochs)
  head, iterator = run_loader(noise_dataset, 11, warmup_epochs=warmup_epochs)   # mid-round
  with Checkpointer(tmp_path, keep=1) as ckpt:
    ckpt.save(11, iterator.state(), force=True)
    restored, _ = ckpt.restore(like=iterator.state())
  tail, _ = run_loader(noise_dataset, 8, state=restored, warmup_epochs=warmup_epochs)
  for (a, state_a), (b, state_b) in zip(straight, head + tail):
    np.testing.assert_array_equal(a, b)
    assert tree_equal_bitwise(state_a, state_b)
  assert int(straight[-1][1]["selection_step"]) == last_selection


def test_stepwise_selection_rejects_rounds_longer_than_an_epoch():
  with pytest.raises(ValueError, match="every epoch"):
    DataPruningSampler(40, 0.5, "easy", reselect_every=11, batch_size=4, total_steps=30)
  with pytest.raises(ValueError, match="batch_size"):
    DataPruningSampler(40, 0.5, "easy", reselect_every=2)


def test_easy2hard_slides_over_the_rounds_of_the_run():
  sampler = DataPruningSampler(40, 0.5, "easy2hard", reselect_every=5, batch_size=4,
                               total_steps=40)
  # 10 warm-up steps, then 30 steps in rounds of 5: 6 selections, window from 0 to 20
  assert sampler.pruned_selections() == 6
  scores = np.random.default_rng(3).random(40)
  sampler.update(np.arange(40), scores)
  ranked = np.argsort(scores)
  for round_, start in ((1, 0), (3, 8), (6, 20)):
    assert set(sampler.epoch_order(round_)) <= set(ranked[start:start + 20])
    assert set(np.flatnonzero(sampler.selected)) == set(ranked[start:start + 20])


def test_annealing_epochs_visit_everything_and_switch_time_drop_off():
  n, epochs = 30, 6
  sampler = DataPruningSampler(n, 0.5, "easy2hard", warmup_epochs=1, total_epochs=epochs,
                               anneal_epochs=2)
  scores = np.random.default_rng(5).random(n)
  sampler.update(np.arange(n), scores)
  ranked = np.argsort(scores)
  # epochs 1-3 prune; the easy2hard window spans them (easy end to hard end), not the run
  assert sampler.pruned_selections() == 3
  expected = {0: range(n), 1: ranked[:15], 2: ranked[8:23], 3: ranked[15:], 4: range(n),
              5: range(n)}
  batch = {"audio": np.ones((2, 3200), np.float32), "audio_len": np.asarray([3200, 1600]),
           "token_len": np.ones(2, np.int32)}
  drop = OutsideAnnealing(TimeDrop("chunk", 0.3), sampler)
  for epoch, kept in expected.items():
    assert sorted(sampler.epoch_order(epoch)) == sorted(kept)
    assert sampler.annealing == (epoch >= 4)
    out = drop(batch, np.random.default_rng(0))
    if epoch >= 4:
      assert out is batch   # the final epochs see the audio as it is
    else:
      np.testing.assert_array_equal(out["audio_len"], [3200 - 6 * 160, 1600 - 3 * 160])
  with pytest.raises(ValueError, match="per-epoch"):
    DataPruningSampler(40, 0.5, "easy", anneal_epochs=1, reselect_every=2, batch_size=4,
                       total_steps=30)
  with pytest.raises(ValueError, match="pruned epochs"):
    DataPruningSampler(40, 0.5, "easy", warmup_epochs=1, total_epochs=3, anneal_epochs=2)


@pytest.mark.parametrize("keep, anneal, warmup", [(1.0, 0, 1), (0.7, 0, 1), (0.5, 1, 1),
                                                  (0.7, 0, 0), (0.5, 1, 0)])
def test_run_steps_ends_exactly_at_the_last_epoch(noise_dataset, keep, anneal, warmup):
  epochs, batch_size = 5, 4
  sampler = (make_sampler("none", len(noise_dataset)) if keep == 1.0 else
             DataPruningSampler(len(noise_dataset), keep, "random", total_epochs=epochs,
                                anneal_epochs=anneal, warmup_epochs=warmup))
  iterator = BatchIterator(noise_dataset, batch_size, sampler)
  steps = run_steps(len(noise_dataset), batch_size, epochs, keep, anneal_epochs=anneal,
                    warmup_epochs=warmup)
  epochs_seen = [(next(iterator), iterator.epoch)[1] for _ in range(steps + 1)]
  # the loader's own count: `steps` batches cover epochs 0..4, the next starts epoch 5
  assert epochs_seen[steps - 1] == epochs - 1 and epochs_seen[steps] == epochs


def test_epochs_for_steps_inverts_run_steps():
  for keep, anneal, warmup in ((1.0, 0, 1), (0.7, 0, 1), (0.5, 2, 1), (0.7, 0, 0),
                               (0.5, 2, 0)):
    for epochs in range(4, 9):
      steps = run_steps(300, 8, epochs, keep, anneal_epochs=anneal, warmup_epochs=warmup)
      assert epochs_for_steps(steps, 300, 8, keep, anneal_epochs=anneal,
                              warmup_epochs=warmup) == epochs
      assert epochs_for_steps(steps + 1, 300, 8, keep, anneal_epochs=anneal,
                              warmup_epochs=warmup) == epochs + 1
  # 300 pruned steps: 37 in the warm-up epoch, then 26 a pruned epoch (keep 0.7)
  assert epochs_for_steps(300, 300, 8, 0.7) == 1 + -(-(300 - 37) // 26) == 12
  assert epochs_for_steps(300, 300, 8, 0.7, warmup_epochs=0) == -(-300 // 26) == 12
  assert run_steps(300, 8, 8, 0.7, warmup_epochs=0) == 8 * 26


@pytest.mark.slow
def test_steady_cpu_seconds_exclude_the_compiling_step(noise_dataset):
  import time
  config = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=1000,
                       checkpoint_every=1000, log_every=1, num_buckets=1)
  model_config = ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO)
  start = time.process_time()
  result = train(model_config, config, noise_dataset, quiet=True)
  total = time.process_time() - start
  # two steady steps of a nano model against a run that includes the first step's compile
  assert 0.0 < result["steady_cpu_seconds"] < 0.5 * total


@pytest.mark.slow
@pytest.mark.parametrize("reselect_every, domain, warmup_epochs",
                         [(0, "waveform", 1), (2, "features", 1), (0, "features", 0)])
def test_pruned_msrs_training_resumes_bit_exactly(tmp_path, reselect_every, domain,
                                                  warmup_epochs):
  """DDP sampler (re-selecting every epoch, or every 2 steps; after a warm-up epoch or from
  the first step) + chunk time-drop (of waveform hops, or of feature frames) + MSRS in one
  run: the scores, selection, masks, stability tracker and weights after an interruption
  (mid-round) equal an uninterrupted run's, bit for bit."""
  paths = corpus.make_espeak_corpus(tmp_path / "corpus", corpus.EspeakCorpusConfig(
      hours=0.003, test_utterances=3, max_words=1, vocab_size=20, video=False, seed=1))
  data = Dataset(corpus.read_manifest(paths["train"])[:8], CharTokenizer())
  config = TrainConfig(steps=6, batch_size=2, warmup_steps=1, eval_every=1000,
                       checkpoint_every=3, log_every=1, num_buckets=1)
  model_config = ModelConfig(vocab_size=CharTokenizer().vocab_size, **NANO)
  per_epoch = batches_per_epoch(len(data), config.batch_size)
  pruned_epoch = batches_per_epoch(round(0.7 * len(data)), config.batch_size)
  assert config.steps > per_epoch  # the run crosses from warm-up into pruned epochs

  # one optimizer for the three runs: they share the compiled step
  optimizer, reparam = sparse_training("msrs", make_optimizer(config), steps=config.steps,
                                       start_step=1, check_every=1, tolerance=1.0, patience=4,
                                       ready_fraction=0.0)

  def run(workdir, stop_after=None):
    sampler = DataPruningSampler(len(data), 0.7, "hard", seed=0,
                                 reselect_every=reselect_every, warmup_epochs=warmup_epochs,
                                 batch_size=config.batch_size, total_steps=config.steps)
    result = train(model_config, config, data, workdir=workdir, quiet=True,
                   sampler=sampler, transform=TimeDrop("chunk", 0.3, domain=domain),
                   optimizer=optimizer, reparam=reparam, stop_after=stop_after)
    return result, sampler
  straight, straight_sampler = run(tmp_path / "a")
  run(tmp_path / "b", stop_after=5)
  resumed, resumed_sampler = run(tmp_path / "b")
  for key in ("params", "other", "opt_state", "key"):
    assert tree_equal_bitwise(straight[key], resumed[key]), key
  assert tree_equal_bitwise(straight_sampler.state(), resumed_sampler.state())
  assert straight_sampler.scored.sum() >= 2 * config.batch_size
  assert straight_sampler.selected.sum() == round(0.7 * len(data))
  # the last selection was made after the warm-up epoch (a 2-step round ends with the run),
  # or without warm-up after the first pruned epoch (the third would start at step 6)
  assert int(straight_sampler.state()["selection_step"]) == (per_epoch if warmup_epochs
                                                             else pruned_epoch)
  # tolerance 1: every check but the first (nothing to compare with) passes; patience 4
  assert int(straight["opt_state"].stability.stable_step) == 5
  assert int(straight["opt_state"].phase) == 1
  assert straight["history"][-1] == resumed["history"][-1]


def speech_batch(lengths, width, token_len, seed=0):
  """A padded batch of noise waveforms with ``token_len`` tokens each (ids 1..)."""
  rng = np.random.default_rng(seed)
  audio = np.zeros((len(lengths), width), np.float32)
  for i, n in enumerate(lengths):
    audio[i, :n] = 0.1 * rng.standard_normal(n)
  tokens = np.zeros((len(lengths), max(8, max(token_len))), np.int32)
  for i, n in enumerate(token_len):
    tokens[i, :n] = 1 + np.arange(n)
  return {"audio": audio, "audio_len": np.asarray(lengths, np.int32), "tokens": tokens,
          "token_len": np.asarray(token_len, np.int32), "valid": np.ones(len(lengths), bool)}


@pytest.mark.parametrize("mode,fraction", [("point", 0.3), ("chunk", 0.3), ("point", 0.2)])
def test_feature_time_drop_keeps_the_stated_fraction_of_frames(mode, fraction):
  config = FeatureConfig()
  lengths, width = [16000, 12345, 8000, 3210], 16000
  batch = speech_batch(lengths, width, [1, 1, 1, 1])
  drop = TimeDrop(mode, fraction, domain="features")
  out = drop(batch, np.random.default_rng(0))
  np.testing.assert_array_equal(out["audio"], batch["audio"])   # the waveform stays whole
  np.testing.assert_array_equal(out["audio_len"], batch["audio_len"])
  frames = config.num_frames(width)
  assert out["frame_index"].shape == (4, drop.packed_frames(frames))
  assert out["frame_index"].shape[1] % 4 == 0 and out["frame_index"].shape[1] < frames
  for i, n in enumerate(lengths):
    total = config.num_frames(n)
    kept = out["frame_index"][i, :out["frame_len"][i]]
    assert out["frame_len"][i] == total - round(fraction * total)
    assert np.all(np.diff(kept) > 0) and kept[0] >= 0 and kept[-1] < total  # in order
    assert np.all(out["frame_index"][i, out["frame_len"][i]:] == 0)
    if mode == "chunk":  # the dropped frames are runs of 10 (the last one possibly shorter)
      gone = np.setdiff1d(np.arange(total), kept)
      runs = np.split(gone, np.flatnonzero(np.diff(gone) != 1) + 1)
      assert sum(len(r) % 10 != 0 for r in runs) <= 1
  # a long transcript caps the drop: at least 6 frames per token stay
  capped = drop({**batch, "token_len": np.asarray([1, 1, 7, 3], np.int32)},
                np.random.default_rng(0))
  assert capped["frame_len"][2] == 6 * 7 > out["frame_len"][2]   # 47 frames, 42 must stay
  assert capped["frame_len"][3] == config.num_frames(3210) == 17  # under 18: none dropped
  with pytest.raises(ValueError, match="crossfade"):
    TimeDrop("point", 0.3, crossfade=40, domain="features")
  with pytest.raises(ValueError, match="domain"):
    TimeDrop("point", 0.3, domain="spectrum")


def test_feature_time_drop_caps_fall_back_to_the_bucket_width():
  drop = TimeDrop("point", 0.3, domain="features")
  batch = speech_batch([16000, 16000], 16000, [1, 16])  # 97 frames, 6 * 16 = 96 must stay
  out = drop(batch, np.random.default_rng(0))
  assert out["frame_len"].tolist() == [97 - 29, 96]
  assert out["frame_index"].shape[1] == 97


def nano_model(**overrides):
  from flax import nnx
  from sparse_sr.model import SpeechRecognizer
  config = ModelConfig(vocab_size=CharTokenizer().vocab_size, spec_augment=None, **NANO,
                       **overrides)
  return SpeechRecognizer(config, rngs=nnx.Rngs(0))


def test_model_gathers_the_log_mels_of_the_kept_frames(monkeypatch):
  """The features the model normalizes are the whole waveform's log-mels at exactly the kept
  frames (reference: numpy indexing of ``log_mel`` of each unpadded utterance), normalized
  over the kept frames only; the encoder's sequence is the packed one."""
  import jax
  from sparse_sr import model as model_module
  from sparse_sr.features import log_mel, normalize
  lengths = [16000, 9000, 4000]
  batch = speech_batch(lengths, 16000, [1, 2, 1])
  out = TimeDrop("chunk", 0.3, domain="features")(batch, np.random.default_rng(1))
  seen = {}

  def recording_normalize(features, lengths):
    seen["features"], seen["lengths"] = features, lengths
    seen["normalized"] = normalize(features, lengths)
    return seen["normalized"]
  monkeypatch.setattr(model_module, "normalize", recording_normalize)
  model = nano_model()
  memory, valid = model.encode(out)
  np.testing.assert_array_equal(seen["lengths"], out["frame_len"])
  for i, n in enumerate(lengths):
    kept = out["frame_index"][i, :out["frame_len"][i]]
    reference = np.asarray(log_mel(batch["audio"][i, :n]))[kept]
    got = np.asarray(seen["features"][i, :len(kept)])
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    normalized = np.asarray(seen["normalized"][i])
    np.testing.assert_allclose(normalized[:len(kept)].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized[:len(kept)].std(0), 1.0, atol=1e-2)
    assert np.all(normalized[len(kept):] == 0)
  # the encoder sees ceil(ceil(packed / 2) / 2) frames instead of the whole utterance's
  packed, whole = out["frame_index"].shape[1], FeatureConfig().num_frames(16000)
  assert memory.shape[1] == -(-(-(-packed // 2)) // 2) < -(-(-(-whole // 2)) // 2)
  np.testing.assert_array_equal(np.asarray(valid).sum(1), -(-(-(-out["frame_len"] // 2)) // 2))
  full_shape = jax.eval_shape(lambda b: model.encode(b)[0], batch).shape
  assert memory.shape[1] < full_shape[1]


def test_feature_time_drop_loss_is_padding_invariant():
  """The same utterances and kept frames in a wider bucket (more audio padding, more
  ``frame_index`` padding) give the same per-utterance losses."""
  from sparse_sr.losses import hybrid_loss
  lengths = [9000, 6000, 4000]
  batch = speech_batch(lengths, 9600, [1, 2, 1])
  out = TimeDrop("point", 0.3, domain="features")(batch, np.random.default_rng(2))
  wide = {**out, "audio": np.pad(out["audio"], ((0, 0), (0, 6400))),
          "frame_index": np.pad(out["frame_index"], ((0, 0), (0, 12)))}
  import jax
  from flax import nnx
  graphdef, state = nnx.split(nano_model())
  losses = jax.jit(lambda b: hybrid_loss(nnx.merge(graphdef, state), b)[1]["losses"])
  np.testing.assert_allclose(losses(wide), losses(out), rtol=2e-5)
  # and they differ from the undropped batch's: the drop is not a no-op
  assert np.all(np.abs(np.asarray(losses(batch) - losses(out))) > 1e-4)


def test_feature_time_drop_train_step_compiles_a_shorter_sequence():
  """The jitted training step on a feature-dropped batch runs the conformer on the packed
  length: its jaxpr's attention scores are (packed / 4)-long, not (frames / 4)-long."""
  import jax
  from flax import nnx
  from sparse_sr.train import make_train_step
  model = nano_model()
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  config = TrainConfig(steps=2, batch_size=2, warmup_steps=1)
  optimizer = make_optimizer(config)
  step = make_train_step(graphdef, optimizer, config)
  batch = speech_batch([16000, 12000], 16000, [1, 1])
  dropped = TimeDrop("point", 0.3, domain="features")(batch, np.random.default_rng(0))

  def encoder_lengths(b):
    shapes = jax.eval_shape(step, params, other, optimizer.init(params),
                            jax.random.key(0), b)
    text = str(jax.make_jaxpr(step)(params, other, optimizer.init(params),
                                    jax.random.key(0), b))
    return shapes, text
  whole = -(-(-(-FeatureConfig().num_frames(16000) // 2)) // 2)
  packed = -(-(-(-dropped["frame_index"].shape[1] // 2)) // 2)
  assert packed < whole
  _, dropped_text = encoder_lengths(dropped)
  _, whole_text = encoder_lengths(batch)
  # attention logits (batch, heads, T, T): T = encoder frames
  assert f"2,2,{packed},{packed}]" in dropped_text and f"2,{whole},{whole}]" not in dropped_text
  assert f"2,2,{whole},{whole}]" in whole_text
