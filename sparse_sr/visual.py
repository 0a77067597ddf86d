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


class VisualFrontEnd(nnx.Module):
  """``video (batch, frames, H, W)`` uint8 -> ``(batch, frames, d_model)``."""

  def __init__(self, config: VisualConfig, d_model: int, *, rngs: nnx.Rngs):
    c = config.stem_channels
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
    x = jax.nn.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    x = nnx.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
    x = x.reshape((b * t,) + x.shape[2:])
    for block in self.blocks:
      x = block(x, train)
    x = jnp.mean(x, axis=(1, 2)).reshape(b, t, -1)
    return self.proj(x), valid
