"""espeak-ng synthesis, corpora, manifests, loaders: determinism, resumption, errors."""

import dataclasses
import json

import numpy as np
import pytest

from jaxrepro.data import shared_data_dir
from sparse_sr.data import corpus
from sparse_sr.data.audio import read_wav, write_wav
from sparse_sr.data.espeak import Voice, synthesize
from sparse_sr.data.loader import BatchIterator, Dataset, Padding, collate, eval_batches
from sparse_sr.data.video import FPS, phoneme_to_viseme, viseme_track
from sparse_sr.tokenizer import CharTokenizer, SentencePieceTokenizer


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("espeak")
  config = corpus.EspeakCorpusConfig(hours=0.004, test_utterances=3, seed=3)
  return corpus.make_espeak_corpus(out, config)


def test_espeak_synthesis_is_repeatable_and_timed():
  # the engine keeps internal random state (pitch flutter), so waveforms are not bit-identical
  # across calls; the phoneme sequence and the duration are
  voice = Voice("en-us", "f2", rate=160, pitch=60)
  a = synthesize("open the window", voice)
  b = synthesize("open the window", voice)
  assert [p for p, _ in a.phonemes] == [p for p, _ in b.phonemes]
  assert abs(len(a.audio) - len(b.audio)) < 0.1 * len(a.audio)
  assert a.sample_rate == 16000 and 0.5 < len(a.audio) / 16000 < 3
  starts = [s for _, s in a.phonemes]
  assert starts == sorted(starts) and starts[-1] <= len(a.audio)
  assert any(phoneme_to_viseme(p) == "bilabial" for p, _ in a.phonemes)  # the p of "open"
  slower = synthesize("open the window", Voice("en-us", "f2", rate=100, pitch=60))
  assert len(slower.audio) > 1.3 * len(a.audio)  # rate is applied for every utterance


def test_viseme_track_follows_phoneme_timing():
  phonemes = [("m", 0), ("a", 8000)]
  track = viseme_track(phonemes, 16000, 16000)
  assert track.shape == (FPS, 4)
  assert track[0, 0] < 0.1 and track[-1, 0] > 0.8  # closed lips, then an open vowel


def test_espeak_corpus_has_held_out_voices_and_aligned_video(tiny_corpus):
  train = corpus.read_manifest(tiny_corpus["train"])
  test = corpus.read_manifest(tiny_corpus["test"])
  assert sum(u.duration for u in train) >= 0.004 * 3600 and len(test) == 3
  variants = lambda us: {u.speaker.split("+")[1] for u in us}
  assert variants(test) <= set(corpus.TEST_VARIANTS)
  assert not variants(train) & set(corpus.TEST_VARIANTS)
  for u in train[:3]:
    audio, rate = read_wav(u.audio)
    video = np.load(u.video)
    assert rate == 16000 and abs(len(audio) / rate - u.duration) < 1e-3
    assert video.shape == (int(np.ceil(len(audio) * FPS / rate)), 44, 44)


def test_test_split_does_not_depend_on_the_training_voices(tmp_path):
  config = corpus.EspeakCorpusConfig(hours=0.001, test_utterances=3, video=False, seed=5)
  a = corpus.make_espeak_corpus(tmp_path / "a", config)
  b = corpus.make_espeak_corpus(tmp_path / "b", dataclasses.replace(
      config, train_variants=None, train_accents=corpus.ENGLISH_ACCENTS))
  described = lambda path: [(u.text, u.speaker) for u in corpus.read_manifest(path)]
  assert described(a["test"]) == described(b["test"])
  assert described(a["train"]) != described(b["train"])
  every = dataclasses.replace(config, train_variants=None).training_variants()
  assert len(every) > 90 and not set(every) & set(corpus.TEST_VARIANTS)


def test_synthesized_digits_look_like_fsdd(tmp_path):
  utterances = corpus.synthesize_digits(tmp_path, 12, seed=2)
  assert len(utterances) == 12 and len({u.speaker for u in utterances}) > 6
  for u in utterances:
    audio, rate = read_wav(u.audio)
    assert rate == corpus.FSDD_SAMPLE_RATE and abs(len(audio) / rate - u.duration) < 1e-3
    assert u.text == corpus.DIGIT_WORDS[int(u.audio.name[0])]
    assert u.speaker.startswith("espeak:") and 0.2 < u.duration < 2.0
  # resampled to the model's rate like FSDD's own 8 kHz recordings
  assert read_wav(utterances[0].audio, 16000)[1] == 16000


def test_topic_phrases_are_real_text():
  phrases = corpus.topic_phrases(max_words=3, vocab_size=50, seed=0)
  words = {w for p in phrases for w in p.split()}
  assert len(words) <= 50 and {"the", "is"} <= words
  assert all(1 <= len(p.split()) <= 3 for p in phrases)


def test_batches_are_deterministic_and_resume(tiny_corpus):
  data = Dataset(corpus.read_manifest(tiny_corpus["train"]), CharTokenizer(), use_video=True)
  first = BatchIterator(data, 3, seed=7)
  batches = [next(first) for _ in range(7)]
  again = BatchIterator(data, 3, seed=7)
  for a, b in zip(batches, (next(again) for _ in range(7))):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  resumed = BatchIterator(data, 3, seed=7)
  probe = BatchIterator(data, 3, seed=7)
  for _ in range(4):
    next(probe)
  resumed.load_state(json.loads(json.dumps({k: np.asarray(v).tolist() if k != "sampler"
                                             else v for k, v in probe.state().items()})))
  for k, v in next(resumed).items():
    np.testing.assert_array_equal(v, batches[4][k])
  # the audio covers whole video frames and the widths come from few buckets
  b = batches[0]
  assert b["audio"].shape[1] == 640 * b["video"].shape[1]
  assert len({x["audio"].shape[1] for x in batches}) <= 2


