import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from e2enet import shift
from e2enet.flops import analytic_macs
from e2enet.model import (E2ENetConfig, build_model, config_for, dsff_granularity, fusion_nodes,
                          UpConv, init_params, paper_parameter_counts, param_counts,
                          unet_config)
from jaxrepro import sparsity


def _numpy_shift(x, shifts):
  """Reference: torch.chunk groups (ceil(C/n) channels), out[d] = x[d - s], zero fill."""
  c = x.shape[-1]
  size = -(-c // len(shifts))
  out = np.zeros_like(x)
  for g, start in enumerate(range(0, c, size)):
    s = shifts[g]
    for d in range(x.shape[1]):
      if 0 <= d - s < x.shape[1]:
        out[:, d, ..., start:start + size] = x[:, d - s, ..., start:start + size]
  return out


@pytest.mark.parametrize("channels,shifts", [(10, shift.OFFICIAL_SHIFTS), (7, shift.OFFICIAL_SHIFTS),
                                             (6, shift.OFFICIAL_SHIFTS), (1, shift.OFFICIAL_SHIFTS),
                                             (5, (-1, 0, 1)), (4, (3, -3))])
def test_depth_shift_matches_numpy_reference(channels, shifts):
  x = np.random.default_rng(channels).normal(size=(2, 6, 3, 4, channels)).astype(np.float32)
  got = np.asarray(shift.depth_shift(jnp.asarray(x), shifts))
  np.testing.assert_array_equal(got, _numpy_shift(x, shifts))


def test_uneven_groups_follow_torch_chunk():
  # 48 channels -> 10,10,10,10,8; 6 channels -> 2,2,2 (three groups only); 1 channel -> one group.
  assert [b - a for a, b in shift.channel_groups(48, 5)] == [10, 10, 10, 10, 8]
  assert shift.channel_groups(6, 5) == [(0, 2), (2, 4), (4, 6)]
  x = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1, 1)
  # A single channel is shifted by the first shift (-2): out[d] = x[d + 2], zeros at the end.
  np.testing.assert_array_equal(np.asarray(shift.depth_shift(jnp.asarray(x))).ravel(),
                                [2, 3, 4, 0, 0])


def _abstract_params(cfg):
  return nnx.state(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))), nnx.Param)


def test_parameter_counts_match_the_paper():
  counts = paper_parameter_counts()["e2enet"]
  # Paper (arXiv:2312.04727, Table 1 / Sec. 4): 23.90M dense, 9.44M at S=0.8, 11.25M at S=0.7.
  assert round(counts["dense"] / 1e6, 2) == 23.90
  assert abs(counts["sparsity_0.8"] - 9.44e6) <= 0.01e6
  assert round(counts["sparsity_0.7"] / 1e6, 2) == 11.25
  # Independent count: every fusion conv / ConvT keeps round(0.2 * in * out) kernels.
  params = _abstract_params(E2ENetConfig())
  masked = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if dsff_granularity(path, leaf):
      n_kernels = leaf.shape[-1] * leaf.shape[-2]
      masked += (n_kernels - round(0.2 * n_kernels)) * math.prod(leaf.shape[:-2])
  assert counts["sparsity_0.8"] == counts["dense"] - masked
  # ... which is what the random kernel masks of the DSFF optimizer hold (one fusion layer).
  node = params["nodes"][14]["blocks"][0]["conv"]
  mask = sparsity.init_masks(jax.random.key(0), node, 0.2, dsff_granularity_anywhere)["kernel"]
  assert mask.shape == (96, 48) and int(mask.sum()) == round(0.2 * 96 * 48)


def dsff_granularity_anywhere(path, leaf):
  return sparsity.KERNEL if "kernel" in sparsity.path_names(path) else None


def test_masks_cover_exactly_fusion_convs_and_transposed_convs():
  params = _abstract_params(E2ENetConfig(base_channels=4, max_channels=8, num_classes=3))
  masked = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    g = dsff_granularity(path, leaf)
    names = sparsity.path_names(path)
    if g is not None:
      assert names[0] == "nodes" and "kernel" in names and len(leaf.shape) == 5
      masked.append(names)
  n_nodes = len(fusion_nodes(5))
  assert n_nodes == 15
  # Per node one ConvT kernel and one conv kernel per block (two on the last diagonal: 5 nodes).
  assert len(masked) == n_nodes + n_nodes + 5


