"""The suite's one LLaMA-family decoder (Flax NNX).

LLaMA (Touvron et al. 2023, arXiv:2302.13971): pre-norm decoder blocks with RMSNorm, rotary
position embeddings (Su et al. 2021, arXiv:2104.09864) and a SwiGLU MLP (Shazeer 2020,
arXiv:2002.05202); grouped-query attention (Ainslie et al. 2023, arXiv:2305.13245) when
``num_kv_heads < num_heads``; tied or untied embeddings. Rotary embeddings use the
"rotate-half" layout of Hugging Face's ``LlamaForCausalLM`` (llama.cpp's interleaved Q/K rows are
permuted back on loading, see ``llm.gguf_loader``).

Linear kernels are ``(in, out)`` and every parameter path contains ``attn`` or ``mlp`` and the
projection's name (``q_proj`` ... ``down_proj``) with leaf ``kernel``, so optax label functions
(GaLore, LoRA, OwLore) can select the projected matrices by path.

A preallocated :class:`KVCache` makes decoding one token cost one token's compute. Prompts of a
batch are left-padded: ``KVCache.start`` is each row's first valid slot.

``Llama.forward`` also accepts an :class:`FFNGate` that decides per layer and token whether the
MLP runs (FFN-SkipLLM, ``llm.ffnskip``); when no row of the batch needs a layer's MLP it is
skipped with ``lax.cond``, so skipping saves real compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

_INIT_STD = 0.02  # LLaMA's initializer_range


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture and numerics of a LLaMA-family decoder."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int | None = None  # default hidden_size // num_heads
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = False
  max_seq_len: int = 2048
  dtype: Any = jnp.float32  # compute dtype
  param_dtype: Any = jnp.float32
  remat: bool = False  # jax.checkpoint each decoder block (training memory)

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                       f"({self.num_kv_heads})")
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError(f"hidden_size ({self.hidden_size}) is not divisible by num_heads "
                         f"({self.num_heads}); give head_dim")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")


def _llama_paper(hidden: int, intermediate: int, layers: int) -> LlamaConfig:
  # The GaLore/Q-GaLore pretraining family: LLaMA tokenizer (32000), MHA with 64-dim heads.
  return LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=intermediate,
                     num_layers=layers, num_heads=hidden // 64, num_kv_heads=hidden // 64,
                     rms_norm_eps=1e-6, max_seq_len=2048)


CONFIGS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, max_seq_len=128),
    "llama_60m": _llama_paper(512, 1376, 8),
    "llama_130m": _llama_paper(768, 2048, 12),
    "llama_350m": _llama_paper(1024, 2736, 24),
    "llama_1b": _llama_paper(2048, 5461, 24),
    "llama_7b": _llama_paper(4096, 11008, 32),
    # HuggingFaceTB/SmolLM2-135M(-Instruct), config.json of the release.
    "smollm2_135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                num_layers=30, num_heads=9, num_kv_heads=3, rope_theta=100000.0,
                                rms_norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192),
}


class KVCache(NamedTuple):
  """Preallocated keys/values of every layer, shared write slot, per-row left padding.

  ``keys[l]``/``values[l]``: ``(batch, max_len, num_kv_heads, head_dim)``; ``start``: ``(batch,)``
  first valid slot of each row (left padding before it); ``index``: scalar next write slot.
  """
  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  start: jax.Array
  index: jax.Array

  @classmethod
  def init(cls, config: LlamaConfig, batch: int, max_len: int,
           start: jax.Array | None = None, dtype: Any = None) -> "KVCache":
    shape = (batch, max_len, config.num_kv_heads, config.head_dim)
    dtype = dtype or config.dtype
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
    return cls(zeros, zeros, start, jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.keys[0].shape[1]


class FFNGate(Protocol):
  """Decides per layer whether each token's MLP runs (see ``llm.ffnskip``).

  ``layer`` is a Python int (the decoder is unrolled), ``state`` any pytree of arrays.
  """

  def init(self, batch_shape: tuple[int, ...]) -> Any:
    """Initial state for tokens of shape ``batch_shape`` = ``(batch, seq)``."""

  def decide(self, layer: int, state: Any) -> jax.Array:
    """``(batch, seq)`` bool: which tokens run this layer's MLP."""

  def update(self, layer: int, state: Any, ran: jax.Array, cosine: jax.Array) -> Any:
    """New state after the layer; ``cosine`` is cos(h, h + MLP(norm(h))) where ``ran``."""


