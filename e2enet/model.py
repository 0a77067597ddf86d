"""E2ENet and an nnU-Net-style 3D U-Net (Flax NNX), channels-last ``(B, D, H, W, C)``.

E2ENet (Wu et al. 2024, arXiv:2312.04727), following the official ``unetpp_d.py``:

- encoder of ``len(pool_kernels) + 1`` levels, channels ``min(base * 2**i, max_channels)``, two
  conv blocks per level, downsampling by a strided first conv;
- conv block = restricted depth shift, (1, 3, 3) conv with bias, InstanceNorm (affine, eps 1e-5),
  LeakyReLU(0.01) (Sec. 3.3);
- DSFF fusion (Sec. 3.2): nodes ``x[i, j]`` for ``j >= 1, i + j <= P`` (P pools) compute
  ``F(concat[x[i, j-1], ConvT(x[i+1, j-1]), MaxPool(x[i-1, j-1])])``, one block per node, two on
  the last diagonal; 1x1x1 deep-supervision heads (no bias) on ``x[i, P-i]``, ``i < 4``.

The baseline (``fusion="unet"``) is nnU-Net's plain decoder: ``ConvT`` up, concat with the skip,
two blocks, heads on the same four levels. The shift set and kernel size are configurable, which
gives the no-shift (1, 3, 3) and 3x3x3 ablations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from e2enet.shift import OFFICIAL_SHIFTS, depth_shift
from jaxrepro import sparsity

Triple = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class E2ENetConfig:
  """Architecture; defaults are the paper's E2ENet for 1 input channel and 16 classes."""
  in_channels: int = 1
  num_classes: int = 16
  pool_kernels: tuple[Triple, ...] = ((2, 2, 2),) * 5
  base_channels: int = 48
  max_channels: int = 320
  kernel_size: Triple = (1, 3, 3)
  shifts: tuple[int, ...] = OFFICIAL_SHIFTS
  fusion: str = "dsff"            # "dsff" (E2ENet) or "unet" (nnU-Net decoder)
  supervised_levels: int = 4      # deep-supervision heads on levels 0..supervised_levels-1

  def __post_init__(self):
    if self.fusion not in ("dsff", "unet"):
      raise ValueError(f"fusion must be 'dsff' or 'unet', got {self.fusion!r}")
    if not 1 <= self.supervised_levels <= len(self.pool_kernels):
      raise ValueError("supervised_levels must be in [1, number of pools]")
    if any(len(p) != 3 for p in self.pool_kernels) or len(self.kernel_size) != 3:
      raise ValueError("pool kernels and kernel_size must be 3-tuples")

  @property
  def num_pools(self) -> int:
    return len(self.pool_kernels)

  @property
  def channels(self) -> tuple[int, ...]:
    return tuple(min(self.base_channels * 2 ** i, self.max_channels)
                 for i in range(self.num_pools + 1))

  @property
  def divisor(self) -> Triple:
    """Input sizes must be multiples of this (product of the pool kernels per axis)."""
    return tuple(math.prod(p[a] for p in self.pool_kernels) for a in range(3))


def unet_config(**overrides) -> E2ENetConfig:
  """The nnU-Net-style baseline: 3x3x3 convs, no shift, plain skips."""
  return E2ENetConfig(**{"kernel_size": (3, 3, 3), "shifts": (), "fusion": "unet", **overrides})


# Ablations of the paper's Table 5 in the same code base.
VARIANTS = {
    "e2enet": {},
    "e2enet-noshift": {"shifts": ()},
    "e2enet-333": {"shifts": (), "kernel_size": (3, 3, 3)},
    "unet": {"kernel_size": (3, 3, 3), "shifts": (), "fusion": "unet"},
}


def config_for(variant: str, **overrides) -> E2ENetConfig:
  if variant not in VARIANTS:
    raise ValueError(f"unknown model {variant!r}; choose from {sorted(VARIANTS)}")
  return E2ENetConfig(**{**VARIANTS[variant], **overrides})


# He init as nnU-Net's InitWeights_He(1e-2): kaiming_normal with negative slope 0.01.
_he_normal = nnx.initializers.variance_scaling(2.0 / (1 + 0.01 ** 2), "fan_in",
                                               "normal")


