"""LoRA adapters for Flax NNX linears (the shared ``llm.model.Llama`` in particular), and QLoRA.

LoRA (Hu et al. 2021, arXiv:2106.09685, Sec. 4.1): a frozen weight W is adapted as
``W + (alpha / r) * A B`` with A (in, r) and B (r, out) in Flax's (in, out) kernel layout;
A starts like PEFT's ``kaiming_uniform(a=sqrt(5))`` (uniform in +-1/sqrt(in)) and B at zero,
so an adapted model computes exactly the base model until B moves. QLoRA (Dettmers et al. 2023,
arXiv:2305.14314) keeps the frozen W in 4-bit NormalFloat (:mod:`qgalore_jax.nf4`) and
dequantizes it on the fly in the forward pass.

The adapter factors are :class:`LoRAParam` variables (flax's ``nnx.LoRAParam``, a subclass of
``nnx.Param``); the base kernels stay ``nnx.Param`` at their original paths
(``...q_proj.kernel``), and NF4 bases are :class:`FrozenNF4` variables, which are not
``Param`` at all. So the trainable set is exactly ``nnx.state(model, LoRAParam)``:

>>> model = apply_lora(model, rank=8, alpha=16, rngs=nnx.Rngs(0))       # in place
>>> graphdef, lora, rest = nnx.split(model, LoRAParam, ...)
>>> def loss(lora): return loss_fn(nnx.merge(graphdef, lora, rest), batch)
>>> grads = jax.grad(loss)(lora)               # or nnx.grad(..., argnums=nnx.DiffState(0, LoRAParam))
>>> opt_state = optax.adamw(1e-4).init(lora)   # optimizer state for the adapters only

:func:`apply_lora` modifies the model in place (and returns it for chaining); :func:`merge`
folds the adapters into the base kernels and :func:`unmerge` takes them out again, both in
place. No dropout on the adapter input (PEFT's ``lora_dropout=0``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from qgalore_jax.nf4 import DEFAULT_BLOCK_SIZE, NF4Tensor, dequantize_nf4, quantize_nf4

LoRAParam = nnx.LoRAParam
# every linear of a LLaMA decoder block (QLoRA's recipe: all linear layers)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FrozenNF4(nnx.Variable):
  """A frozen NF4-quantized kernel (an :class:`NF4Tensor`): not a ``Param``, never trained."""


class LoRALinear(nnx.Module):
  """``y = x W + b + (alpha / r) (x A) B``; W is the wrapped linear's kernel (or its NF4 copy).

  The base kernel (and bias) keep the names ``kernel``/``bias`` so parameter paths of the base
  model do not change. ``merged`` is a static flag: when True the adapter product is already
  inside ``kernel`` and the forward pass skips it.
  """

  def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, rngs: nnx.Rngs,
               quantize_base: bool = False, block_size: int = DEFAULT_BLOCK_SIZE):
    if rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    kernel = base.kernel.get_value()
    fan_in, fan_out = kernel.shape
    param_dtype = kernel.dtype
    if quantize_base:
      self.kernel = FrozenNF4(quantize_nf4(kernel, block_size))
    else:
      self.kernel = base.kernel
    self.bias = base.bias
    bound = 1.0 / math.sqrt(fan_in)
    self.lora_a = LoRAParam(jax.random.uniform(rngs.params(), (fan_in, rank), param_dtype,
                                               -bound, bound))
    self.lora_b = LoRAParam(jnp.zeros((rank, fan_out), param_dtype))
    self.scaling = alpha / rank
    self.dtype = base.dtype
    self.merged = False

  @property
  def quantized(self) -> bool:
    return isinstance(self.kernel, FrozenNF4)

  def base_kernel(self, dtype: Any = None) -> jax.Array:
    """The frozen kernel as a dense array (dequantized when NF4)."""
    value = self.kernel.get_value()
    if isinstance(value, NF4Tensor):
      return dequantize_nf4(value, dtype or jnp.float32)
    return value if dtype is None else value.astype(dtype)

  def delta(self) -> jax.Array:
    """``(alpha / r) A B``, the adapter's change of the kernel."""
    return self.scaling * (self.lora_a.get_value() @ self.lora_b.get_value())

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    y = x @ self.base_kernel(dtype)
    if self.bias is not None:
      y = y + self.bias.get_value().astype(dtype)
    if not self.merged:
      a, b = self.lora_a.get_value().astype(dtype), self.lora_b.get_value().astype(dtype)
      y = y + self.scaling * ((x @ a) @ b)
    return y


def apply_lora(model: nnx.Module, *, rank: int, alpha: float, rngs: nnx.Rngs,
               targets: Iterable[str] = DEFAULT_TARGETS, quantize_base: bool = False,
               block_size: int = DEFAULT_BLOCK_SIZE) -> nnx.Module:
  """Replaces, in place, every ``nnx.Linear`` attribute named in ``targets`` by a
  :class:`LoRALinear` around it; returns ``model``.

  ``quantize_base=True`` stores those frozen kernels in NF4 (QLoRA). Raises ``ValueError`` when
  no target is found or the model already has adapters.
  """
  targets = tuple(targets)
  if rank < 1:
    raise ValueError(f"LoRA rank must be >= 1, got {rank}")
  if any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(model)):
    raise ValueError("the model already has LoRA adapters")
  sites = [(parent, name) for _, parent in nnx.iter_modules(model) for name in targets
           if isinstance(getattr(parent, name, None), nnx.Linear)]
  if not sites:
    raise ValueError(f"no nnx.Linear named any of {targets} in {type(model).__name__}")
  for parent, name in sites:
    setattr(parent, name, LoRALinear(getattr(parent, name), rank=rank, alpha=alpha, rngs=rngs,
                                     quantize_base=quantize_base, block_size=block_size))
  return model


def lora_layers(model: nnx.Module) -> list[LoRALinear]:
  """The :class:`LoRALinear` modules of ``model`` in graph order."""
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, LoRALinear)]


def _require_adapters(model: nnx.Module) -> list[LoRALinear]:
  layers = lora_layers(model)
  if not layers:
    raise ValueError(f"{type(model).__name__} has no LoRA adapters (call apply_lora first)")
  return layers


def merge(model: nnx.Module) -> nnx.Module:
  """Folds ``(alpha / r) A B`` into each adapted kernel, in place (no-op where merged).

  The adapters are kept, so :func:`unmerge` restores the base kernels (up to float rounding).
  An NF4 base cannot absorb the update exactly, so merging one raises ``ValueError``.
  """
  for layer in _require_adapters(model):
    if layer.merged:
      continue
    if layer.quantized:
      raise ValueError("cannot merge LoRA into an NF4-quantized base kernel")
    kernel = layer.kernel.get_value()
    layer.kernel.set_value((kernel + layer.delta()).astype(kernel.dtype))
    layer.merged = True
  return model


def unmerge(model: nnx.Module) -> nnx.Module:
  """Takes the adapters back out of merged kernels, in place (no-op where not merged)."""
  for layer in _require_adapters(model):
    if not layer.merged:
      continue
    kernel = layer.kernel.get_value()
    layer.kernel.set_value((kernel - layer.delta()).astype(kernel.dtype))
    layer.merged = False
  return model


def trainable_count(model: nnx.Module) -> int:
  """Number of adapter parameters (the trainable ones)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, LoRAParam)))
