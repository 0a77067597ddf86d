"""Corpora as manifests: one JSON line per utterance, written beside (or pointing at) audio.

Entries carry ``id``, ``audio`` (path, relative to the manifest's folder or absolute),
``text``, ``speaker``, ``duration`` (seconds) and optionally ``video`` (a ``.npy`` of mouth
frames at 25 fps). Four sources:
- :func:`make_espeak_corpus`: espeak-ng speech of real sentences (``pydoc_data.topics``)
  with many voices, rates and pitches, additive noise and random gain, plus synthetic mouth
  video; the test split uses voices never heard in training;
- :func:`make_fsdd_corpus`: the Free Spoken Digit Dataset read in place (train = indices
  5-49 of all speakers but one; ``test`` = the official indices 0-4; ``test_speaker`` =
  every recording of the held-out speaker);
- :func:`make_pocketsphinx_corpus`: Debian's ``pocketsphinx-testdata`` read speech when
  installed (a test set: LibriVox excerpts and spoken card names);
- :func:`load_lrs3_style`: LRS3-style folders (``<speaker>/<clip>.txt`` whose first line is
  ``Text:  TRANSCRIPT``, with ``<clip>.npy`` mouth-ROI frames and optional ``<clip>.wav``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from sparse_sr.data.audio import read_wav, write_wav
from sparse_sr.tokenizer import normalize_text

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Utterance:
  id: str
  audio: Path | None
  text: str
  speaker: str
  duration: float
  video: Path | None = None


def write_manifest(path: str | os.PathLike, utterances: list[Utterance]) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  root = path.parent.resolve()

  def rel(p: Path | None):
    if p is None:
      return None
    p = Path(p).resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
  with path.open("w") as f:
    for u in utterances:
      f.write(json.dumps({"id": u.id, "audio": rel(u.audio), "text": u.text,
                          "speaker": u.speaker, "duration": round(u.duration, 4),
                          "video": rel(u.video)}) + "\n")
  return path


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
  """Reads a manifest; a line without a transcript or audio raises ``ValueError`` naming
  the manifest line (and file), a missing manifest ``FileNotFoundError``."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such manifest")
  root = path.parent
  utterances = []
  for lineno, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    where = f"{path}:{lineno} ({entry.get('audio') or entry.get('video') or entry.get('id')})"
    if not isinstance(entry.get("text"), str) or not normalize_text(entry["text"]):
      raise ValueError(f"{where}: missing transcript")
    if not entry.get("audio") and not entry.get("video"):
      raise ValueError(f"{where}: neither audio nor video")
    resolve = lambda p: None if not p else (Path(p) if Path(p).is_absolute() else root / p)
    utterances.append(Utterance(
        id=str(entry.get("id", lineno)), audio=resolve(entry.get("audio")),
        text=normalize_text(entry["text"]), speaker=str(entry.get("speaker", "")),
        duration=float(entry.get("duration", 0.0)), video=resolve(entry.get("video"))))
  if not utterances:
    raise ValueError(f"{path}: empty manifest")
  return utterances


# ---- text: real sentences ------------------------------------------------------------

def topic_phrases(max_words: int = 4, vocab_size: int | None = None,
                  seed: int = 0) -> list[str]:
  """Short phrases of consecutive words from the sentences of ``pydoc_data.topics``
  (the Python reference manual's prose, real English no one here wrote).

  With ``vocab_size``, only phrases made of the ``vocab_size`` most frequent words are kept,
  which gives a smaller, denser task for quick runs. Order is shuffled with ``seed``.
  """
  from pydoc_data.topics import topics
  sentences = []
  for body in topics.values():
    for sentence in re.split(r"[.!?:;\n]\s", body):
      words = [w.strip("'") for w in normalize_text(re.sub(r"[0-9_]", " ", sentence)).split()]
      words = [w for w in words if w]
      if len(words) >= 1:
        sentences.append(words)
  counts = collections.Counter(w for s in sentences for w in s)
  vocab = None if vocab_size is None else {w for w, _ in counts.most_common(vocab_size)}
  rng = np.random.default_rng(seed)
  phrases = set()
  for words in sentences:
    i = 0
    while i < len(words):
      n = int(rng.integers(1, max_words + 1))
      chunk = words[i:i + n]
      i += n
      if vocab is None or all(w in vocab for w in chunk):
        phrases.add(" ".join(chunk))
  phrases = sorted(phrases)
  rng.shuffle(phrases)
  return phrases


# ---- espeak-ng corpus ------------------------------------------------------------------

TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "klatt", "klatt4",
                  "croak", "Alex", "Andy", "Annie", "adam", "belinda", "david", "ed",
                  "john", "linda", "max", "michel", "steph")
