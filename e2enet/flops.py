"""FLOPs in two conventions.

- ``xla``: ``jit(f).lower(...).compile().cost_analysis()["flops"]`` (via
  :func:`jaxrepro.bench.compiled_flops`): everything XLA executes, dense weights, 2 FLOPs per
  multiply-add, elementwise ops included.
- ``analytic``: multiply-accumulates (MACs) of every convolution and transposed convolution over
  the *non-zero* weights, the paper's convention (E2ENet, arXiv:2312.04727, Table 1 counts MACs of
  the sparse model; norms and activations are not counted). Found by walking the jaxpr: each
  ``conv_general_dilated`` contributes ``outputs * in_features * kernel_volume / lhs_dilation``
  (an input-dilated conv's zero taps are not real work) and each ``dot_general`` (our
  transposed convs are einsums) ``outputs * contracted size``, scaled by the density of the
  weight leaf that feeds it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax.extend import core as jex_core
import numpy as np

_PASS_THROUGH = {"convert_element_type", "rev", "transpose", "reshape", "copy", "copy_p"}


def _walk(jaxpr, sources: dict, densities: list[float]) -> float:
  macs = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      lhs, rhs = eqn.invars[:2]
      dn = eqn.params["dimension_numbers"]
      kernel = rhs.aval.shape
      in_features = kernel[dn.rhs_spec[1]]
      volume = math.prod(kernel[i] for i in dn.rhs_spec[2:])
      dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
      dense = math.prod(eqn.outvars[0].aval.shape) * in_features * volume / dilation
      leaf = sources.get(rhs)
      macs += dense * (densities[leaf] if leaf is not None else 1.0)
    elif name == "dot_general":
      # Einsum-style layers (the transposed convs): outputs x contracted size.
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0]
      dense = math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.aval.shape[i] for i in contract)
      leaf = next((sources[v] for v in eqn.invars[:2]
                   if not isinstance(v, jex_core.Literal) and v in sources), None)
      macs += dense * (densities[leaf] if leaf is not None else 1.0)
    elif name in _PASS_THROUGH and eqn.invars and eqn.invars[0] in sources:
      sources[eqn.outvars[0]] = sources[eqn.invars[0]]
    else:
      for sub in _subjaxprs(eqn):
        inner = {v: sources[o] for v, o in zip(sub.invars, eqn.invars)
                 if not isinstance(o, jex_core.Literal) and o in sources}
        macs += _walk(sub, inner, densities)
  return macs


def _subjaxprs(eqn):
  for value in eqn.params.values():
    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
      yield value.jaxpr
    elif hasattr(value, "eqns"):
      yield value


def analytic_macs(apply_fn: Callable[[Any, jax.Array], Any], params: Any, x: jax.Array,
                  masks: Any | None = None) -> float:
  """Conv MACs of ``apply_fn(params, x)`` counting only weights switched on by ``masks``."""
  leaves = jax.tree.leaves(params)
  if masks is None:
    densities = [1.0] * len(leaves)
  else:
    mask_leaves = jax.tree.structure(params).flatten_up_to(masks)
    densities = [float(np.mean(np.broadcast_to(np.asarray(m), p.shape))) if np.ndim(m) else 1.0
                 for m, p in zip(mask_leaves, leaves)]
  closed = jax.make_jaxpr(apply_fn)(params, x)
  jaxpr = closed.jaxpr
  n = len(leaves)
  sources = {v: i for i, v in enumerate(jaxpr.invars[:n])}
  return _walk(jaxpr, sources, densities)
