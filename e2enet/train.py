"""Training E2ENet (DSFF dynamic sparse training) and the nnU-Net baseline on patches.

nnU-Net v1's recipe: SGD with Nesterov momentum 0.99, weight decay 3e-5, poly learning-rate
decay ``lr (1 - t/T)^0.9``, gradient-norm clipping at 12, CE + Dice with deep supervision.
E2ENet adds :func:`jaxrepro.sparsity.dynamic_sparsity` over the fusion kernels: uniform random
masks at ``1 - sparsity``, every ``update_frequency`` steps the fraction ``p`` of active kernels
with the smallest L1 norm is dropped and as many are regrown at random, ``p`` cosine-decayed
from 0.5 (arXiv:2312.04727, Sec. 3.2). Checkpoints hold params, optimizer state (masks, RNG key,
moments) and the patch sampler's state, so a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from e2enet.data import Case, sample_batch
from e2enet.losses import deep_supervision_loss
from e2enet.model import E2ENetConfig, config_for, dsff_granularity, init_params
from jaxrepro import sparsity
from jaxrepro.checkpoint import Checkpointer
from jaxrepro.metrics import MetricsLogger
from jaxrepro.progress import progress

Triple = tuple[int, int, int]
OPTIMIZERS = ("sgd", "adam")


def plan_pools(patch: Sequence[int], max_pools: int = 5, min_size: int = 4
               ) -> tuple[Triple, ...]:
  """nnU-Net-like pooling plan: halve an axis while it stays >= ``min_size``; at most
  ``max_pools`` levels (anisotropic kernels such as (1, 2, 2) for thin volumes)."""
  size, pools = list(patch), []
  for _ in range(max_pools):
    kernel = tuple(2 if s // 2 >= min_size and s % 2 == 0 else 1 for s in size)
    if kernel == (1, 1, 1):
      break
    pools.append(kernel)
    size = [s // k for s, k in zip(size, kernel)]
  if not pools:
    raise ValueError(f"patch {tuple(patch)} is too small to pool (min feature size {min_size})")
  return tuple(pools)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model: str = "e2enet"              # e2enet | e2enet-noshift | e2enet-333 | unet
  sparsity: float = 0.8              # DSFF sparsity (e2enet variants only); 0 = dense
  steps: int = 250
  patch: Triple = (16, 64, 64)
  batch_size: int = 2
  num_classes: int = 16
  base_channels: int = 48
  max_channels: int = 320
  max_pools: int = 5
  optimizer: str = "sgd"             # sgd (nnU-Net: Nesterov 0.99) | adam (short budgets)
  learning_rate: float = 0.01
  momentum: float = 0.99
  weight_decay: float = 3e-5
  update_frequency: int = 1200       # official value; scale down for short runs
  initial_drop: float = 0.5
  seed: int = 0

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

  def model_config(self, in_channels: int = 1) -> E2ENetConfig:
    pools = plan_pools(self.patch, self.max_pools)
    return config_for(self.model, in_channels=in_channels, num_classes=self.num_classes,
                      pool_kernels=pools, base_channels=self.base_channels,
                      max_channels=self.max_channels,
                      supervised_levels=min(4, len(pools)))

  @property
  def sparse(self) -> bool:
    return self.model != "unet" and self.sparsity > 0


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  lr = optax.polynomial_schedule(cfg.learning_rate, 0.0, 0.9, max(cfg.steps, 1))
  # Adam (Kingma & Ba 2015) reaches a useful segmentation in a few hundred steps, where
  # SGD with momentum 0.99 (nnU-Net's, tuned for 250k iterations) still predicts background.
  base = (optax.sgd(lr, momentum=cfg.momentum, nesterov=True) if cfg.optimizer == "sgd"
          else optax.adam(lr))
  inner = optax.chain(optax.clip_by_global_norm(12.0),
                      optax.add_decayed_weights(cfg.weight_decay), base)
  if not cfg.sparse:
    return inner
  return sparsity.dynamic_sparsity(
      inner, density=1.0 - cfg.sparsity, granularity=dsff_granularity, seed=cfg.seed,
      update_frequency=cfg.update_frequency,
      drop_fraction=sparsity.cosine_drop_fraction(cfg.initial_drop, max(cfg.steps, 1)))


def make_apply(graphdef) -> Any:
  def apply(params, x):
    return nnx.merge(graphdef, params)(x)
  return apply


def compiled_train_step(graphdef, cfg: TrainConfig):
  """The jitted step for a model and training config (cached: resuming reuses the compile)."""
  # The seed enters only the optimizer's init (masks, RNG key), so all seeds share one compile.
  return _cached_train_step(graphdef, dataclasses.replace(cfg, seed=0))


@functools.lru_cache(maxsize=8)
def _cached_train_step(graphdef, cfg: TrainConfig):
  return make_train_step(graphdef, optimizer(cfg))


def make_train_step(graphdef, tx: optax.GradientTransformation):
  apply = make_apply(graphdef)

  @jax.jit
  def train_step(params, opt_state, images, labels):
    def loss_fn(p):
      return deep_supervision_loss(apply(p, images), labels)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return train_step


def masks_of(opt_state) -> Any | None:
  return opt_state.masks if isinstance(opt_state, sparsity.DynamicSparsityState) else None


@dataclasses.dataclass
class TrainResult:
  config: TrainConfig
  model_config: E2ENetConfig
  graphdef: Any
  params: Any
  opt_state: Any
  losses: list[float]
  seconds: float

  @property
  def masks(self):
    return masks_of(self.opt_state)


def train(cfg: TrainConfig, cases: Sequence[Case], *, ckpt_dir: str | Path | None = None,
          save_every: int = 50, log_path: str | Path | None = None, quiet: bool | None = None,
          extra: dict | None = None) -> TrainResult:
  """Trains ``cfg.steps`` steps on patches of ``cases``, resuming from ``ckpt_dir`` if present."""
  if not cases or any(c.label is None for c in cases):
    raise ValueError("training needs at least one case with a label map")
  in_channels = cases[0].image.shape[-1]
  model_cfg = cfg.model_config(in_channels)
  graphdef, params = init_params(model_cfg, cfg.seed)
  tx = optimizer(cfg)
  opt_state = jax.jit(tx.init)(params)
  rng = np.random.default_rng(cfg.seed)
  start = 0
  ckpt = None
  if ckpt_dir:
    ckpt = Checkpointer(ckpt_dir, save_every=save_every, keep=2)
    write_run_config(ckpt_dir, cfg, in_channels=in_channels, **(extra or {}))
  if ckpt is not None and ckpt.latest_step() is not None:
    (params, opt_state), saved = ckpt.restore(like=(params, opt_state))
    start = int(saved["step"])
    rng.bit_generator.state = saved["sampler"]
  step_fn = compiled_train_step(graphdef, cfg)
  logger = MetricsLogger(log_path) if log_path else None
  losses = []
  t0 = time.perf_counter()
  bar = progress(total=cfg.steps, initial=start, desc=f"train {cfg.model}", quiet=quiet)
  for step in range(start, cfg.steps):
    images, labels = sample_batch(rng, cases, cfg.patch, cfg.batch_size)
    params, opt_state, loss = step_fn(params, opt_state, jnp.asarray(images),
                                      jnp.asarray(labels))
    loss = float(loss)
    if not math.isfinite(loss):
      raise FloatingPointError(f"loss became {loss} at step {step + 1}")
    losses.append(loss)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}")
    if logger is not None:
      logger.log({"step": step + 1, "loss": loss})
    if ckpt is not None and (ckpt.should_save(step + 1) or step + 1 == cfg.steps):
      ckpt.save(step + 1, (params, opt_state), force=True,
                extra={"step": step + 1, "sampler": rng.bit_generator.state})
  bar.close()
  if ckpt is not None:
    ckpt.wait()
    ckpt.close()
  return TrainResult(cfg, model_cfg, graphdef, params, opt_state, losses,
                     time.perf_counter() - t0)


CONFIG_FILE = "e2enet_config.json"


def write_run_config(ckpt_dir: str | Path, cfg: TrainConfig, **extra) -> Path:
  """Saves what :func:`load_trained` needs to rebuild the model beside the checkpoints."""
  path = Path(ckpt_dir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"train_config": dataclasses.asdict(cfg), **extra}, indent=2))
  return path


def load_trained(ckpt_dir: str | Path) -> tuple[TrainResult, dict]:
  """Rebuilds the model of a checkpoint written by :func:`train` and restores its state;
  returns it with the run's saved settings (``label_values``, ``modality``, ...)."""
  ckpt_dir = Path(ckpt_dir)
  config_path = ckpt_dir / CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"{ckpt_dir} holds no {CONFIG_FILE}: not an e2enet training run")
  run = json.loads(config_path.read_text())
  cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in run["train_config"].items()})
  model_cfg = cfg.model_config(int(run.get("in_channels", 1)))
  graphdef, params = init_params(model_cfg, cfg.seed)
  opt_state = jax.jit(optimizer(cfg).init)(params)
  with Checkpointer(ckpt_dir) as ckpt:
    (params, opt_state), _ = ckpt.restore(like=(params, opt_state))
  return TrainResult(cfg, model_cfg, graphdef, params, opt_state, [], 0.0), run