TEST_VARIANTS = ("m7", "f4", "klatt2", "anika", "benjamin")
LANGUAGES = ("en-us", "en")
ENGLISH_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en-us-nyc")   # every English accent espeak-ng ships


@dataclasses.dataclass(frozen=True)
class EspeakCorpusConfig:
  hours: float = 0.2               # training audio
  test_utterances: int = 100
  max_words: int = 3
  vocab_size: int | None = 300     # None: every word of the text source
  rate: tuple[int, int] = (140, 210)
  pitch: tuple[int, int] = (25, 75)
  snr_db: tuple[float, float] = (15.0, 40.0)
  gain: tuple[float, float] = (0.3, 1.0)
  video: bool = True
  seed: int = 0
  # training voices: None is every variant in the wheel but the test ones (104 - 5)
  train_variants: tuple[str, ...] | None = TRAIN_VARIANTS
  train_accents: tuple[str, ...] = LANGUAGES   # the test split speaks LANGUAGES
  # a closed set of texts to speak (e.g. DIGIT_WORDS, a small-vocabulary lip-reading task)
  # instead of phrases of pydoc_data.topics; max_words and vocab_size then do not apply
  texts: tuple[str, ...] | None = None

  def phrases(self) -> list[str]:
    if self.texts is not None:
      return [normalize_text(t) for t in self.texts]
    return topic_phrases(self.max_words, self.vocab_size, self.seed)

  def training_variants(self) -> tuple[str, ...]:
    if self.train_variants is not None:
      return self.train_variants
    from sparse_sr.data.espeak import available_variants
    return tuple(v for v in available_variants() if v not in TEST_VARIANTS)


def _noisy(audio: np.ndarray, rng: np.random.Generator, config: EspeakCorpusConfig,
           sample_rate: int = SAMPLE_RATE, pause: tuple[float, float] = (0.05, 0.2)):
  """Adds silence (``pause`` seconds) at both ends, white noise at a random SNR and a
  random gain; returns the audio and where the speech starts."""
  lead = np.zeros(int(rng.uniform(*pause) * sample_rate), np.float32)
  tail = np.zeros(int(rng.uniform(*pause) * sample_rate), np.float32)
  audio = np.concatenate([lead, audio, tail])
  power = np.mean(audio ** 2) + 1e-12
  snr = rng.uniform(*config.snr_db)
  noise = rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), audio.shape)
  audio = (audio + noise) * rng.uniform(*config.gain)
  return np.clip(audio, -1, 1).astype(np.float32), len(lead)


def synthesize_utterances(phrases, variants, count: int | None, hours: float | None,
                          out_dir: Path, prefix: str, config: EspeakCorpusConfig,
                          rng: np.random.Generator, progress_bar=None,
                          languages: tuple[str, ...] = LANGUAGES) -> Iterator[Utterance]:
  """Speaks phrases until ``count`` utterances or ``hours`` of audio are written.

  Each utterance draws from its own generator seeded by ``rng``: espeak-ng's waveform
  lengths vary slightly between calls, and must not shift the texts and voices that follow."""
  from sparse_sr.data.espeak import Voice, synthesize
  from sparse_sr.data.video import MouthStyle, render_video
  styles = {}
  total, i = 0.0, 0
  parent = rng
  while (count is not None and i < count) or (hours is not None and total < hours * 3600):
    rng = np.random.default_rng(int(parent.integers(2 ** 62)))
    text = phrases[int(rng.integers(len(phrases)))]
    variant = variants[int(rng.integers(len(variants)))]
    voice = Voice(languages[int(rng.integers(len(languages)))], variant,
                  int(rng.integers(config.rate[0], config.rate[1] + 1)),
                  int(rng.integers(config.pitch[0], config.pitch[1] + 1)))
    speech = synthesize(text, voice, SAMPLE_RATE)
    audio, offset = _noisy(speech.audio, rng, config)
    uid = f"{prefix}{i:06d}"
    wav = out_dir / "wav" / f"{uid}.wav"
    write_wav(wav, audio, SAMPLE_RATE)
    video = None
    if config.video:
      # one lip geometry per voice variant: the "speaker" of the video stream
      style = styles.setdefault(variant, MouthStyle.sample(
          np.random.default_rng(sum(map(ord, variant)) + config.seed)))
      phonemes = [(p, s + offset) for p, s in speech.phonemes]
      video = out_dir / "video" / f"{uid}.npy"
      video.parent.mkdir(parents=True, exist_ok=True)
      np.save(video, render_video(phonemes, len(audio), SAMPLE_RATE, style,
                                  seed=int(rng.integers(2 ** 31))))
    duration = len(audio) / SAMPLE_RATE
    total += duration
    i += 1
    if progress_bar is not None:
      progress_bar.update(1)
    yield Utterance(uid, wav, text, voice.name, duration, video)


