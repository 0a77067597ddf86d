"""Speaker-level CMVN and the adaptation protocol against numpy/librosa references."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from flax import nnx
from scipy.special import logsumexp

from jaxrepro.cli import main
from sparse_sr.adaptation import (UNKNOWN_TRANSCRIPT, SelfTrainingConfig, SpeakerCMVN,
                                  adaptation_split, balanced_pseudo_labels, candidate_scores,
                                  held_out_cmvn_splits, pooled_cmvn_stats, prior_matching_bias,
                                  prior_matching_biases, self_train, speaker_cmvn_stats,
                                  take_index)
from sparse_sr.conformer import ConformerConfig
from sparse_sr.data.audio import read_wav, write_wav
from sparse_sr.data.corpus import DIGIT_WORDS, Utterance
from sparse_sr.data.loader import Dataset
from sparse_sr.decoder import DecoderConfig
from sparse_sr.features import FeatureConfig, log_mel, normalize_with
from sparse_sr.model import ModelConfig, SpeechRecognizer
from sparse_sr.tokenizer import CharTokenizer
from sparse_sr.train import TrainConfig

librosa = pytest.importorskip("librosa")
CONFIG = FeatureConfig()


def recordings(root, speakers, takes, rate=16000, seed=0):
  """FSDD-named wavs ``{digit}_{speaker}_{take}.wav``: noise plus a speaker-specific tone."""
  rng = np.random.default_rng(seed)
  utterances = []
  for s, speaker in enumerate(speakers):
    for take in takes:
      digit = take % 10
      n = int(rate * rng.uniform(0.2, 0.5))
      t = np.arange(n) / rate
      audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * s + 20 * digit) * t) + 0.05 * rng.normal(size=n)
      path = root / f"{digit}_{speaker}_{take}.wav"
      write_wav(path, audio.astype(np.float32), rate)
      utterances.append(Utterance(path.stem, path, DIGIT_WORDS[digit], speaker, n / rate))
  return utterances


def librosa_log_mel(path):
  """Independent reference of the front end (as test_features checks it)."""
  signal, _ = read_wav(path, 16000)
  emphasized = np.concatenate([signal[:1], signal[1:] - 0.97 * signal[:-1]])
  power = librosa.feature.melspectrogram(
      y=emphasized, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
      center=False, power=2.0, window="hann")
  return np.log(power.T + CONFIG.log_floor)


def reference_stats(utterances):
  frames = np.concatenate([librosa_log_mel(u.audio) for u in utterances])
  return frames.mean(0), np.sqrt(frames.var(0) + 1e-5)


def test_adaptation_split_by_take_hides_adaptation_transcripts(tmp_path):
  utts = recordings(tmp_path, ["carol"], range(6))
  adaptation, evaluation = adaptation_split(utts, adaptation_takes=4)
  assert [take_index(u) for u in adaptation] == [0, 1, 2, 3]
  assert [take_index(u) for u in evaluation] == [4, 5]
  assert {u.text for u in adaptation} == {UNKNOWN_TRANSCRIPT}
  assert evaluation == utts[4:]       # untouched, transcripts included
  with pytest.raises(ValueError, match="per speaker"):
    adaptation_split(utts + recordings(tmp_path, ["dave"], range(2)))
  with pytest.raises(ValueError, match="empty half"):
    adaptation_split(utts, adaptation_takes=6)
  with pytest.raises(ValueError, match="not_fsdd"):
    take_index(dataclasses.replace(utts[0], id="not_fsdd"))


def test_speaker_cmvn_stats_match_librosa_frames(tmp_path):
  utts = recordings(tmp_path, ["alice", "bob"], range(5))
  stats = speaker_cmvn_stats(Dataset(utts, CharTokenizer()), CONFIG, batch_size=3)
  assert set(stats) == {"alice", "bob"}
  for speaker, (mean, std) in stats.items():
    ref_mean, ref_std = reference_stats([u for u in utts if u.speaker == speaker])
    np.testing.assert_allclose(mean, ref_mean, atol=2e-3)
    np.testing.assert_allclose(std, ref_std, rtol=2e-3, atol=2e-3)
  pooled_mean, pooled_std = pooled_cmvn_stats(Dataset(utts, CharTokenizer()), CONFIG)
  ref_mean, ref_std = reference_stats(utts)
  np.testing.assert_allclose(pooled_mean, ref_mean, atol=2e-3)
  np.testing.assert_allclose(pooled_std, ref_std, rtol=2e-3, atol=2e-3)


def test_speaker_cmvn_stats_of_cepstra_match_librosa_mfcc(tmp_path):
  utts = recordings(tmp_path, ["alice"], range(4))
  config = FeatureConfig(n_cepstra=13, cepstral_lifter=22.0)
  mean, std = speaker_cmvn_stats(Dataset(utts, CharTokenizer()), config)["alice"]
  frames = np.concatenate([librosa.feature.mfcc(S=librosa_log_mel(u.audio).T, n_mfcc=13,
                                                lifter=22.0).T for u in utts])
  assert mean.shape == std.shape == (13,)
  np.testing.assert_allclose(mean, frames.mean(0), atol=2e-2, rtol=1e-3)
  np.testing.assert_allclose(std, np.sqrt(frames.var(0) + 1e-5), atol=2e-2, rtol=1e-3)


def test_protocol_reads_neither_transcripts_nor_evaluation_audio(tmp_path):
  tok = CharTokenizer()
  train = recordings(tmp_path, ["alice"], range(3))
  training = speaker_cmvn_stats(Dataset(train, tok), CONFIG)
  pooled = pooled_cmvn_stats(Dataset(train, tok), CONFIG)
  unseen = recordings(tmp_path, ["carol"], range(4), seed=1)
  # garbage transcripts in the adaptation half, evaluation audio that cannot be read
  tampered = ([dataclasses.replace(u, text="garbage words") for u in unseen[:2]]
              + [dataclasses.replace(u, audio=tmp_path / "missing.wav") for u in unseen[2:]])
  results = [held_out_cmvn_splits(train + utts, training, pooled, CONFIG, tok,
                                  adaptation_takes=2) for utts in (unseen, tampered)]
  (evaluation, adapted, unadapted), (_, adapted_tampered, _) = results
  assert [u.id for u in evaluation] == [u.id for u in unseen[2:]]
  assert evaluation == unseen[2:]
  ref_mean, ref_std = reference_stats(unseen[:2])      # the adaptation half only
  np.testing.assert_allclose(adapted["carol"][0], ref_mean, atol=2e-3)
  np.testing.assert_allclose(adapted["carol"][1], ref_std, rtol=2e-3, atol=2e-3)
  np.testing.assert_array_equal(adapted["carol"][0], adapted_tampered["carol"][0])
  np.testing.assert_array_equal(adapted["carol"][1], adapted_tampered["carol"][1])
  assert unadapted["carol"] is pooled and adapted["alice"] is training["alice"]


def test_speaker_cmvn_transform_and_model_normalization(tmp_path):
  """Given an utterance's own statistics, speaker-level normalization reproduces the
  per-utterance normalization; the transform picks statistics by utterance index."""
  utts = recordings(tmp_path, ["alice", "bob"], range(1))
  dataset = Dataset(utts, CharTokenizer())
  own = {u.speaker: reference_stats([u]) for u in utts}
  batch = {"index": np.asarray([1, 0])}
  added = SpeakerCMVN(dataset, own)(batch)
  np.testing.assert_array_equal(added["cmvn_mean"][0], own["bob"][0])
  np.testing.assert_array_equal(added["cmvn_std"][1], own["alice"][1])
  with pytest.raises(ValueError, match="bob"):
    SpeakerCMVN(dataset, {"alice": own["alice"]})

  features = np.asarray(log_mel(jnp.asarray(read_wav(utts[0].audio, 16000)[0]), CONFIG))[None]
  padded = np.pad(features, ((0, 0), (0, 3), (0, 0)), constant_values=7.0)
  mean, std = own["alice"]
  out = np.asarray(normalize_with(jnp.asarray(padded), jnp.asarray([features.shape[1]]),
                                  jnp.asarray(mean[None]), jnp.asarray(std[None])))
  np.testing.assert_allclose(out[0, :features.shape[1]], (features[0] - mean) / std, atol=2e-3)
  assert np.all(out[0, features.shape[1]:] == 0)

  model = SpeechRecognizer(ModelConfig(
      vocab_size=CharTokenizer().vocab_size, encoder=ConformerConfig(32, 2, 1, conv_kernel=5),
      decoder=DecoderConfig(1, 2), subsample_channels=4), rngs=nnx.Rngs(0))
  audio = [read_wav(u.audio, 16000)[0] for u in utts]
  width = max(map(len, audio))
  inputs = {"audio": np.stack([np.pad(a, (0, width - len(a))) for a in audio]),
            "audio_len": np.asarray([len(a) for a in audio], np.int32)}
  stats = SpeakerCMVN(dataset, own)({"index": np.arange(2)})
  encode = nnx.jit(lambda m, b: m.encode(b))
  per_utterance, valid = encode(model, inputs)
  by_speaker, _ = encode(model, {**inputs, "cmvn_mean": stats["cmvn_mean"],
                                 "cmvn_std": stats["cmvn_std"]})
  np.testing.assert_allclose(np.asarray(by_speaker)[np.asarray(valid)],
                             np.asarray(per_utterance)[np.asarray(valid)], atol=2e-2)


@pytest.mark.slow
def test_cli_speaker_cmvn_protocol(tmp_path, capsys):
  fsdd = tmp_path / "fsdd" / "recordings"
  fsdd.mkdir(parents=True)
  recordings(fsdd, ["alice", "bob", "carol"], range(8), rate=8000)
  corpus_dir = tmp_path / "corpus"
  assert main(["--quiet", "speech", "make-corpus", "--kind", "fsdd", "--data",
               str(tmp_path / "fsdd"), "--holdout-speaker", "carol", "--out",
               str(corpus_dir)]) == 0
  run = tmp_path / "run"
  assert main(["--quiet", "speech", "train", "--data", str(corpus_dir), "--model",
               "conformer-nano", "--steps", "2", "--batch-size", "2", "--speaker-cmvn",
               "--adaptation-takes", "6", "--closed-vocabulary", "--mfcc", "13", "--lifter",
               "22", "--prior-matching", "--self-train", "1", "--workdir", str(run), "--json",
               str(tmp_path / "train.json")]) == 0
  report = json.loads((tmp_path / "train.json").read_text())
  evals = report["metrics"]["eval"]
  features = report["config"]["model"]["features"]
  assert features["n_cepstra"] == 13 and features["cepstral_lifter"] == 22.0
  assert report["config"]["model"]["spec_augment"]["freq_width"] == round(27 * 13 / 80)
  assert report["config"]["speaker_cmvn"] and report["config"]["adaptation_takes"] == 6
  assert evals["test_speaker"]["utterances"] == 8           # unadapted, every take
  assert evals["test_speaker_eval_half"]["utterances"] == 2    # takes 6 and 7
  assert evals["test_speaker_eval_half_adapted"]["utterances"] == 2
  assert "test_eval_half" not in evals    # carol's takes 0-4 are all in the adaptation half
  for name in ("adapted_prior_matched", "self_trained", "self_trained_prior_matched"):
    assert evals[f"test_speaker_eval_half_{name}"]["utterances"] == 2
  rounds = evals["test_speaker_eval_half_self_trained"]["pseudo_labels"]
  assert len(rounds) == 1 and 1 <= rounds[0] <= 6    # of the 6 takes in the adaptation half
  # one offset per candidate: the training split's words (takes 5-7: five, six, seven)
  assert len(evals["test_speaker_eval_half_adapted_prior_matched"]["prior_matching_bias"][
      "carol"]) == 3
  assert main(["--quiet", "speech", "eval", "--ckpt", str(run), "--closed-vocabulary",
               "--prior-matching", "--json", str(tmp_path / "eval.json")]) == 0
  evaluated = json.loads((tmp_path / "eval.json").read_text())["metrics"]
  for name in ("test_speaker_eval_half", "test_speaker_eval_half_adapted",
               "test_speaker_eval_half_adapted_prior_matched"):
    assert evaluated[name]["closed_vocabulary"] == evals[name]["closed_vocabulary"]


@pytest.mark.parametrize("prior", [None, [0.1, 0.2, 0.3, 0.15, 0.25]])
def test_prior_matching_bias_minimizes_its_convex_objective(prior):
  rng = np.random.default_rng(3)
  scores = rng.gamma(2.0, 3.0, size=(60, 5)) + np.asarray([0.0, 4.0, -2.0, 1.0, 0.5])
  bias = prior_matching_bias(scores, None if prior is None else np.asarray(prior))
  target = np.full(5, 0.2) if prior is None else np.asarray(prior)
  posterior = np.exp(bias - scores - logsumexp(bias - scores, axis=1, keepdims=True))
  np.testing.assert_allclose(posterior.mean(0), target, atol=1e-6)
  # the minimizer of mean_i logsumexp(b - s_i) - prior . b, found by a generic optimizer
  objective = lambda b: np.mean(logsumexp(b - scores, axis=1)) - target @ b
  reference = scipy.optimize.minimize(objective, np.zeros(5), method="BFGS", tol=1e-12).x
  np.testing.assert_allclose(bias, reference - reference.mean(), atol=1e-4)
  assert abs(bias.mean()) < 1e-9


def test_balanced_pseudo_labels_undo_a_systematic_confusion():
  """Ten words, 20 utterances each; the model (scores = negative log-likelihoods) prefers
  word 0 by a constant 3 nats, so plain decisions take most of word 1's utterances."""
  rng = np.random.default_rng(4)
  truth = np.repeat(np.arange(10), 20)
  scores = rng.normal(0, 1, size=(200, 10)) + 4.0
  scores[np.arange(200), truth] -= 4.0
  scores[:, 0] -= 3.0
  scores[truth == 1, 1] += 2.0   # word 1 is badly modelled for this speaker
  assert np.mean(np.argmin(scores, 1)[truth == 1] == 1) < 0.5
  selected, labels = balanced_pseudo_labels(scores, keep=0.5)
  assert np.mean(labels == truth[selected]) > 0.95
  decided = np.argmin(scores - prior_matching_bias(scores), 1)
  for word in range(10):
    assert (labels == word).sum() == max(1, round(0.5 * (decided == word).sum()))
  assert set(labels) == set(range(10))
  with pytest.raises(ValueError, match="keep"):
    balanced_pseudo_labels(scores, keep=0.0)


