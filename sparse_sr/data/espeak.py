"""Speech synthesis with the espeak-ng library shipped in the ``espeakng-loader`` wheel.

The library is driven through ``ctypes`` (no system package). espeak-ng is GPL-3.0: we depend
on the wheel and never vendor it. Facts that shape this module:
- the engine is one global per process (so :class:`Espeak` is a process-wide singleton);
- it synthesizes at 22,050 Hz; :func:`synthesize` resamples to the target rate with a
  polyphase anti-aliasing filter;
- phoneme events (type 7, enabled by option 0x0001) carry the phoneme mnemonic and the exact
  sample index where it starts, which drives the synthetic mouth video;
- rate and pitch persist across voice changes, so they are set before every utterance;
- the data path must be short (< 160 characters): a long one is reached through a symlink;
- the engine keeps internal random state (pitch flutter), so repeated calls give slightly
  different waveforms: corpora are synthesized once and cached as wav files.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import tempfile
import threading
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
              ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class Voice:
  """An espeak-ng voice: a language plus a variant (``"en-us+f3"``), rate (words per
  minute) and pitch (0-100)."""
  language: str = "en-us"
  variant: str = "m1"
  rate: int = 170
  pitch: int = 50

  @property
  def name(self) -> str:
    return f"{self.language}+{self.variant}" if self.variant else self.language


@dataclasses.dataclass(frozen=True)
class Synthesis:
  """Audio (float32 in [-1, 1]) at ``sample_rate`` and phoneme onsets in samples."""
  audio: np.ndarray
  sample_rate: int
  phonemes: tuple[tuple[str, int], ...]   # (mnemonic, start sample at sample_rate)


def _short_data_path() -> str:
  import espeakng_loader
  path = espeakng_loader.get_data_path()
  if len(path) < 120:
    return path
  link = Path(tempfile.gettempdir()) / f"espeak-ng-data-{os.getuid()}"
  if not (link.is_symlink() and os.readlink(link) == path):
    link.unlink(missing_ok=True)
    link.symlink_to(path)
  return str(link)


class Espeak:
  """The process-wide espeak-ng engine (use :meth:`get`)."""

  _instance: "Espeak | None" = None
  _lock = threading.Lock()

  def __init__(self):
    import espeakng_loader
    self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self._lib.espeak_Initialize.restype = ctypes.c_int
    self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                            ctypes.c_int]
    rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                       _short_data_path().encode(),
                                       _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
    if rate != ESPEAK_RATE:
      raise RuntimeError(f"espeak-ng failed to initialize (returned {rate})")
    self._samples: list[np.ndarray] = []
    self._phonemes: list[tuple[str, int]] = []
    self._callback = _CALLBACK(self._on_audio)  # referenced for the engine's lifetime
    self._lib.espeak_SetSynthCallback(self._callback)
    self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    self._lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                       ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                       ctypes.c_void_p, ctypes.c_void_p]

  @classmethod
  def get(cls) -> "Espeak":
    with cls._lock:
      if cls._instance is None:
        cls._instance = cls()
      return cls._instance

  def _on_audio(self, wav, num_samples, events) -> int:
    if num_samples > 0:
      self._samples.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      if events[i].type == _EVENT_PHONEME:
        self._phonemes.append((events[i].id.string.decode("utf-8", "replace"),
                               int(events[i].sample)))
      i += 1
    return 0

  def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """int16 samples at 22,050 Hz and phoneme onsets for ``text`` spoken by ``voice``."""
    with self._lock:
      if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice.name!r}")
      self._lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
      self._lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
      self._lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
      self._samples, self._phonemes = [], []
      data = text.encode("utf-8") + b"\0"
      status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                      None, None)
      if status != 0:
        raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r}")
      self._lib.espeak_Synchronize()
      audio = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
      return audio, list(self._phonemes)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Polyphase resampling with scipy's Kaiser-windowed anti-aliasing filter."""
  if rate_in == rate_out:
    return audio.astype(np.float32)
  g = gcd(rate_in, rate_out)
  return resample_poly(audio.astype(np.float64), rate_out // g, rate_in // g).astype(np.float32)


def synthesize(text: str, voice: Voice = Voice(), sample_rate: int = 16000) -> Synthesis:
  """Speaks ``text`` with ``voice``; audio in [-1, 1] at ``sample_rate``."""
  raw, phonemes = Espeak.get().synthesize(text, voice)
  audio = resample(raw.astype(np.float32) / 32768.0, ESPEAK_RATE, sample_rate)
  scale = sample_rate / ESPEAK_RATE
  return Synthesis(audio, sample_rate,
                   tuple((p, int(round(s * scale))) for p, s in phonemes))


def available_variants() -> list[str]:
  """Voice variant names shipped in the wheel's ``voices/!v`` folder."""
  import espeakng_loader
  return sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v")
                .iterdir() if p.is_file())