def make_espeak_corpus(out_dir: str | os.PathLike,
                       config: EspeakCorpusConfig = EspeakCorpusConfig(),
                       progress_bar=None) -> dict[str, Path]:
  """Writes ``train.jsonl`` (training voices) and ``test.jsonl`` (held-out voices).

  The two splits draw from separate random streams, so the test split depends only on the
  seed, the text and the test voices, not on how the training split is made."""
  out_dir = Path(out_dir)
  phrases = config.phrases()
  train = list(synthesize_utterances(phrases, config.training_variants(), None, config.hours,
                                     out_dir, "train", config,
                                     np.random.default_rng([config.seed, 0]), progress_bar,
                                     config.train_accents))
  test = list(synthesize_utterances(phrases, TEST_VARIANTS, config.test_utterances, None,
                                    out_dir, "test", config,
                                    np.random.default_rng([config.seed, 1]), progress_bar))
  return {"train": write_manifest(out_dir / "train.jsonl", train),
          "test": write_manifest(out_dir / "test.jsonl", test)}


# ---- Free Spoken Digit Dataset ---------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_TEST_INDICES = range(5)


def fsdd_utterances(root: str | os.PathLike) -> list[tuple[Utterance, int]]:
  """(utterance, take index) for every ``{digit}_{speaker}_{index}.wav`` under ``root``."""
  root = Path(root)
  recordings = root / "recordings" if (root / "recordings").is_dir() else root
  files = sorted(recordings.glob("*.wav"))
  if not files:
    raise FileNotFoundError(f"{recordings}: no FSDD recordings (*.wav)")
  out = []
  for f in files:
    match = re.fullmatch(r"(\d)_([A-Za-z]+)_(\d+)", f.stem)
    if not match:
      raise ValueError(f"{f}: not an FSDD file name {{digit}}_{{speaker}}_{{index}}.wav")
    digit, speaker, index = int(match[1]), match[2], int(match[3])
    # 16-bit mono: the byte size gives the duration without decoding
    duration = max(0, f.stat().st_size - 44) / 2 / 8000
    out.append((Utterance(f.stem, f.resolve(), DIGIT_WORDS[digit], speaker, duration), index))
  return out


FSDD_SAMPLE_RATE = 8000
DIGIT_VOICES = dict(rate=(110, 230), pitch=(10, 90))


def synthesize_digits(out_dir: str | os.PathLike, count: int, seed: int = 0,
                      sample_rate: int = FSDD_SAMPLE_RATE) -> list[Utterance]:
  """``count`` FSDD-like recordings of single digit words spoken by espeak-ng: each in a
  random voice (every variant shipped in the wheel, in every English accent, random rate
  and pitch), with noise, gain and short pauses, at FSDD's 8 kHz (the same band limit as
  the human recordings). Training data from many more "speakers" than FSDD has."""
  from sparse_sr.data.espeak import Voice, available_variants, synthesize
  out_dir = Path(out_dir)
  rng = np.random.default_rng([seed, 8000])
  variants = available_variants()
  config = EspeakCorpusConfig(seed=seed)
  utterances = []
  for i in range(count):
    digit = int(rng.integers(10))
    voice = Voice(ENGLISH_ACCENTS[int(rng.integers(len(ENGLISH_ACCENTS)))],
                  variants[int(rng.integers(len(variants)))],
                  int(rng.integers(DIGIT_VOICES["rate"][0], DIGIT_VOICES["rate"][1] + 1)),
                  int(rng.integers(DIGIT_VOICES["pitch"][0], DIGIT_VOICES["pitch"][1] + 1)))
    speech = synthesize(DIGIT_WORDS[digit], voice, sample_rate)
    audio, _ = _noisy(speech.audio, rng, config, sample_rate, pause=(0.0, 0.1))
    wav = out_dir / "espeak_digits" / f"{digit}_espeak_{i:05d}.wav"
    write_wav(wav, audio, sample_rate)
    utterances.append(Utterance(wav.stem, wav.resolve(), DIGIT_WORDS[digit],
                                f"espeak:{voice.name}", len(audio) / sample_rate))
  return utterances