class ForwardOutput(NamedTuple):
  logits: jax.Array  # (batch, seq, vocab) float32
  cache: KVCache | None
  ffn_ran: jax.Array | None  # (batch, seq, num_layers) bool, with an FFNGate
  ffn_cosine: jax.Array | None  # (batch, seq, num_layers) float32 (1 where skipped)


def rotary_angles(positions: jax.Array, head_dim: int, theta: float
                  ) -> tuple[jax.Array, jax.Array]:
  """cos and sin of the rotary angles, ``(..., head_dim)`` in rotate-half layout."""
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x`` ``(batch, seq, heads, head_dim)`` by angles ``(batch, seq, head_dim)``."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def _linear(din: int, dout: int, config: LlamaConfig, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=False, dtype=config.dtype,
                    param_dtype=config.param_dtype,
                    kernel_init=nnx.initializers.normal(_INIT_STD), rngs=rngs)


def _rms_norm(config: LlamaConfig, rngs: nnx.Rngs) -> nnx.RMSNorm:
  return nnx.RMSNorm(config.hidden_size, epsilon=config.rms_norm_eps, dtype=config.dtype,
                     param_dtype=config.param_dtype, rngs=rngs)


class Attention(nnx.Module):
  """Grouped-query self-attention with rotary embeddings and an optional KV cache."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    d, hd = config.hidden_size, config.head_dim
    self.q_proj = _linear(d, config.num_heads * hd, config, rngs)
    self.k_proj = _linear(d, config.num_kv_heads * hd, config, rngs)
    self.v_proj = _linear(d, config.num_kv_heads * hd, config, rngs)
    self.o_proj = _linear(config.num_heads * hd, d, config, rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
               kv: tuple[jax.Array, jax.Array] | None, index: jax.Array | None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """``mask``: ``(batch, seq, keys)`` bool. With ``kv`` (the layer's cache), writes this
    step's keys/values at slot ``index`` and attends over the whole cache."""
    c = self.config
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim)
    k = self.k_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = self.v_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if kv is not None:
      cache_k, cache_v = kv
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, index, 0, 0))
      kv = (k, v)
    groups = c.num_heads // c.num_kv_heads
    q = q.reshape(b, t, c.num_kv_heads, groups, c.head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype),
                        preferred_element_type=jnp.float32) / jnp.sqrt(c.head_dim)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(c.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(c.dtype))
    return self.o_proj(out.reshape(b, t, c.num_heads * c.head_dim)), kv