def test_eval_batches_cover_every_utterance_once(tiny_corpus):
  data = Dataset(corpus.read_manifest(tiny_corpus["test"]), CharTokenizer())
  seen = []
  for batch in eval_batches(data, 2):
    seen += list(batch["index"][batch["valid"]])
  assert sorted(seen) == [0, 1, 2]


def test_collate_pads_to_buckets():
  items = [{"tokens": np.asarray([3, 4]), "audio": np.ones(1000, np.float32)},
           {"tokens": np.asarray([5]), "audio": np.ones(7000, np.float32)}]
  batch = collate(items, Padding(audio_widths=(6400, 12800), token_width=16))
  assert batch["audio"].shape == (2, 12800) and batch["tokens"].shape == (2, 16)
  np.testing.assert_array_equal(batch["audio_len"], [1000, 7000])
  assert batch["audio"][0, 1000:].sum() == 0


def test_malformed_wav_and_missing_transcript_name_the_file(tmp_path):
  bad = tmp_path / "broken.wav"
  bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
  with pytest.raises(ValueError, match="broken.wav"):
    read_wav(bad)
  with pytest.raises(FileNotFoundError, match="absent.wav"):
    read_wav(tmp_path / "absent.wav")
  good = tmp_path / "good.wav"
  write_wav(good, np.zeros(1600), 16000)
  manifest = tmp_path / "m.jsonl"
  manifest.write_text(json.dumps({"audio": "good.wav", "text": "hi"}) + "\n"
                      + json.dumps({"audio": "second.wav", "text": " "}) + "\n")
  with pytest.raises(ValueError, match=r"m.jsonl:2 \(second.wav\): missing transcript"):
    corpus.read_manifest(manifest)
  manifest.write_text(json.dumps({"audio": "broken.wav", "text": "hi"}) + "\n")
  data = Dataset(corpus.read_manifest(manifest), CharTokenizer())
  with pytest.raises(ValueError, match="broken.wav"):
    data.load(0)


def test_lrs3_style_loader(tmp_path):
  rng = np.random.default_rng(0)
  for speaker, clip, text in [("spk1", "00001", "HELLO THERE"), ("spk2", "00002", "GOOD DAY")]:
    (tmp_path / speaker).mkdir()
    (tmp_path / speaker / f"{clip}.txt").write_text(f"Text:  {text}\nConf:  4\n")
    np.save(tmp_path / speaker / f"{clip}.npy", rng.integers(0, 255, (20, 44, 44), np.uint8))
  utterances = corpus.load_lrs3_style(tmp_path)
  assert [(u.speaker, u.text, u.duration) for u in utterances] == [
      ("spk1", "hello there", 0.8), ("spk2", "good day", 0.8)]
  data = Dataset(utterances, CharTokenizer(), use_audio=False, use_video=True)
  assert data.load(1)["video"].shape == (20, 44, 44)
  (tmp_path / "spk2" / "00002.txt").unlink()
  with pytest.raises(ValueError, match="00002: missing transcript"):
    corpus.load_lrs3_style(tmp_path)


def test_sentencepiece_round_trip():
  texts = corpus.topic_phrases(max_words=3, vocab_size=100, seed=1)[:300]
  tok = SentencePieceTokenizer.train(texts, vocab_size=40)
  assert all(tok.decode(tok.encode(t)) == t for t in texts[:20])
  assert min(min(tok.encode(t)) for t in texts[:20]) >= 2  # 0 blank, 1 sos/eos reserved


FSDD = shared_data_dir() / "speech" / "fsdd"


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_splits_hold_out_a_speaker(tmp_path):
  paths = corpus.make_fsdd_corpus(FSDD, tmp_path, holdout_speaker="theo")
  train = corpus.read_manifest(paths["train"])
  test = corpus.read_manifest(paths["test"])
  held = corpus.read_manifest(paths["test_speaker"])
  assert (len(train), len(test), len(held)) == (5 * 450, 300, 500)
  with_synthetic = corpus.make_fsdd_corpus(FSDD, tmp_path / "s", holdout_speaker="theo",
                                          synthetic_digits=20)
  train_s = corpus.read_manifest(with_synthetic["train"])
  assert len(train_s) == 5 * 450 + 20
  assert sum(u.speaker.startswith("espeak:") for u in train_s) == 20
  assert corpus.read_manifest(with_synthetic["test_speaker"]) == held
  assert "theo" not in {u.speaker for u in train} and {u.speaker for u in held} == {"theo"}
  audio, rate = read_wav(train[0].audio, 16000)
  assert rate == 16000 and abs(len(audio) / 16000 - train[0].duration) < 0.01
  assert {u.text for u in test} == set(corpus.DIGIT_WORDS)


def test_pocketsphinx_transcriptions(tmp_path):
  root = tmp_path / "data" / "cards"
  root.mkdir(parents=True)
  write_wav(root / "001.wav", np.zeros(8000), 16000)
  write_wav(root / "002.wav", np.zeros(4000), 16000)
  (root / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n"
                                            "<s> five five </s> (002)\n")
  paths = corpus.make_pocketsphinx_corpus(tmp_path / "out", tmp_path / "data")
  utterances = corpus.read_manifest(paths["test"])
  assert [(u.id, u.text, u.duration) for u in utterances] == [
      ("cards/001", "ten of clubs", 0.5), ("cards/002", "five five", 0.25)]
  (root / "cards.transcription").write_text("<s> </s> (002)\n")
  with pytest.raises(ValueError, match="missing transcript for 002.wav"):
    corpus.make_pocketsphinx_corpus(tmp_path / "out", tmp_path / "data")
