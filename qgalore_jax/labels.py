"""Which leaves of a Flax LLaMA GaLore projects: the attention and MLP kernels.

GaLore (arXiv:2403.03507, Sec. 5.1) and Q-GaLore (arXiv:2407.08296, Sec. 4.1) project the
weights of the attention and MLP linears; embeddings, the LM head, norms and biases take plain
AdamW. With the shared ``llm.model.Llama`` those are the ``kernel`` leaves under
``layers[i].attn.{q,k,v,o}_proj`` and ``layers[i].mlp.{gate,up,down}_proj``. Use
:func:`projected_labels` with ``optax.partition`` and :func:`projected_mask` with
:func:`qgalore_jax.quantize_params`.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax

from jaxrepro.sparsity import path_names

PROJECTED = "galore"
DENSE = "adamw"
DEFAULT_BLOCKS = ("attn", "mlp")


def is_projected(path, leaf, blocks: Iterable[str] = DEFAULT_BLOCKS) -> bool:
  """True for a 2-D ``kernel`` leaf inside one of ``blocks`` (attention, MLP)."""
  names = path_names(path)
  return (getattr(leaf, "ndim", 0) == 2 and bool(names) and names[-1] in ("kernel", "value")
          and "kernel" in names and any(b in names for b in blocks))


def projected_mask(params: Any, blocks: Iterable[str] = DEFAULT_BLOCKS) -> Any:
  """A pytree of booleans: True where GaLore projects the leaf."""
  blocks = tuple(blocks)
  return jax.tree_util.tree_map_with_path(lambda p, x: is_projected(p, x, blocks), params)


def projected_labels(params: Any, blocks: Iterable[str] = DEFAULT_BLOCKS) -> Any:
  """``"galore"`` for projected leaves, ``"adamw"`` for the rest: an ``optax.partition`` label_fn."""
  blocks = tuple(blocks)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: PROJECTED if is_projected(p, x, blocks) else DENSE, params)
