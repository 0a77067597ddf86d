"""Visual front end of Auto-AVSR (Ma et al. 2023, arXiv:2303.14307, Sec. 3; Ma, Petridis
& Pantic 2021, arXiv:2102.06657): a 3-D convolutional stem (5x7x7, stride 1x2x2) and
max-pooling over the mouth-region clip, then a 2-D ResNet-18 trunk applied to every frame
and global average pooling, giving one feature vector per video frame (25 fps).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class VisualConfig:
  stem_channels: int = 64
  widths: tuple[int, ...] = (64, 128, 256, 512)   # ResNet-18 stages
  blocks_per_stage: int = 2


class BasicBlock(nnx.Module):
  """ResNet basic block (He et al. 2016, arXiv:1512.03385): two 3x3 convs + shortcut."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                          use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                          rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
    self.projected = stride != 1 or cin != cout
    if self.projected:
      self.shortcut = nnx.Conv(cin, cout, (1, 1), strides=(stride, stride), use_bias=False,
                               rngs=rngs)
      self.shortcut_bn = nnx.BatchNorm(cout, rngs=rngs)

  def __call__(self, x, train: bool):
    h = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    h = self.bn2(self.conv2(h), use_running_average=not train)
    skip = x if not self.projected else self.shortcut_bn(self.shortcut(x),
                                                            use_running_average=not train)
    return jax.nn.relu(h + skip)


def frame_stacked_stem(video: jax.Array, kernel: jax.Array) -> jax.Array:
  """The stem's 3-D convolution (kernel ``(kt, kh, kw, 1, C)``, strides ``(1, 2, 2)``, "same"
  padding) of a one-channel ``video (B, T, H, W, 1)``, computed as a 2-D convolution over
  the ``kt`` neighbouring frames stacked as input channels: the same sum over the same
  taps, so the same function and kernel gradient up to float summation order.

  Why: XLA's CPU backend has no fast path for this 3-D convolution or for its kernel
  gradient (a window-dilated convolution) and runs both as plain loops. Measured on
  16 x 30 x 44 x 44 clips, 4 output channels, forward plus kernel gradient: 1283 ms as a
  3-D convolution, 74.8 ms this way (medians of 7, one process).
  """
  kt, kh, kw, cin, _ = kernel.shape
  if cin != 1 or video.shape[-1] != 1:
    raise ValueError(f"the stem takes one input channel, got kernel {kernel.shape} and "
                     f"video {video.shape}")
  b, t, h, w, _ = video.shape
  padded = jnp.pad(video[..., 0], ((0, 0), (kt // 2, (kt - 1) // 2), (0, 0), (0, 0)))
  frames = jnp.stack([padded[:, d:d + t] for d in range(kt)], axis=-1)   # (B, T, H, W, kt)
  planar = jnp.transpose(kernel[:, :, :, 0, :], (1, 2, 0, 3))            # (kh, kw, kt, C)
  out = jax.lax.conv_general_dilated(
      frames.reshape(b * t, h, w, kt), planar.astype(video.dtype), (2, 2),
      ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out.reshape((b, t) + out.shape[1:])


class VisualFrontEnd(nnx.Module):
  """``video (batch, frames, H, W)`` uint8 -> ``(batch, frames, d_model)``."""

  def __init__(self, config: VisualConfig, d_model: int, *, rngs: nnx.Rngs):
    c = config.stem_channels
    # holds the stem's kernel and states its geometry; __call__ computes this convolution with
    # frame_stacked_stem, which tests check against this Conv
    self.stem = nnx.Conv(1, c, (5, 7, 7), strides=(1, 2, 2), padding=((2, 2), (3, 3), (3, 3)),
                         use_bias=False, rngs=rngs)
    self.stem_bn = nnx.BatchNorm(c, rngs=rngs)
    blocks, cin = [], c
    for stage, width in enumerate(config.widths):
      for i in range(config.blocks_per_stage):
        blocks.append(BasicBlock(cin, width, 2 if (i == 0 and stage > 0) else 1, rngs=rngs))
        cin = width
    self.blocks = nnx.List(blocks)
    self.proj = nnx.Linear(cin, d_model, rngs=rngs)

  def __call__(self, video, video_len, train: bool = False):
    b, t = video.shape[:2]
    valid = jnp.arange(t)[None, :] < video_len[:, None]
    x = (video.astype(jnp.float32) / 255.0 - 0.421) / 0.165   # LRS3 mouth-ROI statistics
    x = jnp.where(valid[:, :, None, None], x, 0.0)[..., None]
    x = jax.nn.relu(self.stem_bn(frame_stacked_stem(x, self.stem.kernel[...]),
                                 use_running_average=not train))
    x = nnx.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
    x = x.reshape((b * t,) + x.shape[2:])
    for block in self.blocks:
      x = block(x, train)
    x = jnp.mean(x, axis=(1, 2)).reshape(b, t, -1)
    return self.proj(x), valid