class MLP(nnx.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.gate_proj = _linear(config.hidden_size, config.intermediate_size, config, rngs)
    self.up_proj = _linear(config.hidden_size, config.intermediate_size, config, rngs)
    self.down_proj = _linear(config.intermediate_size, config.hidden_size, config, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  num = jnp.sum(a * b, axis=-1)
  return num / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-12)


class DecoderBlock(nnx.Module):
  """Pre-norm block: ``h = x + attn(norm(x))``, ``out = h + mlp(norm(h))``."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.attn_norm = _rms_norm(config, rngs)
    self.attn = Attention(config, rngs=rngs)
    self.mlp_norm = _rms_norm(config, rngs)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
               kv: tuple[jax.Array, jax.Array] | None = None, index: jax.Array | None = None,
               run_ffn: jax.Array | None = None):
    """Returns ``(out, kv, cosine)``. ``run_ffn`` ``(batch, seq)`` bool gates the MLP per token
    (``cosine`` = cos(h, out) is then returned, 1 where skipped); the MLP is computed only
    when some token needs it."""
    attn_out, kv = self.attn(self.attn_norm(x), cos, sin, mask, kv, index)
    h = x + attn_out
    if run_ffn is None:
      return h + self.mlp(self.mlp_norm(h)), kv, None
    delta = jax.lax.cond(jnp.any(run_ffn), lambda h: self.mlp(self.mlp_norm(h)),
                         jnp.zeros_like, h)
    out = jnp.where(run_ffn[..., None], h + delta, h)
    return out, kv, jnp.where(run_ffn, _cosine(h, out), 1.0)


class Llama(nnx.Module):
  """LLaMA-family causal decoder; see the module docstring."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = nnx.Embed(config.vocab_size, config.hidden_size, dtype=config.dtype,
                           param_dtype=config.param_dtype,
                           embedding_init=nnx.initializers.normal(_INIT_STD), rngs=rngs)
    self.layers = nnx.List([DecoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])
    self.norm = _rms_norm(config, rngs)
    if not config.tie_embeddings:
      self.lm_head = _linear(config.hidden_size, config.vocab_size, config, rngs)

  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    """``tokens`` ``(batch, seq)`` int -> ``(logits (batch, seq, vocab) float32, new_cache)``.

    Without a cache: causal attention over ``tokens`` (positions default to ``0..seq-1``).
    With a cache: the tokens occupy slots ``cache.index ...`` and attend to every valid earlier
    slot; positions default to slot minus the row's left padding ``cache.start``.
    """
    out = self.forward(tokens, positions=positions, cache=cache)
    return out.logits, out.cache

  def forward(self, tokens: jax.Array, *, positions: jax.Array | None = None,
              cache: KVCache | None = None, ffn_gate: FFNGate | None = None,
              last_logits_only: bool = False) -> ForwardOutput:
    """:meth:`__call__` with an optional per-layer MLP gate (FFN-SkipLLM).

    ``last_logits_only``: logits of the last position only, ``(batch, 1, vocab)`` (prefill
    needs no others, and the output projection is the largest matrix of a small model)."""
    c = self.config
    b, t = tokens.shape
    if cache is None:
      slots = jnp.arange(t)
      mask = jnp.broadcast_to(slots[None, :, None] >= slots[None, None, :], (b, t, t))
      if positions is None:
        positions = jnp.broadcast_to(slots, (b, t))
    else:
      slots = cache.index + jnp.arange(t)  # (t,)
      keys = jnp.arange(cache.max_len)
      mask = ((keys[None, None, :] <= slots[None, :, None])
              & (keys[None, None, :] >= cache.start[:, None, None]))
      if positions is None:
        positions = jnp.maximum(slots[None, :] - cache.start[:, None], 0)
    cos, sin = rotary_angles(positions, c.head_dim, c.rope_theta)
    x = self.embed(tokens)

    gate_state = ffn_gate.init((b, t)) if ffn_gate is not None else None
    new_keys, new_values, ran, cosines = [], [], [], []
    for i, layer in enumerate(self.layers):
      kv = (cache.keys[i], cache.values[i]) if cache is not None else None
      index = cache.index if cache is not None else None
      run_ffn = ffn_gate.decide(i, gate_state) if ffn_gate is not None else None
      if c.remat and cache is None and run_ffn is None:
        x = _remat_block(layer, x, cos, sin, mask)
      else:
        x, kv, cosine = layer(x, cos, sin, mask, kv, index, run_ffn)
        if ffn_gate is not None:
          gate_state = ffn_gate.update(i, gate_state, run_ffn, cosine)
          ran.append(run_ffn)
          cosines.append(cosine)
      if kv is not None:
        new_keys.append(kv[0])
        new_values.append(kv[1])

    if last_logits_only:
      x = x[:, -1:]
    x = self.norm(x)
    logits = self._tied_logits(x) if c.tie_embeddings else self.lm_head(x)
    new_cache = None
    if cache is not None:
      new_cache = KVCache(tuple(new_keys), tuple(new_values), cache.start, cache.index + t)
    if ffn_gate is None:
      return ForwardOutput(logits.astype(jnp.float32), new_cache, None, None)
    return ForwardOutput(logits.astype(jnp.float32), new_cache, jnp.stack(ran, -1),
                         jnp.stack(cosines, -1))

  def _tied_logits(self, x: jax.Array) -> jax.Array:
    # Contracts against the (vocab, hidden) table as stored: nnx.Embed.attend's ``x @ E.T``
    # compiles on CPU to a loop fusion that transposes the table on the fly, ~12% slower than
    # this matrix-vector product at decode time (SmolLM2's 49152 x 576 table).
    table = self.embed.embedding[...].astype(self.config.dtype)
    return jnp.einsum("btd,vd->btv", x.astype(self.config.dtype), table)


@nnx.remat
def _remat_block(layer: DecoderBlock, x, cos, sin, mask):
  return layer(x, cos, sin, mask)[0]


def count_params(model: nnx.Module) -> int:
  """Number of parameters of ``model``."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
