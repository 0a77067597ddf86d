"""Reading and writing 16-bit PCM wav files, with errors that name the file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from sparse_sr.data.espeak import resample


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
  """Mono float32 audio in [-1, 1] and its rate, resampled to ``sample_rate`` if given.

  Raises ``FileNotFoundError`` or ``ValueError`` naming ``path`` for missing, malformed,
  empty or multi-channel files.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such audio file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", wavfile.WavFileWarning)
      rate, data = wavfile.read(path)
  except Exception as e:  # scipy raises assorted errors on corrupt headers
    raise ValueError(f"{path}: not a readable wav file ({type(e).__name__}: {e})") from None
  if data.ndim != 1:
    raise ValueError(f"{path}: expected mono audio, got shape {data.shape}")
  if data.size == 0:
    raise ValueError(f"{path}: the wav file has no samples")
  if data.dtype == np.int16:
    audio = data.astype(np.float32) / 32768.0
  elif data.dtype == np.float32:
    audio = data
  else:
    raise ValueError(f"{path}: unsupported sample format {data.dtype}")
  if sample_rate is not None and sample_rate != rate:
    return resample(audio, rate, sample_rate), sample_rate
  return audio, int(rate)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
  """Writes float audio in [-1, 1] as 16-bit PCM."""
  pcm = np.clip(np.round(np.asarray(audio) * 32767.0), -32768, 32767).astype(np.int16)
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  wavfile.write(path, sample_rate, pcm)
