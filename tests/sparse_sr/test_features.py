"""Log-mel front end against librosa; SpecAugment and normalization properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_sr.features import (FeatureConfig, SpecAugmentConfig, feature_lengths,
                                features_from_power, log_mel, mel_filterbank, normalize,
                                power_spectrogram, spec_augment, tempo, vtlp, vtlp_source_bins)

librosa = pytest.importorskip("librosa")


def test_mel_filterbank_matches_librosa():
  ours = mel_filterbank(16000, 512, 80)
  ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80)  # Slaney scale and norm
  np.testing.assert_allclose(ours, ref.T, rtol=1e-5, atol=1e-7)


def test_log_mel_matches_librosa():
  rng = np.random.default_rng(0)
  t = np.arange(8000) / 16000
  signal = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.normal(size=t.size)).astype(np.float32)
  config = FeatureConfig()
  emphasized = np.concatenate([signal[:1], signal[1:] - 0.97 * signal[:-1]])
  ref = librosa.feature.melspectrogram(
      y=emphasized, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
      center=False, power=2.0, window="hann")
  ours = np.asarray(log_mel(jnp.asarray(signal), config))
  assert ours.shape == (config.num_frames(signal.size), 80) == ref.T.shape
  np.testing.assert_allclose(ours, np.log(ref.T + config.log_floor), atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("n_cepstra, lifter", [(13, 0.0), (20, 22.0), (80, 0.0)])
def test_mfcc_matches_librosa(n_cepstra, lifter):
  """Cepstra of the front end against librosa's MFCC (orthonormal DCT-II, its liftering)
  of librosa's own log-mel spectrogram of the same pre-emphasized signal."""
  rng = np.random.default_rng(2)
  t = np.arange(6000) / 16000
  signal = (0.4 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 2100 * t)
            + 0.05 * rng.normal(size=t.size)).astype(np.float32)
  config = FeatureConfig(n_cepstra=n_cepstra, cepstral_lifter=lifter)
  emphasized = np.concatenate([signal[:1], signal[1:] - 0.97 * signal[:-1]])
  mel = librosa.feature.melspectrogram(
      y=emphasized, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
      center=False, power=2.0, window="hann")
  ref = librosa.feature.mfcc(S=np.log(mel + config.log_floor), n_mfcc=n_cepstra,
                             lifter=lifter).T
  ours = np.asarray(features_from_power(power_spectrogram(jnp.asarray(signal), config), config))
  assert ours.shape == ref.shape == (config.num_frames(signal.size), config.dim)
  np.testing.assert_allclose(ours, ref, atol=2e-2, rtol=1e-4)
  if n_cepstra == 80 and not lifter:  # the full orthonormal DCT keeps every log-mel's energy
    log_mels = np.asarray(log_mel(jnp.asarray(signal), FeatureConfig()))
    np.testing.assert_allclose(np.sum(ours ** 2, -1), np.sum(log_mels ** 2, -1), rtol=1e-4)


def test_feature_config_rejects_bad_cepstra():
  with pytest.raises(ValueError, match="n_cepstra"):
    FeatureConfig(n_mels=40, n_cepstra=41)
  with pytest.raises(ValueError, match="cepstral_lifter"):
    FeatureConfig(n_cepstra=13, cepstral_lifter=-1.0)
  assert FeatureConfig().dim == 80 and FeatureConfig(n_cepstra=13).dim == 13


def test_feature_lengths_count_frames_inside_the_signal():
  config = FeatureConfig()
  lengths = np.asarray(feature_lengths(jnp.asarray([511, 512, 672, 16000]), config))
  np.testing.assert_array_equal(lengths, [0, 1, 2, 1 + (16000 - 512) // 160])


def test_normalize_ignores_padding():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 30, 4)).astype(np.float32)
  padded = np.concatenate([x, rng.normal(size=(1, 10, 4)).astype(np.float32)], axis=1)
  a = normalize(jnp.asarray(x), jnp.asarray([30]))
  b = normalize(jnp.asarray(padded), jnp.asarray([30]))
  np.testing.assert_allclose(a, b[:, :30], atol=1e-6)
  assert np.all(np.asarray(b[:, 30:]) == 0)
  np.testing.assert_allclose(np.asarray(a).mean(axis=1), 0, atol=1e-5)
  # the same as numpy's per-utterance, per-band standardization of the valid frames
  reference = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(a, reference, atol=1e-5)


