"""Synthetic talking-mouth video aligned with espeak-ng phoneme events.

A stand-in for LRS3 mouth crops, which cannot be obtained on this offline machine: each
phoneme is mapped to a viseme (a mouth opening, width and lip rounding), the viseme targets
are interpolated at 25 fps from the exact phoneme onsets, and a parametric mouth (dark
ellipse between two lips, teeth for labiodentals) is drawn into 44x44 grey frames with
per-speaker shape jitter, head-motion jitter and pixel noise. Visemes are many-to-one, as in
real lip reading, so the audio-visual model has to combine both streams.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FPS = 25
SIZE = 44

# viseme: (opening, width, rounding, teeth) in [0, 1]
_VISEMES = {
    "rest": (0.05, 0.55, 0.0, 0.0),
    "bilabial": (0.0, 0.5, 0.1, 0.0),      # p b m
    "labiodental": (0.1, 0.55, 0.0, 1.0),  # f v
    "dental": (0.25, 0.6, 0.0, 0.8),       # th
    "alveolar": (0.3, 0.55, 0.0, 0.4),     # t d n s z l
    "postalveolar": (0.3, 0.4, 0.6, 0.3),  # sh ch j zh r
    "velar": (0.35, 0.55, 0.0, 0.0),       # k g ng h
    "rounded": (0.3, 0.3, 1.0, 0.0),       # w u o
    "open": (0.9, 0.6, 0.1, 0.0),          # a
    "mid": (0.6, 0.65, 0.0, 0.0),          # e @ 3
    "spread": (0.35, 0.85, 0.0, 0.2),      # i
}


def phoneme_to_viseme(phoneme: str) -> str:
  """espeak-ng's ASCII phoneme mnemonic (Kirshenbaum-like) to a viseme class."""
  p = phoneme.lstrip("'%,=").rstrip(":;#")
  if not p or p.startswith("_"):
    return "rest"
  head = p[0]
  if head in "pbm":
    return "bilabial"
  if head in "fv":
    return "labiodental"
  if head in "TD":
    return "dental"
  if head in "tdnszlL":
    return "alveolar"
  if head in "SZrR" or p in ("tS", "dZ"):
    return "postalveolar"
  if head in "kgNhxj":
    return "velar"
  if head in "wuUoO":
    return "rounded"
  if head in "aA":
    return "open"
  if head in "iI":
    return "spread"
  return "mid"


@dataclasses.dataclass(frozen=True)
class MouthStyle:
  """A speaker's lip geometry: scale of width/opening, lip thickness, colours."""
  width_scale: float = 1.0
  open_scale: float = 1.0
  lip_thickness: float = 2.0
  skin: float = 0.65
  lip: float = 0.4

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "MouthStyle":
    return cls(width_scale=rng.uniform(0.85, 1.15), open_scale=rng.uniform(0.8, 1.2),
               lip_thickness=rng.uniform(1.5, 3.0), skin=rng.uniform(0.5, 0.8),
               lip=rng.uniform(0.25, 0.45))


def viseme_track(phonemes, num_samples: int, sample_rate: int) -> np.ndarray:
  """Per-frame viseme parameters ``(frames, 4)`` at 25 fps, linearly interpolated between
  phoneme centres so the mouth moves smoothly."""
  num_frames = max(1, int(np.ceil(num_samples * FPS / sample_rate)))
  if not phonemes:
    return np.tile(np.asarray(_VISEMES["rest"], np.float32), (num_frames, 1))
  starts = np.asarray([s for _, s in phonemes] + [num_samples], np.float64)
  centres = (starts[:-1] + starts[1:]) / 2 / sample_rate
  targets = np.asarray([_VISEMES[phoneme_to_viseme(p)] for p, _ in phonemes], np.float64)
  times = (np.arange(num_frames) + 0.5) / FPS
  track = np.stack([np.interp(times, centres, targets[:, k]) for k in range(4)], axis=1)
  return track.astype(np.float32)


def render_mouth(track: np.ndarray, style: MouthStyle, rng: np.random.Generator,
                 noise: float = 0.05) -> np.ndarray:
  """Draws ``(frames, 44, 44)`` uint8 frames of a mouth following ``track``."""
  y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  frames = np.empty((len(track), SIZE, SIZE), np.uint8)
  for i, (opening, width, rounding, teeth) in enumerate(track):
    cx = SIZE / 2 + rng.normal(0, 0.7)
    cy = SIZE / 2 + rng.normal(0, 0.7)
    half_w = (6 + 12 * width * (1 - 0.35 * rounding)) * style.width_scale
    half_h = (1 + 9 * opening) * style.open_scale
    r = ((x - cx) / half_w) ** 2 + ((y - cy) / max(half_h, 0.5)) ** 2
    outer = ((x - cx) / (half_w + style.lip_thickness)) ** 2 + \
        ((y - cy) / (half_h + style.lip_thickness)) ** 2
    image = np.full((SIZE, SIZE), style.skin, np.float32)
    image[outer <= 1] = style.lip
    inside = r <= 1
    image[inside] = 0.08
    if teeth > 0:
      image[inside & (y < cy - 0.3 * half_h)] = 0.08 + 0.8 * teeth
    image += rng.normal(0, noise, image.shape).astype(np.float32)
    frames[i] = np.clip(image * 255, 0, 255).astype(np.uint8)
  return frames


def render_video(phonemes, num_samples: int, sample_rate: int, style: MouthStyle,
                 seed: int) -> np.ndarray:
  """The mouth video for one utterance: ``ceil(duration * 25)`` frames of 44x44 uint8."""
  return render_mouth(viseme_track(phonemes, num_samples, sample_rate), style,
                      np.random.default_rng(seed))
