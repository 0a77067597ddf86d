"""The sparse-training methods MSRS is compared with (arXiv:2406.17614, Sec. 4), as an
``(optimizer, reparam)`` pair for :func:`sparse_sr.train.train`:

- ``none``: the dense model;
- ``magnitude``: magnitude pruning at initialization, static mask;
- ``set`` / ``rigl``: dynamic sparse training (prune the smallest ``|w|``, regrow at random or
  by ``|grad|``, drop fraction cosine-decayed, regrown weights and their moments zeroed), all
  from :mod:`jaxrepro.sparsity`;
- ``msrs``: :class:`sparse_sr.msrs.MSRS` with the given switch.

Every method masks the same leaves (:func:`sparse_sr.msrs.weight_matrices`) at the same target
sparsity.
"""

from __future__ import annotations

import dataclasses

import optax

from jaxrepro import sparsity
from sparse_sr.msrs import MSRS, weight_matrices

METHODS = ("none", "magnitude", "set", "rigl", "msrs")


def element_granularity(path: tuple, leaf) -> str | None:
  """Element masks on the leaves MSRS masks, dense elsewhere."""
  return sparsity.ELEMENT if weight_matrices(path, leaf) else None


def sparse_training(method: str, inner: optax.GradientTransformation, *, steps: int,
                    target_sparsity: float = 0.5, switch: str = "sparse", seed: int = 0,
                    **msrs_overrides) -> tuple[optax.GradientTransformation, MSRS | None]:
  """``(optimizer, reparam)`` training with ``method`` for ``steps`` steps.

  SET/RigL explore every ``max(1, steps // 20)`` steps until 75% of training (RigL's
  ``end_step``) with a drop fraction cosine-decayed from 0.3 (RigL Eq. 1). MSRS learns its
  mask in the first 10% of training, at least 10 steps (the MSRS abstract: "at the very beginning
  of training"; the temperature anneals and the logits' step size decays over those steps;
  the paper applies the mask "after a few epochs" of a long run) and checks stability
  every ``steps // 100`` steps from 5% of training on; ``msrs_overrides`` replace any
  :class:`MSRS` field.
  """
  if method not in METHODS:
    raise ValueError(f"sparse method must be one of {METHODS}, got {method!r}")
  if method == "none":
    return inner, None
  density = 1.0 - target_sparsity
  if method == "magnitude":
    return sparsity.dynamic_sparsity(inner, density=density, granularity=element_granularity,
                                     seed=seed, update_frequency=0, init="magnitude"), None
  if method in ("set", "rigl"):
    end_step = max(1, int(0.75 * steps))
    return sparsity.dynamic_sparsity(
        inner, density=density, granularity=element_granularity, seed=seed,
        update_frequency=max(1, steps // 20),
        drop_fraction=sparsity.cosine_drop_fraction(0.3, end_step),
        regrow="random" if method == "set" else "gradient", end_step=end_step), None
  defaults = dict(target_sparsity=target_sparsity, switch=switch,
                  anneal_steps=max(10, steps // 10), check_every=max(1, steps // 100),
                  start_step=max(1, steps // 20))
  reparam = MSRS(**{**defaults, **msrs_overrides})
  return reparam.transform(inner), reparam


def describe(method: str, reparam: MSRS | None) -> dict:
  """The method's configuration, JSON-able, for reports."""
  if reparam is None:
    return {"method": method}
  config = dataclasses.asdict(reparam)
  config["masked"] = reparam.masked.__name__
  return {"method": method, **config}