def test_fusion_graph_shapes_with_anisotropic_pools():
  pools = ((1, 2, 2), (2, 2, 2), (1, 2, 2))
  cfg = E2ENetConfig(in_channels=2, num_classes=3, pool_kernels=pools, base_channels=4,
                     max_channels=12, supervised_levels=3)
  assert cfg.channels == (4, 8, 12, 12) and cfg.divisor == (2, 8, 8)
  model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, 4, 16, 24, 2), jnp.float32)
  outs = jax.eval_shape(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
  assert [o.shape for o in outs] == [(1, 4, 16, 24, 3), (1, 4, 8, 12, 3), (1, 2, 4, 6, 3)]
  # Each node sees concat[x(i,j-1), ConvT(x(i+1,j-1)), MaxPool(x(i-1,j-1))] channels.
  for node in model.nodes:
    i = node.level
    expected = 2 * cfg.channels[i] + (cfg.channels[i - 1] if i else 0)
    assert node.blocks[0].conv.kernel.shape == (1, 3, 3, expected, cfg.channels[i])
    assert node.up.kernel.shape == pools[i] + (cfg.channels[i + 1], cfg.channels[i])
  with pytest.raises(ValueError, match="multiple"):
    jax.eval_shape(lambda p, x: nnx.merge(graphdef, p)(x), params,
                   jax.ShapeDtypeStruct((1, 4, 12, 24, 2), jnp.float32))


def test_baseline_and_ablations_parameter_counts():
  c = [48, 96, 192, 320, 320, 320]
  unet = param_counts(_abstract_params(unet_config()))["dense"]
  enc = sum(27 * (ci if d else 1) * c[d] + c[d] * 27 * c[d] + 6 * c[d]
            for d, ci in enumerate([1] + c[:-1]))
  dec = sum(8 * c[i + 1] * c[i] + 27 * 2 * c[i] * c[i] + 27 * c[i] * c[i] + 6 * c[i]
            for i in range(5))
  assert unet == enc + dec + 16 * sum(c[:4])
  noshift = param_counts(_abstract_params(config_for("e2enet-noshift")))["dense"]
  assert noshift == 23_899_088          # the shift has no parameters
  assert param_counts(_abstract_params(config_for("e2enet-333")))["dense"] > 3 * 13e6


def test_init_statistics_and_analytic_macs():
  cfg = E2ENetConfig(num_classes=2, pool_kernels=((2, 2, 2),), base_channels=4, max_channels=8,
                     supervised_levels=1)
  graphdef, params = init_params(cfg, seed=0)
  kernel = np.asarray(params["encoder"]["stages"][1][1]["conv"]["kernel"][...])
  assert kernel.shape == (1, 3, 3, 8, 8)
  assert abs(kernel.std() - math.sqrt(2 / 1.0001 / 72)) < 0.03
  x = jnp.zeros((1, 4, 8, 8, 1))
  apply = lambda p, x: nnx.merge(graphdef, p)(x)
  v0, v1 = 4 * 8 * 8, 2 * 4 * 4
  # Encoder: 1->4, 4->4 at level 0; 4->8 (strided), 8->8 at level 1.
  enc = 9 * (1 * 4 + 4 * 4) * v0 + 9 * (4 * 8 + 8 * 8) * v1
  # One node x(0,1) on the last diagonal: ConvT 8->4 (8 taps on v1 inputs), blocks 8->4, 4->4.
  fusion = 8 * 8 * 4 * v1 + 9 * (8 * 4 + 4 * 4) * v0
  head = 4 * 2 * v0
  assert analytic_macs(apply, params, x) == enc + fusion + head
  up_mask = jnp.zeros((8, 4), bool).at[:2].set(True)           # 8 of 32 kernels on
  masks = jax.tree_util.tree_map_with_path(
      lambda path, p: up_mask if "up" in sparsity.path_names(path) else jnp.ones((), bool),
      params)
  sparse_macs = analytic_macs(apply, params, x, masks)
  assert sparse_macs == enc + fusion - 8 * 8 * 4 * v1 * 0.75 + head


def test_upconv_is_a_stride_equals_kernel_transposed_conv():
  up = UpConv(3, 4, (1, 2, 2), rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(2, 3, 2, 3, 3)).astype(np.float32)
  w = np.asarray(up.kernel[...])
  expected = np.zeros((2, 3, 4, 6, 4), np.float32)   # PyTorch: out[s*d + a] = x[d] @ W[a]
  for d, h, ww, a, b in np.ndindex(3, 2, 3, 2, 2):
    expected[:, d, 2 * h + a, 2 * ww + b] = x[:, d, h, ww] @ w[0, a, b]
  np.testing.assert_allclose(np.asarray(up(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)
  # Flax's ConvTranspose (lax.conv_transpose) is the same map with a spatially flipped kernel.
  flax_up = nnx.ConvTranspose(3, 4, (1, 2, 2), strides=(1, 2, 2), padding="VALID",
                              use_bias=False, rngs=nnx.Rngs(0))
  flax_up.kernel[...] = jnp.asarray(w[::-1, ::-1, ::-1])
  np.testing.assert_allclose(np.asarray(flax_up(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)