class ConvBlock(nnx.Module):
  """[depth shift] -> conv (bias) -> InstanceNorm(affine, eps 1e-5) -> LeakyReLU(0.01)."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: Triple,
               shifts: Sequence[int], *, stride: Triple = (1, 1, 1), rngs: nnx.Rngs):
    self.shifts = tuple(shifts)
    self.conv = nnx.Conv(in_channels, out_channels, kernel_size, strides=stride,
                         padding=tuple((k // 2, k // 2) for k in kernel_size), use_bias=True,
                         kernel_init=_he_normal, rngs=rngs)
    self.norm = nnx.InstanceNorm(out_channels, epsilon=1e-5, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = depth_shift(x, self.shifts)
    return jax.nn.leaky_relu(self.norm(self.conv(x)), 0.01)


def _stage(cfg: E2ENetConfig, in_c: int, out_c: int, n: int, rngs: nnx.Rngs,
           stride: Triple = (1, 1, 1)) -> nnx.List:
  return nnx.List([ConvBlock(in_c if b == 0 else out_c, out_c, cfg.kernel_size, cfg.shifts,
                             stride=stride if b == 0 else (1, 1, 1), rngs=rngs)
                   for b in range(n)])


def _run(blocks: nnx.List, x: jax.Array) -> jax.Array:
  for block in blocks:
    x = block(x)
  return x


class UpConv(nnx.Module):
  """Transposed conv with kernel == stride (nnU-Net's upsampling), PyTorch semantics
  ``out[s*d + a] = x[d] @ W[a]``, written as a matmul + depth-to-space: exactly the same map,
  but XLA on CPU runs ``lax.conv_transpose`` two orders of magnitude slower. Kernel
  ``(*factor, in, out)`` like Flax convs, so kernel-granularity masks apply unchanged."""

  def __init__(self, in_channels: int, out_channels: int, factor: Triple, *, rngs: nnx.Rngs):
    self.factor = tuple(factor)
    self.kernel = nnx.Param(_he_normal(rngs.params(), self.factor + (in_channels, out_channels)))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, d, h, w, _ = x.shape
    fd, fh, fw = self.factor
    y = jnp.einsum("bdhwi,xyzio->bdxhywzo", x, self.kernel[...])
    return y.reshape(b, d * fd, h * fh, w * fw, y.shape[-1])


def _up(in_c: int, out_c: int, pool: Triple, rngs: nnx.Rngs) -> UpConv:
  return UpConv(in_c, out_c, pool, rngs=rngs)


class Encoder(nnx.Module):
  """Levels 0..P: two blocks each; the first block of level d > 0 is strided by pool[d-1]."""

  def __init__(self, cfg: E2ENetConfig, *, rngs: nnx.Rngs):
    ch = cfg.channels
    self.stages = nnx.List([
        _stage(cfg, cfg.in_channels if d == 0 else ch[d - 1], ch[d], 2, rngs,
               stride=(1, 1, 1) if d == 0 else cfg.pool_kernels[d - 1])
        for d in range(cfg.num_pools + 1)])

  def __call__(self, x: jax.Array) -> list[jax.Array]:
    features = []
    for stage in self.stages:
      x = _run(stage, x)
      features.append(x)
    return features


class FusionNode(nnx.Module):
  """x[i, j] = F(concat[x[i, j-1], ConvT(x[i+1, j-1]), MaxPool(x[i-1, j-1])])."""

  def __init__(self, cfg: E2ENetConfig, level: int, column: int, *, rngs: nnx.Rngs):
    ch = cfg.channels
    self.level, self.column = level, column
    self.up = _up(ch[level + 1], ch[level], cfg.pool_kernels[level], rngs)
    self.down_window = cfg.pool_kernels[level - 1] if level > 0 else None
    concat = 2 * ch[level] + (ch[level - 1] if level > 0 else 0)
    n_blocks = 2 if level + column == cfg.num_pools else 1
    self.blocks = _stage(cfg, concat, ch[level], n_blocks, rngs)

  def __call__(self, same: jax.Array, below: jax.Array, above: jax.Array | None) -> jax.Array:
    parts = [same, self.up(below)]
    if self.down_window is not None:
      parts.append(nnx.max_pool(above, self.down_window, strides=self.down_window))
    return _run(self.blocks, jnp.concatenate(parts, axis=-1))


def fusion_nodes(num_pools: int) -> list[tuple[int, int]]:
  """Nodes (i, j) of the DSFF graph in execution order (anti-diagonal by anti-diagonal)."""
  return [(k - j, j) for k in range(1, num_pools + 1) for j in range(1, k + 1)]


def _heads(cfg: E2ENetConfig, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([nnx.Conv(cfg.channels[i], cfg.num_classes, (1, 1, 1), use_bias=False,
                            kernel_init=_he_normal, rngs=rngs)
                   for i in range(cfg.supervised_levels)])


class E2ENet(nnx.Module):
  """E2ENet: encoder + DSFF fusion graph; returns logits, full resolution first."""

  def __init__(self, cfg: E2ENetConfig, *, rngs: nnx.Rngs):
    if cfg.fusion != "dsff":
      raise ValueError("E2ENet needs fusion='dsff'; use UNet3D for 'unet'")
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.nodes = nnx.List([FusionNode(cfg, i, j, rngs=rngs)
                           for i, j in fusion_nodes(cfg.num_pools)])
    self.heads = _heads(cfg, rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    _check_input(self.cfg, x)
    enc = self.encoder(x)
    grid = {(i, 0): f for i, f in enumerate(enc)}
    for node in self.nodes:
      i, j = node.level, node.column
      grid[(i, j)] = node(grid[(i, j - 1)], grid[(i + 1, j - 1)], grid.get((i - 1, j - 1)))
    p = self.cfg.num_pools
    return tuple(head(grid[(i, p - i)]) for i, head in enumerate(self.heads))


class UNet3D(nnx.Module):
  """nnU-Net-style U-Net: same encoder, ConvT + concat skip + two blocks per decoder level."""

  def __init__(self, cfg: E2ENetConfig, *, rngs: nnx.Rngs):
    if cfg.fusion != "unet":
      raise ValueError("UNet3D needs fusion='unet'")
    self.cfg = cfg
    ch = cfg.channels
    self.encoder = Encoder(cfg, rngs=rngs)
    levels = range(cfg.num_pools - 1, -1, -1)
    self.ups = nnx.List([_up(ch[i + 1], ch[i], cfg.pool_kernels[i], rngs) for i in levels])
    self.decoder = nnx.List([_stage(cfg, 2 * ch[i], ch[i], 2, rngs) for i in levels])
    self.heads = _heads(cfg, rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    _check_input(self.cfg, x)
    enc = self.encoder(x)
    y, outs = enc[-1], {}
    for k, (up, stage) in enumerate(zip(self.ups, self.decoder)):
      level = self.cfg.num_pools - 1 - k
      y = _run(stage, jnp.concatenate([enc[level], up(y)], axis=-1))
      outs[level] = y
    return tuple(head(outs[i]) for i, head in enumerate(self.heads))


def _check_input(cfg: E2ENetConfig, x: jax.Array) -> None:
  if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
    raise ValueError(f"expected (B, D, H, W, {cfg.in_channels}), got {x.shape}")
  bad = [s for s, d in zip(x.shape[1:4], cfg.divisor) if s % d]
  if bad:
    raise ValueError(f"spatial shape {x.shape[1:4]} must be a multiple of {cfg.divisor}")


def build_model(cfg: E2ENetConfig, *, rngs: nnx.Rngs) -> E2ENet | UNet3D:
  return E2ENet(cfg, rngs=rngs) if cfg.fusion == "dsff" else UNet3D(cfg, rngs=rngs)


def init_params(cfg: E2ENetConfig, seed: int = 0):
  """``(graphdef, params)`` with nnU-Net's init (He normal, slope 0.01; zero biases; unit norm
  scales) drawn by numpy from the abstract model: XLA on CPU takes tens of seconds to compile
  the hundreds of random initializers of a 3D U-Net, numpy takes milliseconds."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = [n for n in sparsity.path_names(path) if n != "value"][-1]
    if name == "kernel":
      std = math.sqrt(2.0 / (1 + 0.01 ** 2) / math.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)
    fill = 1.0 if name == "scale" else 0.0
    return jnp.full(leaf.shape, fill, leaf.dtype)
  return graphdef, jax.tree_util.tree_map_with_path(init, abstract)