def make_fsdd_corpus(root: str | os.PathLike, out_dir: str | os.PathLike,
                     holdout_speaker: str = "george", synthetic_digits: int = 0,
                     seed: int = 0) -> dict[str, Path]:
  """Manifests over FSDD in place: ``train`` (indices 5-49, not the held-out speaker, plus
  ``synthetic_digits`` espeak-ng digit recordings written to ``out_dir``, see
  :func:`synthesize_digits`), ``test`` (official split, indices 0-4, every speaker),
  ``test_speaker`` (every recording of the held-out speaker, who is never heard in
  training)."""
  items = fsdd_utterances(root)
  speakers = sorted({u.speaker for u, _ in items})
  if holdout_speaker not in speakers:
    raise ValueError(f"held-out speaker {holdout_speaker!r} not in FSDD speakers {speakers}")
  out_dir = Path(out_dir)
  splits = {
      "train": [u for u, i in items if i not in FSDD_TEST_INDICES
                and u.speaker != holdout_speaker]
      + (synthesize_digits(out_dir, synthetic_digits, seed) if synthetic_digits else []),
      "test": [u for u, i in items if i in FSDD_TEST_INDICES],
      "test_speaker": [u for u, _ in items if u.speaker == holdout_speaker],
  }
  return {name: write_manifest(out_dir / f"{name}.jsonl", us) for name, us in splits.items()}


# ---- pocketsphinx-testdata (Debian) ---------------------------------------------------

POCKETSPHINX_TESTDATA = Path("/usr/share/pocketsphinx/test/data")


def make_pocketsphinx_corpus(out_dir: str | os.PathLike,
                             root: Path = POCKETSPHINX_TESTDATA) -> dict[str, Path]:
  """A test manifest of the read speech in Debian's ``pocketsphinx-testdata``: every
  ``*transcription`` file (lines ``<s> words </s> (fileid)``) with ``fileid.wav`` beside it
  (LibriVox "Sense and Sensibility" excerpts, spoken card names)."""
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: pocketsphinx-testdata is not installed "
                            "(apt-get install pocketsphinx-testdata)")
  utterances = []
  for listing in sorted(root.rglob("*transcription")):
    for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
      match = re.fullmatch(r"\s*(.*?)\s*\((\S+)\)\s*", line)
      if not line.strip():
        continue
      if not match:
        raise ValueError(f"{listing}:{lineno}: expected '<s> words </s> (fileid)'")
      text = normalize_text(re.sub(r"</?s>|<sil>|\[.*?\]", " ", match[1]))
      wav = listing.parent / f"{match[2]}.wav"
      if not text:
        raise ValueError(f"{listing}:{lineno}: missing transcript for {wav.name}")
      audio, rate = read_wav(wav)
      utterances.append(Utterance(f"{listing.parent.name}/{match[2]}", wav.resolve(), text,
                                  listing.parent.name, len(audio) / rate))
  if not utterances:
    raise FileNotFoundError(f"{root}: no transcription files with wav audio")
  return {"test": write_manifest(Path(out_dir) / "test.jsonl", utterances)}


# ---- LRS3-style data --------------------------------------------------------------------

def load_lrs3_style(root: str | os.PathLike) -> list[Utterance]:
  """Utterances of an LRS3-style tree: ``<speaker>/<clip>.txt`` (first line
  ``Text:  TRANSCRIPT``), ``<clip>.npy`` mouth-ROI frames (uint8, frames x H x W at 25 fps)
  and optionally ``<clip>.wav``. A clip without transcript or video is an error naming it."""
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such LRS3-style folder")
  utterances = []
  clips = sorted({p.with_suffix("") for p in root.glob("*/*")
                  if p.suffix in (".txt", ".npy", ".wav")})
  for clip in clips:
    txt, npy, wav = clip.with_suffix(".txt"), clip.with_suffix(".npy"), clip.with_suffix(".wav")
    if not txt.is_file():
      raise ValueError(f"{clip}: missing transcript {txt.name}")
    first = txt.read_text().splitlines()[:1]
    match = re.match(r"Text:\s+(.*)", first[0]) if first else None
    if not match or not normalize_text(match[1]):
      raise ValueError(f"{txt}: first line is not 'Text:  TRANSCRIPT'")
    if not npy.is_file():
      raise ValueError(f"{clip}: missing mouth-ROI video {npy.name}")
    frames = np.load(npy, mmap_mode="r")
    if frames.ndim != 3:
      raise ValueError(f"{npy}: expected frames x height x width, got shape {frames.shape}")
    utterances.append(Utterance(f"{clip.parent.name}/{clip.name}",
                                wav if wav.is_file() else None, normalize_text(match[1]),
                                clip.parent.name, frames.shape[0] / 25, npy))
  if not utterances:
    raise FileNotFoundError(f"{root}: no LRS3-style clips (<speaker>/<clip>.txt)")
  return utterances
