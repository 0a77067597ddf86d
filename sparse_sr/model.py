"""The speech recognizer: audio, visual or audio-visual front end, Conformer encoder(s),
CTC head and Transformer decoder, as in Auto-AVSR (Ma et al. 2023, arXiv:2303.14307,
Sec. 3, Fig. 1): audio and video each get a Conformer encoder; for audio-visual input
the two outputs are concatenated and fused by an MLP before the shared heads.

Audio enters as raw 16 kHz waveforms; log-mel features (and SpecAugment while training)
are computed inside the model so the whole front end runs on the accelerator.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sparse_sr.conformer import ConformerConfig, ConformerEncoder, ConvSubsampling
from sparse_sr.decoder import DecoderConfig, TransformerDecoder
from sparse_sr.features import (FeatureConfig, SpecAugmentConfig, feature_lengths,
                                features_from_power, normalize, normalize_with,
                                power_spectrogram, spec_augment,
                                tempo, vtlp, warp_frequencies)
from sparse_sr.visual import VisualConfig, VisualFrontEnd

MODALITIES = ("audio", "video", "av")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  modality: str = "audio"
  encoder: ConformerConfig = ConformerConfig()
  decoder: DecoderConfig = DecoderConfig()
  visual: VisualConfig = VisualConfig()
  features: FeatureConfig = FeatureConfig()
  spec_augment: SpecAugmentConfig | None = SpecAugmentConfig()
  subsample_channels: int = 64
  fusion_hidden: int = 1024
  vtlp_warp: float = 0.0    # VTLP while training: warp factors in 1 +- vtlp_warp (0: off)
  tempo_change: float = 0.0  # tempo perturbation while training: rates in 1 +- tempo_change

  def __post_init__(self):
    if self.modality not in MODALITIES:
      raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
    if self.tempo_change and self.modality != "audio":
      raise ValueError("tempo perturbation changes the audio's frame rate; it applies to "
                       "audio-only models, not to modality " + repr(self.modality))

  @property
  def uses_audio(self) -> bool:
    return self.modality in ("audio", "av")

  @property
  def uses_video(self) -> bool:
    return self.modality in ("video", "av")


PRESETS = {
    # nano: smoke tests of the whole pipeline (compiles fastest)
    "conformer-nano": dict(
        encoder=ConformerConfig(d_model=32, num_heads=2, num_layers=1, conv_kernel=5),
        decoder=DecoderConfig(num_layers=1, num_heads=2),
        visual=VisualConfig(stem_channels=4, widths=(4, 8, 8, 8), blocks_per_stage=1),
        subsample_channels=4, fusion_hidden=32),
    # tiny: seconds per step on 2 CPU cores, for tests and --quick runs
    "conformer-tiny": dict(
        encoder=ConformerConfig(d_model=96, num_heads=4, num_layers=3, conv_kernel=15,
                                dropout=0.1),
        decoder=DecoderConfig(num_layers=1, num_heads=4, dropout=0.1),
        visual=VisualConfig(stem_channels=16, widths=(16, 32, 64, 128)),
        subsample_channels=32, fusion_hidden=192),
    "conformer-small": dict(
        encoder=ConformerConfig(d_model=256, num_heads=4, num_layers=8, conv_kernel=31),
        decoder=DecoderConfig(num_layers=4, num_heads=4),
        visual=VisualConfig(stem_channels=32, widths=(32, 64, 128, 256)),
        subsample_channels=128, fusion_hidden=1024),
    # Auto-AVSR's configuration: 12 Conformer layers, d=768, 12 heads, kernel 31,
    # 6 decoder layers, full ResNet-18 visual trunk, 4096-wide fusion MLP.
    "conformer-base": dict(
        encoder=ConformerConfig(d_model=768, num_heads=12, num_layers=12, conv_kernel=31),
        decoder=DecoderConfig(num_layers=6, num_heads=12),
        visual=VisualConfig(), subsample_channels=256, fusion_hidden=4096),
}


def preset(name: str, vocab_size: int, modality: str = "audio", **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model {name!r}; choose from {sorted(PRESETS)}")
  return ModelConfig(vocab_size=vocab_size, modality=modality, **{**PRESETS[name], **overrides})


class FusionMLP(nnx.Module):
  def __init__(self, d_in: int, hidden: int, d_out: int, *, rngs: nnx.Rngs):
    self.up = nnx.Linear(d_in, hidden, rngs=rngs)
    self.norm = nnx.LayerNorm(hidden, rngs=rngs)
    self.down = nnx.Linear(hidden, d_out, rngs=rngs)

  def __call__(self, x):
    return self.down(jax.nn.relu(self.norm(self.up(x))))


class SpeechRecognizer(nnx.Module):
  """Hybrid CTC/attention recognizer over the modality of ``config``.

  ``encode(batch)`` returns ``(memory (batch, T, d), valid (batch, T))`` at 25 frames per
  second; ``ctc_logits(memory)`` and ``decode(tokens, memory, valid)`` are the two heads.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    d = config.encoder.d_model
    if config.uses_audio:
      self.subsample = ConvSubsampling(config.features.dim, config.subsample_channels, d,
                                       rngs=rngs)
      self.audio_encoder = ConformerEncoder(config.encoder, rngs=rngs)
    if config.uses_video:
      self.visual = VisualFrontEnd(config.visual, d, rngs=rngs)
      self.video_encoder = ConformerEncoder(config.encoder, rngs=rngs)
    if config.modality == "av":
      self.fusion = FusionMLP(2 * d, config.fusion_hidden, d, rngs=rngs)
    self.ctc_head = nnx.Linear(d, config.vocab_size, rngs=rngs)
    self.decoder = TransformerDecoder(config.vocab_size, d, config.decoder, rngs=rngs)

  def encode_audio(self, audio, audio_len, rngs=None, warp=None, cmvn=None,
                   frame_index=None, frame_len=None):
    """``warp (batch,)``: fixed frequency warp factors (test-time VTLN, see
    :func:`sparse_sr.features.warp_frequencies`); ``cmvn``: ``(mean, std)``, each
    ``(batch, features.dim)``, normalize features by these (speaker-level) statistics instead
    of each utterance's own; ``frame_index (batch, frames)`` and ``frame_len (batch,)``: keep
    only these feature frames (feature-domain time-drop, :class:`sparse_sr.ddp.TimeDrop`),
    gathered before anything that looks across frames, so the encoder's input is shorter."""
    power = power_spectrogram(audio, self.config.features)
    lengths = feature_lengths(audio_len, self.config.features)
    if frame_index is not None:
      power = jnp.take_along_axis(power, frame_index[..., None], axis=1)
      lengths = frame_len
    if warp is not None:
      power = warp_frequencies(power, warp, self.config.features)
    if rngs is not None and self.config.vtlp_warp:
      power = vtlp(rngs.augment(), power, self.config.vtlp_warp, self.config.features)
    if rngs is not None and self.config.tempo_change:
      power, lengths = tempo(rngs.augment(), power, lengths, self.config.tempo_change)
    features = features_from_power(power, self.config.features)
    features = (normalize(features, lengths) if cmvn is None
                else normalize_with(features, lengths, *cmvn))
    if rngs is not None and self.config.spec_augment is not None:
      features = spec_augment(rngs.augment(), features, lengths, self.config.spec_augment)
    x, lengths = self.subsample(features, lengths)
    valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    return self.audio_encoder(x, valid, rngs), valid

  def encode(self, batch, rngs=None):
    """Encoder output; ``rngs`` (streams ``dropout`` and ``augment``) means training; an
    optional ``batch["warp"]`` warps the audio's frequency axis, optional
    ``batch["cmvn_mean"]`` and ``batch["cmvn_std"]`` replace per-utterance normalization."""
    train = rngs is not None
    if self.config.modality == "audio":
      return self.encode_audio(batch["audio"], batch["audio_len"], rngs, batch.get("warp"),
                               _cmvn(batch), batch.get("frame_index"), batch.get("frame_len"))
    x, valid = self.visual(batch["video"], batch["video_len"], train)
    video_out = self.video_encoder(x, valid, rngs)
    if self.config.modality == "video":
      return video_out, valid
    audio_out, audio_valid = self.encode_audio(batch["audio"], batch["audio_len"], rngs,
                                               batch.get("warp"), _cmvn(batch))
    frames = video_out.shape[1]  # audio is padded to whole video frames: same rate and count
    audio_out, audio_valid = audio_out[:, :frames], audio_valid[:, :frames]
    valid = valid | audio_valid
    fused = self.fusion(jnp.concatenate([audio_out, video_out], axis=-1))
    return jnp.where(valid[..., None], fused, 0.0), valid

  def ctc_logits(self, memory):
    return self.ctc_head(memory)

  def decode(self, tokens, memory, valid, rngs=None):
    return self.decoder(tokens, memory, valid, rngs)


def _cmvn(batch):
  return (batch["cmvn_mean"], batch["cmvn_std"]) if "cmvn_mean" in batch else None


def model_config_from_dict(d: dict) -> ModelConfig:
  """Inverse of ``dataclasses.asdict`` for :class:`ModelConfig` (JSON lists -> tuples)."""
  d = dict(d)
  d["encoder"] = ConformerConfig(**d["encoder"])
  d["decoder"] = DecoderConfig(**d["decoder"])
  visual = dict(d["visual"])
  visual["widths"] = tuple(visual["widths"])
  d["visual"] = VisualConfig(**visual)
  d["features"] = FeatureConfig(**d["features"])
  d["spec_augment"] = SpecAugmentConfig(**d["spec_augment"]) if d["spec_augment"] else None
  return ModelConfig(**d)