def dsff_granularity(path: tuple, leaf: jax.Array) -> str | None:
  """DSFF sparsity: kernel masks on every fusion conv and transposed conv; the rest dense."""
  names = [n for n in sparsity.path_names(path) if n != "value"]  # nnx.Variable leaves
  return sparsity.KERNEL if names[0] == "nodes" and names[-1] == "kernel" else None


def param_counts(model_or_params, masks=None) -> dict[str, int]:
  """Dense parameter count and the count with masked kernels as zero."""
  params = model_or_params
  if isinstance(model_or_params, nnx.Module):
    params = nnx.state(model_or_params, nnx.Param)
  total = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  nonzero = total if masks is None else sparsity.count_nonzero(params, masks)
  return {"dense": total, "nonzero": nonzero}


@functools.cache
def paper_parameter_counts() -> dict[str, dict[str, int]]:
  """Dense counts of E2ENet, its ablations and the U-Net for 1 input channel, 16 classes and
  5 pools of (2, 2, 2), and E2ENet's non-zero counts at DSFF sparsity 0.8 and 0.7 (masked
  kernels counted as zero; the masks of :func:`jaxrepro.sparsity.init_masks` hold exactly
  ``round(density * kernels)`` per layer), from shapes only (``jax.eval_shape``)."""
  out = {}
  for variant in ("e2enet", "e2enet-noshift", "e2enet-333", "unet"):
    cfg = config_for(variant)
    params = nnx.state(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    out[variant] = {"dense": param_counts(params)["dense"]}
    if variant == "e2enet":
      for s in (0.8, 0.7):
        out[variant][f"sparsity_{s}"] = sparsity.nonzero_at_density(params, 1 - s,
                                                                    dsff_granularity)
  return out
