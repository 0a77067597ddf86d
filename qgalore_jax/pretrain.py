"""LLaMA pretraining with AdamW, GaLore, Q-GaLore or 8-bit Adam (GaLore arXiv:2403.03507
Sec. 5.1, Q-GaLore arXiv:2407.08296 Sec. 4.1), on the shared ``llm.model.Llama``.

For Q-GaLore the attention and MLP kernels are held as INT8 :class:`QTensor` (no float master
copy): each step dequantizes them for the forward/backward pass, and
:func:`qgalore_jax.apply_updates_sr` writes the update back with stochastic rounding. The
training state (params, optimizer state, SR key, step) is checkpointed with
``jaxrepro.checkpoint``; batches depend only on ``(seed, step)``, so a resumed run reproduces
the uninterrupted loss curve bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llm.model import CONFIGS, Llama, LlamaConfig
from qgalore_jax.adam8bit import adam_8bit
from qgalore_jax.galore import galore, qgalore
from qgalore_jax.labels import projected_labels, projected_mask
from qgalore_jax.quantization import apply_updates_sr, dequantize_params, quantize_params

OPTIMIZERS = ("adamw", "galore", "qgalore", "adam8bit")

# Official C4 scripts (GaLore and Q-GaLore repositories): rank per model size.
PAPER_RANKS = {"llama_60m": 128, "llama_130m": 256, "llama_350m": 256, "llama_1b": 1024,
               "llama_7b": 1024}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Hyperparameters of the official pretraining scripts (defaults: LLaMA-60M)."""
  name: str = "galore"
  learning_rate: float = 0.01
  rank: int = 128
  update_proj_gap: int = 200
  scale: float = 0.25
  b1: float = 0.9
  b2: float | None = None  # None: the official scripts' 0.999 (0.95 for Q-GaLore)
  weight_decay: float = 0.0
  warmup_steps: int = 0
  total_steps: int = 0  # > 0: cosine decay to 10% (the scripts' schedule)
  cos_threshold: float = 0.4
  gamma_proj: float = 2.0
  queue_size: int = 5

  @property
  def resolved_b2(self) -> float:
    if self.b2 is not None:
      return self.b2
    return 0.95 if self.name == "qgalore" else 0.999


def schedule(cfg: OptimizerConfig) -> optax.Schedule:
  if cfg.total_steps <= 0:
    return optax.constant_schedule(cfg.learning_rate)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1),
                                            max(cfg.total_steps, cfg.warmup_steps + 1),
                                            end_value=0.1 * cfg.learning_rate)


def make_optimizer(cfg: OptimizerConfig, params: Any) -> optax.GradientTransformation:
  """The full optimizer; projected leaves (attention/MLP kernels) by label, rest AdamW."""
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.name!r}")
  lr = schedule(cfg)
  adamw = optax.adamw(lr, cfg.b1, cfg.resolved_b2, weight_decay=cfg.weight_decay)
  if cfg.name == "adamw":
    return adamw
  if cfg.name == "adam8bit":
    return adam_8bit(lr, cfg.b1, cfg.resolved_b2, weight_decay=cfg.weight_decay)
  if cfg.name == "galore":
    low_rank = galore(lr, cfg.rank, cfg.update_proj_gap, cfg.scale, cfg.weight_decay,
                      b1=cfg.b1, b2=cfg.resolved_b2)
  else:
    low_rank = qgalore(lr, cfg.rank, cfg.update_proj_gap, cfg.scale, cfg.weight_decay,
                       b1=cfg.b1, b2=cfg.resolved_b2, cos_threshold=cfg.cos_threshold,
                       gamma_proj=cfg.gamma_proj, queue_size=cfg.queue_size)
    # the official Q-GaLore uses 8-bit Adam for the non-projected leaves too
    adamw = adam_8bit(lr, cfg.b1, cfg.resolved_b2, weight_decay=cfg.weight_decay)
  return optax.partition({"galore": low_rank, "adamw": adamw}, projected_labels(params))


class TrainState(NamedTuple):
  params: Any       # nnx state of the model; INT8 QTensor kernels for Q-GaLore
  opt_state: Any
  key: jax.Array    # stochastic-rounding stream
  step: jax.Array   # int32


class Trainer(NamedTuple):
  graphdef: Any
  optimizer: optax.GradientTransformation
  init: Callable[[jax.Array], TrainState]  # jitted: the model's parameters from a key
  step: Callable[[TrainState, jax.Array], tuple[TrainState, jax.Array]]  # jitted, donates
  step_fn: Callable[[TrainState, jax.Array], tuple[TrainState, jax.Array]]  # not jitted


def loss_fn(graphdef, params, tokens: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy of ``tokens`` (batch, seq + 1)."""
  model = nnx.merge(graphdef, params)
  logits, _ = model(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@functools.lru_cache(maxsize=8)
def build(model_config: LlamaConfig, opt_config: OptimizerConfig, seed: int = 0) -> Trainer:
  """Initializer and jitted train step for one model and optimizer (cached, so repeated runs
  in one process reuse the compiled step). ``init(key)`` draws the parameters from ``key``;
  ``seed`` sets the training key the state starts with (``key(seed + 1)``, which drives
  stochastic rounding), so the CLI passes the same seed to both."""
  abstract = nnx.eval_shape(lambda: Llama(model_config, rngs=nnx.Rngs(seed)))
  graphdef, abstract_params = nnx.split(abstract)
  optimizer = make_optimizer(opt_config, abstract_params)
  quantized = opt_config.name == "qgalore"

  def init(key: jax.Array) -> TrainState:
    _, params = nnx.split(Llama(model_config, rngs=nnx.Rngs(key)))
    opt_state = optimizer.init(params)
    if quantized:
      params = quantize_params(params, projected_mask(params), bits=8)
    return TrainState(params, opt_state, jax.random.key(seed + 1), jnp.zeros([], jnp.int32))

  def train_step(state: TrainState, tokens: jax.Array) -> tuple[TrainState, jax.Array]:
    dense = dequantize_params(state.params, model_config.param_dtype)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(graphdef, p, tokens))(dense)
    updates, opt_state = optimizer.update(grads, state.opt_state, dense)
    key, sr_key = jax.random.split(state.key)
    if quantized:
      params = apply_updates_sr(state.params, updates, sr_key)
    else:
      params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, key, state.step + 1), loss

  # a jitted init returns distinct buffers, which the donating step requires; the key is an
  # argument so one compilation serves every key and XLA has no constant key to fold parts of
  # the random initialization from (13 s of llama_60m's Q-GaLore init compile on CPU)
  return Trainer(graphdef, optimizer, jax.jit(init), jax.jit(train_step, donate_argnums=0),
                 train_step)


def model_config(name: str, *, vocab_size: int | None = None, max_seq_len: int | None = None,
                 remat: bool = False, dtype: Any = jnp.float32) -> LlamaConfig:
  if name not in CONFIGS:
    raise ValueError(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
  changes: dict[str, Any] = {"remat": remat, "dtype": dtype}
  if vocab_size is not None:
    changes["vocab_size"] = vocab_size
  if max_seq_len is not None:
    changes["max_seq_len"] = max(max_seq_len, CONFIGS[name].max_seq_len)
  return dataclasses.replace(CONFIGS[name], **changes)
