import dataclasses
import shutil

import numpy as np
import pytest

from e2enet.data import Case
from e2enet.train import TrainConfig, load_trained, plan_pools, train
from jaxrepro.checkpoint import tree_equal_bitwise


def test_plan_pools_is_anisotropic_for_thin_patches():
  assert plan_pools((16, 64, 64)) == ((2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
  assert plan_pools((128, 128, 128)) == ((2, 2, 2),) * 5
  with pytest.raises(ValueError, match="too small"):
    plan_pools((4, 6, 6))


def test_unknown_optimizer_is_rejected():
  with pytest.raises(ValueError, match="optimizer"):
    TrainConfig(optimizer="lamb")


def _phantom():
  """Two ellipsoid 'organs' (intensities 1 and -1) in noise of sd 0.5; class 2 is smaller."""
  rng = np.random.default_rng(1)
  z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (8, 32, 32)], indexing="ij")
  big = (z / 0.9) ** 2 + ((y + 0.2) / 0.5) ** 2 + (x / 0.6) ** 2 < 1
  small = (z / 0.8) ** 2 + ((y - 0.55) / 0.4) ** 2 + ((x - 0.45) / 0.4) ** 2 < 1
  label = np.where(small, 2, np.where(big, 1, 0)).astype(np.int32)
  image = np.where(label == 1, 1.0, np.where(label == 2, -1.0, 0.0)) + 0.5 * rng.normal(
      size=label.shape)
  return Case(image[..., None].astype(np.float32), label, (1.0, 1.0, 1.0), np.eye(4))


@pytest.mark.slow  # ~1-3 min on 2 shared cores
@pytest.mark.parametrize("model", ["e2enet", "unet"])
def test_short_adam_training_segments_a_phantom(model):
  from e2enet.cli import evaluate
  case = _phantom()
  cfg = TrainConfig(model=model, sparsity=0.8, steps=80, patch=(8, 16, 16), batch_size=2,
                    num_classes=3, base_channels=8, max_channels=16, update_frequency=16,
                    optimizer="adam", learning_rate=1e-2)
  scores = evaluate(train(cfg, [case], quiet=True), case, quiet=True)
  # Background-only output scores 0. In 80 steps the tiny sparse E2ENet learns the large
  # organ (measured Dice 0.82) but not yet the smaller one (0.0; the U-Net gets both > 0.6).
  assert scores["dice_per_class"][0] > 0.6, scores["dice_per_class"]


def _case():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(4, 16, 16, 1)).astype(np.float32)
  label = (image[..., 0] > 0.3).astype(np.int32) + (image[..., 0] > 1.2)
  return Case(image, label, (1.0, 1.0, 1.0), np.eye(4))


@pytest.mark.slow  # ~30-80 s on 2 shared cores (two 3D train-step compiles)
def test_training_resumes_bit_exactly_with_masks_and_sampler(tmp_path):
  cfg = TrainConfig(model="e2enet", sparsity=0.5, steps=4, patch=(4, 8, 8), batch_size=2,
                    num_classes=3, base_channels=4, max_channels=8, max_pools=1,
                    update_frequency=1, learning_rate=0.05)
  full = train(cfg, [_case()], ckpt_dir=tmp_path / "a", save_every=2, quiet=True)
  masks = full.masks
  dense = sum(int(np.size(m)) for m in jax_leaves(masks) if np.ndim(m))
  assert sum(int(np.sum(m)) for m in jax_leaves(masks) if np.ndim(m)) == dense // 2
  # Interrupted after step 2: drop the step-4 checkpoint and resume.
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "4")
  resumed = train(cfg, [_case()], ckpt_dir=tmp_path / "b", save_every=2, quiet=True)
  assert len(resumed.losses) == 2 and resumed.losses == full.losses[2:]
  assert tree_equal_bitwise((full.params, full.opt_state), (resumed.params, resumed.opt_state))
  loaded, run = load_trained(tmp_path / "b")
  assert tree_equal_bitwise(loaded.params, full.params) and run["in_channels"] == 1
  # Masks changed during training (update every step) and masked weights stay exactly zero.
  kernel = np.asarray(jax_leaves(full.params["nodes"][0]["blocks"][0]["conv"]["kernel"])[0])
  mask = np.asarray(jax_leaves(masks["nodes"][0]["blocks"][0]["conv"]["kernel"])[0])
  assert not kernel[..., ~mask].any() and kernel[..., mask].any()


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_seeds_share_one_compiled_step_that_equals_a_step_built_for_the_seed():
  """The cached step is keyed without the seed (it enters only the optimizer's init): training
  seed 1 through it must equal a loop over a step built from seed 1's own optimizer."""
  import jax.numpy as jnp
  from e2enet.data import sample_batch
  from e2enet.model import init_params
  from e2enet.train import compiled_train_step, make_train_step, optimizer
  base = TrainConfig(model="e2enet", sparsity=0.5, steps=3, patch=(4, 8, 8), batch_size=2,
                     num_classes=3, base_channels=4, max_channels=8, max_pools=1,
                     update_frequency=1, learning_rate=0.05)
  cfg = dataclasses.replace(base, seed=1)
  graphdef, params = init_params(cfg.model_config(), cfg.seed)
  assert compiled_train_step(graphdef, cfg) is compiled_train_step(graphdef, base)
  trained = train(cfg, [_case()], quiet=True)
  tx = optimizer(cfg)
  step, opt_state, rng = make_train_step(graphdef, tx), tx.init(params), np.random.default_rng(1)
  for _ in range(cfg.steps):
    images, labels = sample_batch(rng, [_case()], cfg.patch, cfg.batch_size)
    params, opt_state, _ = step(params, opt_state, jnp.asarray(images), jnp.asarray(labels))
  assert tree_equal_bitwise((trained.params, trained.opt_state), (params, opt_state))
  # ... and the seed does matter: other initial weights and masks.
  assert not tree_equal_bitwise(trained.masks, train(base, [_case()], quiet=True).masks)