def test_spec_augment_masks_bands_within_utterances():
  features = jnp.ones((3, 100, 80))
  lengths = jnp.asarray([100, 60, 20])
  config = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width_ratio=0.1)
  out = np.asarray(spec_augment(jax.random.key(0), features, lengths, config))
  for i, length in enumerate([100, 60, 20]):
    masked_freq = np.all(out[i] == 0, axis=0)
    masked_time = np.all(out[i] == 0, axis=1)
    assert masked_freq.sum() <= 2 * 10
    assert masked_time.sum() <= 2 * int(0.1 * length)
    assert not masked_time[length:].any()  # padding frames are not chosen
  again = np.asarray(spec_augment(jax.random.key(0), features, lengths, config))
  np.testing.assert_array_equal(out, again)
  assert (out == 0).any()


def _vtlp_forward_hz(f, alpha, sample_rate=16000, f_hi=4800.0):
  """Jaitly & Hinton (2013), Eq. 1, written out in Hz: where input frequency f goes."""
  half = sample_rate / 2
  if f <= f_hi * min(alpha, 1) / alpha:
    return f * alpha
  return half - (half - f_hi * min(alpha, 1)) / (half - f_hi * min(alpha, 1) / alpha) * (half - f)


@pytest.mark.parametrize("alpha", [0.85, 0.95, 1.0, 1.12])
def test_vtlp_source_bins_invert_the_published_warp(alpha):
  bins, hz_per_bin = 257, 8000 / 256
  source = np.asarray(vtlp_source_bins(jnp.asarray([alpha]), bins, 16000))[0]
  forward = np.asarray([_vtlp_forward_hz(s * hz_per_bin, alpha) for s in source]) / hz_per_bin
  np.testing.assert_allclose(forward, np.arange(bins), atol=1e-3)
  assert source[0] == 0 and abs(source[-1] - 256) < 1e-4


def test_vtlp_moves_a_tone_within_the_warp_range_and_is_identity_without_warp():
  t = np.arange(16000) / 16000
  tone = jnp.asarray(np.sin(2 * np.pi * 1000 * t), jnp.float32)[None]   # bin 32
  power = power_spectrogram(tone)
  np.testing.assert_array_equal(vtlp(jax.random.key(0), power, 0.0), power)
  peaks = [int(np.argmax(np.asarray(vtlp(jax.random.key(k), power, 0.2))[0, 10]))
           for k in range(8)]
  assert all(32 * 0.8 - 1 <= p <= 32 * 1.2 + 1 for p in peaks)
  assert len(set(peaks)) > 2   # factors differ from key to key


def test_tempo_resamples_time_within_the_valid_frames():
  frames, bins = 40, 3
  ramp = np.broadcast_to(np.arange(frames, dtype=np.float32)[None, :, None], (2, frames, bins))
  lengths = jnp.asarray([30, 12])
  padded = np.where(np.arange(frames)[None, :, None] < np.asarray(lengths)[:, None, None],
                    ramp, 99.0)   # padding that must never be read
  key = jax.random.key(3)
  out, new = tempo(key, jnp.asarray(padded), lengths, 0.2)
  rate = np.asarray(jax.random.uniform(key, (2,), minval=0.8, maxval=1.2))
  new = np.asarray(new)
  np.testing.assert_array_equal(new, np.minimum(np.floor((np.asarray(lengths) - 1) / rate) + 1,
                                                frames).astype(int))
  for i in range(2):
    # a linear ramp stays linear: frame t reads input time t * rate, inside the utterance
    expected = np.minimum(np.arange(new[i]) * rate[i], int(lengths[i]) - 1)
    np.testing.assert_allclose(np.asarray(out)[i, :new[i], 0], expected, rtol=1e-5, atol=1e-4)
    assert np.all(np.asarray(out)[i, new[i]:] == 0)
  same, same_len = tempo(key, jnp.asarray(padded), lengths, 0.0)
  np.testing.assert_array_equal(same_len, lengths)
  np.testing.assert_array_equal(np.asarray(same)[0, :30], ramp[0, :30])
