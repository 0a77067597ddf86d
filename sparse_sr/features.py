"""Log-mel filterbank features and SpecAugment, in JAX.

The front end of Auto-AVSR (Ma et al. 2023, arXiv:2303.14307, Sec. 3) and of MLCommons
algorithmic-efficiency's Conformer workload: pre-emphasis, 25 ms Hann-windowed frames every
10 ms, power spectrum, 80 Slaney mel bands (librosa's default filterbank), natural log;
optionally mel-frequency cepstral coefficients (MFCC; Davis & Mermelstein 1980, "Comparison
of parametric representations for monosyllabic word recognition in continuously spoken
sentences", IEEE TASSP 28(4)): the orthonormal DCT-II of the log-mels, truncated, which keeps
the spectral envelope (formants) and drops the pitch-harmonic fine structure.
SpecAugment (Park et al. 2019, arXiv:1904.08779, Sec. 2) masks random time and frequency
bands. Everything is jittable and vmappable, so features are computed on the device inside
the training step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  sample_rate: int = 16000
  n_fft: int = 512
  win_length: int = 400     # 25 ms at 16 kHz
  hop_length: int = 160     # 10 ms at 16 kHz
  n_mels: int = 80
  f_min: float = 0.0
  f_max: float | None = None
  preemphasis: float = 0.97
  log_floor: float = 1e-6
  n_cepstra: int = 0         # > 0: MFCC, the first n_cepstra DCT-II coefficients (0: log-mels)
  cepstral_lifter: float = 0.0  # sinusoidal liftering of the cepstra (0: none; e.g. 22)

  def __post_init__(self):
    if not 0 <= self.n_cepstra <= self.n_mels:
      raise ValueError(f"n_cepstra must be in [0, n_mels={self.n_mels}], got {self.n_cepstra}")
    if self.cepstral_lifter < 0:
      raise ValueError(f"cepstral_lifter must be >= 0, got {self.cepstral_lifter}")

  @property
  def dim(self) -> int:
    """Features per frame: cepstra if any, else mel bands."""
    return self.n_cepstra or self.n_mels

  def num_frames(self, num_samples: int) -> int:
    """Frames of a signal of ``num_samples`` (frames must lie inside the signal)."""
    return max(0, 1 + (num_samples - self.n_fft) // self.hop_length)


def _hz_to_mel(hz):
  """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa with htk=False."""
  hz = np.asarray(hz, dtype=np.float64)
  f_sp = 200.0 / 3
  min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
  mel = hz / f_sp
  return np.where(hz >= min_log_hz,
                  min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel):
  mel = np.asarray(mel, dtype=np.float64)
  f_sp = 200.0 / 3
  min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                  f_sp * mel)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
  """Triangular Slaney-normalized mel filters, shape ``(n_fft // 2 + 1, n_mels)``."""
  f_max = sample_rate / 2 if f_max is None else f_max
  fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  mel_points = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
  widths = np.diff(mel_points)
  ramps = mel_points[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  weights = np.maximum(0, np.minimum(lower, upper))
  weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]  # equal area per band
  return weights.T.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _padded_window(win_length: int, n_fft: int) -> np.ndarray:
  """Periodic Hann window of ``win_length`` centred in ``n_fft`` samples (as librosa)."""
  n = np.arange(win_length)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
  left = (n_fft - win_length) // 2
  return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


def frame(signal: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
  """``(..., samples) -> (..., frames, frame_length)`` with frames fully inside the signal."""
  n_frames = 1 + (signal.shape[-1] - frame_length) // hop_length
  index = hop_length * jnp.arange(n_frames)[:, None] + jnp.arange(frame_length)[None, :]
  return signal[..., index]


def power_spectrogram(signal: jax.Array, config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """``|FFT(window * frame)|^2`` of the pre-emphasized signal: ``(..., frames, n_fft//2+1)``."""
  signal = signal.astype(jnp.float32)
  if config.preemphasis:
    signal = jnp.concatenate(
        [signal[..., :1], signal[..., 1:] - config.preemphasis * signal[..., :-1]], axis=-1)
  frames = frame(signal, config.n_fft, config.hop_length)
  spectrum = jnp.fft.rfft(frames * _padded_window(config.win_length, config.n_fft), axis=-1)
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel(signal: jax.Array, config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """Log mel filterbank energies ``(..., frames, n_mels)`` of waveforms ``(..., samples)``."""
  return log_mel_from_power(power_spectrogram(signal, config), config)


def log_mel_from_power(power: jax.Array, config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """Log mel energies of a power spectrogram ``(..., frames, n_fft//2+1)``."""
  mel = power @ mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min,
                               config.f_max)
  return jnp.log(mel + config.log_floor)


@functools.lru_cache(maxsize=16)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
  """The first ``n_out`` basis vectors of the orthonormal DCT-II of length ``n_in``, as
  columns ``(n_in, n_out)``: ``x @ dct_matrix(n, k)`` is ``scipy.fft.dct(x, norm="ortho")[:k]``."""
  n = np.arange(n_in)[:, None] + 0.5
  k = np.arange(n_out)[None, :]
  basis = np.sqrt(2.0 / n_in) * np.cos(np.pi / n_in * n * k)
  basis[:, 0] /= np.sqrt(2.0)
  return basis.astype(np.float32)


def cepstra(log_mels: jax.Array, n_cepstra: int, lifter: float = 0.0) -> jax.Array:
  """MFCCs ``(..., frames, n_cepstra)`` of log-mel energies ``(..., frames, n_mels)``: the
  orthonormal DCT-II over bands, truncated; with ``lifter > 0``, coefficient ``k`` scaled by
  ``1 + lifter / 2 * sin(pi * (k + 1) / lifter)`` (as librosa's ``mfcc(lifter=...)``;
  Juang, Rabiner & Wilpon 1987, "On the use of bandpass liftering in speech recognition")."""
  coefficients = log_mels @ dct_matrix(log_mels.shape[-1], n_cepstra)
  if lifter:
    k = np.arange(n_cepstra)
    coefficients = coefficients * (1 + lifter / 2 * np.sin(np.pi * (k + 1) / lifter)).astype(
        np.float32)
  return coefficients


def features_from_power(power: jax.Array, config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """The model's input features ``(..., frames, config.dim)`` of a power spectrogram:
  log-mels, or their cepstra when ``config.n_cepstra > 0``."""
  features = log_mel_from_power(power, config)
  if config.n_cepstra:
    features = cepstra(features, config.n_cepstra, config.cepstral_lifter)
  return features


def vtlp_source_bins(alpha: jax.Array, num_bins: int, sample_rate: int,
                     boundary_hz: float = 4800.0) -> jax.Array:
  """Where each output frequency bin reads from under vocal tract length perturbation.

  VTLP (Jaitly & Hinton 2013, "Vocal Tract Length Perturbation (VTLP) improves speech
  recognition", Eq. 1) maps an input frequency ``f`` to ``alpha * f`` up to
  ``boundary_hz * min(alpha, 1) / alpha`` and linearly onto the remaining band above, so
  0 Hz and Nyquist stay fixed. This is the inverse map, in (fractional) bins, for output
  bins ``0 .. num_bins - 1`` and warp factors ``alpha (batch,)``: shape ``(batch, bins)``.
  """
  nyquist = num_bins - 1.0
  alpha = alpha[:, None]
  knee = boundary_hz / (sample_rate / 2) * nyquist * jnp.minimum(alpha, 1.0)  # output bins
  k = jnp.arange(num_bins, dtype=jnp.float32)[None, :]
  above = nyquist - (nyquist - k) * (nyquist - knee / alpha) / (nyquist - knee)
  return jnp.where(k <= knee, k / alpha, above)


def vtlp(key: jax.Array, power: jax.Array, max_warp: float,
         config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """Warps the frequency axis of ``power (batch, frames, bins)`` by a factor drawn
  uniformly from ``[1 - max_warp, 1 + max_warp]`` per utterance (linear interpolation
  between bins): a new vocal tract length, i.e. a new speaker, for every utterance."""
  alpha = jax.random.uniform(key, (power.shape[0],), minval=1.0 - max_warp,
                             maxval=1.0 + max_warp)
  return warp_frequencies(power, alpha, config)


def warp_frequencies(power: jax.Array, alpha: jax.Array,
                     config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """The VTLP warp of ``power (batch, frames, bins)`` by factors ``alpha (batch,)``; at test
  time, with a factor chosen per speaker, vocal tract length normalization."""
  source = vtlp_source_bins(alpha, power.shape[-1], config.sample_rate)
  low = jnp.clip(jnp.floor(source).astype(jnp.int32), 0, power.shape[-1] - 1)
  high = jnp.minimum(low + 1, power.shape[-1] - 1)
  frac = (source - low)[:, None, :]
  take = lambda index: jnp.take_along_axis(power, index[:, None, :], axis=-1)
  return take(low) * (1.0 - frac) + take(high) * frac


def tempo(key: jax.Array, power: jax.Array, lengths: jax.Array,
          max_change: float) -> tuple[jax.Array, jax.Array]:
  """Changes the speaking rate of ``power (batch, frames, bins)`` by a factor drawn uniformly
  from ``[1 - max_change, 1 + max_change]`` per utterance: output frame ``t`` is input frame
  ``t * rate`` (linear interpolation between valid frames), so an utterance of ``n`` frames
  becomes ``floor((n - 1) / rate) + 1`` frames, at most the padded width. Together with
  :func:`vtlp` this approximates speed perturbation (Ko et al. 2015, "Audio augmentation
  for speech recognition", Interspeech), which scales time and frequency at once, without
  resampling waveforms on the host. Returns the warped power and the new lengths."""
  batch, frames = power.shape[:2]
  rate = jax.random.uniform(key, (batch,), minval=1.0 - max_change, maxval=1.0 + max_change)
  last = jnp.maximum(lengths - 1, 0)[:, None]
  source = jnp.minimum(jnp.arange(frames, dtype=jnp.float32)[None, :] * rate[:, None], last)
  low = jnp.floor(source).astype(jnp.int32)
  high = jnp.minimum(low + 1, last)
  frac = (source - low)[..., None]
  take = lambda index: jnp.take_along_axis(power, index[..., None], axis=1)
  warped = take(low) * (1.0 - frac) + take(high) * frac
  new_lengths = jnp.where(
      lengths > 0, jnp.floor(last[:, 0] / rate).astype(jnp.int32) + 1, 0)
  new_lengths = jnp.minimum(new_lengths, frames)
  valid = jnp.arange(frames)[None, :, None] < new_lengths[:, None, None]
  return jnp.where(valid, warped, 0.0), new_lengths


def feature_lengths(num_samples: jax.Array, config: FeatureConfig = FeatureConfig()) -> jax.Array:
  """Valid frames of signals with ``num_samples`` real (unpadded) samples."""
  return jnp.maximum(0, 1 + (num_samples - config.n_fft) // config.hop_length)


def normalize(features: jax.Array, lengths: jax.Array) -> jax.Array:
  """Per-utterance mean/variance normalization over the valid frames only (padding-invariant)."""
  mask = (jnp.arange(features.shape[-2])[None, :] < lengths[:, None])[..., None]
  count = jnp.maximum(lengths, 1)[:, None, None].astype(features.dtype)
  mean = jnp.sum(features * mask, axis=-2, keepdims=True) / count
  var = jnp.sum(((features - mean) * mask) ** 2, axis=-2, keepdims=True) / count
  return jnp.where(mask, (features - mean) * jax.lax.rsqrt(var + 1e-5), 0.0)


def normalize_with(features: jax.Array, lengths: jax.Array, mean: jax.Array,
                   std: jax.Array) -> jax.Array:
  """Mean/variance normalization of ``features (batch, frames, dim)`` by given statistics
  ``mean, std (batch, dim)`` (e.g. a speaker's, see :mod:`sparse_sr.adaptation`), padding
  zeroed."""
  mask = (jnp.arange(features.shape[-2])[None, :] < lengths[:, None])[..., None]
  return jnp.where(mask, (features - mean[:, None, :]) / std[:, None, :], 0.0)


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
  """SpecAugment's LibriSpeech-basic-like policy, with time masks scaled by length."""
  freq_masks: int = 2
  freq_width: int = 27
  time_masks: int = 2
  time_width_ratio: float = 0.05   # max mask width as a fraction of the utterance


def spec_augment(key: jax.Array, features: jax.Array, lengths: jax.Array,
                 config: SpecAugmentConfig = SpecAugmentConfig()) -> jax.Array:
  """Zeroes random frequency bands and time spans of ``features (batch, frames, mels)``.

  Masks are drawn per utterance; time masks stay inside each utterance's valid frames.
  """
  batch, frames, mels = features.shape
  k_fw, k_f0, k_tw, k_t0 = jax.random.split(key, 4)
  fw = jax.random.randint(k_fw, (batch, config.freq_masks), 0, config.freq_width + 1)
  f0 = (jax.random.uniform(k_f0, (batch, config.freq_masks)) * (mels - fw)).astype(jnp.int32)
  max_tw = jnp.floor(config.time_width_ratio * lengths).astype(jnp.int32)[:, None]
  tw = (jax.random.uniform(k_tw, (batch, config.time_masks)) * (max_tw + 1)).astype(jnp.int32)
  t0 = (jax.random.uniform(k_t0, (batch, config.time_masks))
        * jnp.maximum(lengths[:, None] - tw, 0)).astype(jnp.int32)
  f = jnp.arange(mels)[None, None, :]
  t = jnp.arange(frames)[None, None, :]
  freq_mask = jnp.any((f >= f0[..., None]) & (f < (f0 + fw)[..., None]), axis=1)
  time_mask = jnp.any((t >= t0[..., None]) & (t < (t0 + tw)[..., None]), axis=1)
  keep = ~(freq_mask[:, None, :] | time_mask[:, :, None])
  return jnp.where(keep, features, 0.0)