def _unseen_speaker(tmp_path):
  """A training speaker, an unseen one (takes 0-3 adapt, 4-5 evaluate), a nano model, the
  speaker statistics, and the unseen speaker's recordings tampered with: garbage transcripts
  in the adaptation half, unreadable audio in the evaluation half."""
  tok = CharTokenizer()
  train = recordings(tmp_path, ["alice"], range(4))
  unseen = recordings(tmp_path, ["carol"], range(6), seed=1)
  model = SpeechRecognizer(ModelConfig(
      vocab_size=tok.vocab_size, encoder=ConformerConfig(32, 2, 1, conv_kernel=5),
      decoder=DecoderConfig(1, 2), subsample_channels=4, spec_augment=None),
      rngs=nnx.Rngs(0))
  stats = {**speaker_cmvn_stats(Dataset(train, tok), CONFIG),
           **speaker_cmvn_stats(Dataset(unseen[:4], tok), CONFIG)}
  tampered = ([dataclasses.replace(u, text="garbage words") for u in unseen[:4]]
              + [dataclasses.replace(u, audio=tmp_path / "missing.wav") for u in unseen[4:]])
  return tok, train, unseen, tampered, model, stats


def test_prior_matching_reads_no_transcripts_nor_evaluation_audio(tmp_path):
  """The offsets depend on the adaptation half's audio only."""
  tok, _, unseen, tampered, model, stats = _unseen_speaker(tmp_path)
  candidates = sorted(set(DIGIT_WORDS))
  biases = [prior_matching_biases(model, utts, stats, candidates, tok, adaptation_takes=4)
            for utts in (unseen, tampered)]
  np.testing.assert_array_equal(biases[0]["carol"], biases[1]["carol"])
  # the offsets are those of the adaptation half's scores (with its speaker's statistics)
  half = Dataset(unseen[:4], tok)
  scores = candidate_scores(model, half, candidates, transform=SpeakerCMVN(half, stats))
  np.testing.assert_allclose(biases[0]["carol"], prior_matching_bias(scores), atol=1e-6)


@pytest.mark.slow
def test_self_training_reads_no_transcripts(tmp_path):
  """Self-training on the tampered adaptation half pseudo-labels as the clean half's scores
  decide, and fine-tunes a copy of the model."""
  tok, train, unseen, tampered, model, stats = _unseen_speaker(tmp_path)
  candidates = sorted(set(DIGIT_WORDS))
  half = Dataset(unseen[:4], tok)
  scores = candidate_scores(model, half, candidates, transform=SpeakerCMVN(half, stats))
  selected, labels = balanced_pseudo_labels(scores, keep=1.0)
  config = TrainConfig(steps=2, batch_size=2, warmup_steps=1, num_buckets=1)
  before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
  adapted, rounds = self_train(model, tampered[:4], Dataset(train, tok), candidates, stats,
                               config, SelfTrainingConfig(steps=2, keep=1.0))
  assert rounds[0]["labels"] == {unseen[i].id: candidates[c] for i, c in zip(selected, labels)}
  for a, b in zip(before, jax.tree.leaves(nnx.state(model))):   # the model is untouched
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b)                              # its copy fine-tuned
             for a, b in zip(before, jax.tree.leaves(nnx.state(adapted))))
