"""MSRS: sparse mask regularization for training speech recognizers from scratch.

MSRS (Fernandez-Lopez et al. 2024, arXiv:2406.17614, Sec. 3) learns a sparse structure inside
the dense model at the start of training; once that mask is stable, training either switches
back to the dense model or keeps the sparse one and updates only its non-zero weights. The
paper gives no code; its description matches continuous sparsification (Savarese et al. 2020,
arXiv:1912.04427, Sec. 3, Eq. 6-8), implemented here:

- every masked weight ``w`` has a mask logit ``s``; the model uses ``w * sigmoid(beta * s)``
  (the soft mask, :func:`soft_mask`), which tends to the hard mask ``[s > 0]`` as the
  temperature ``beta`` is annealed upward (:func:`beta_schedule`, exponential as in Sec. 3);
- ``lambda * mean(sigmoid(beta * s))`` (an L1 penalty on the soft mask, normalized by the
  number ``N`` of masked weights) is added to the loss while the mask is learned. A logit is
  pushed down when ``lambda / N`` exceeds its weight's first-order importance ``|w dL/dw|``,
  whose scale depends on the model and the loss. By default ``lambda`` is set at the first
  step from the model itself (:meth:`MSRS.calibrated_penalty_weight`, no labels beyond the
  training batch's loss): ``lambda / N`` = the ``target_sparsity`` quantile of ``|w dL/dw|``,
  so the penalty outweighs the task gradient on that fraction of the logits. From there
  ``lambda`` is controlled in log space: every step it is multiplied by ``penalty_growth``
  while the hard mask is less sparse than a reference that ramps up to ``target_sparsity``
  (:meth:`MSRS.sparsity_reference`), and divided by it otherwise. Logits start proportional
  to their weights' magnitudes (``logit_init`` at the leaf's RMS): equal logits move in
  lockstep under Adam and cross 0 together. (Measured on the benchmark's VSR model: equal
  initial logits and a lambda that grew from 1 while the mask was below the target wound
  lambda up to 1e12 while the logits travelled to 0, and pruned 46% at once; magnitude-ordered
  logits with lambda grown from 1 reached only 0.32 of a 0.5 target before the logits froze);
- the mask is learned in a short phase at the start (the MSRS abstract: the sparse structure is
  learned "at the very beginning of training", after a few epochs the mask is applied): the
  temperature anneals over ``anneal_steps`` and the logits have an Adam optimizer of their own
  whose step size decays to zero over the same steps (cosine). With SGD, as in Savarese et al.,
  the annealing itself freezes the mask (the logits' gradient carries ``beta * sigmoid'``,
  which vanishes away from 0); Adam normalizes that factor away, so the decaying step size
  does the freezing;
- :class:`MaskStability` compares the hard masks of consecutive checks (normalized Hamming
  distance); ``patience`` checks in a row below ``tolerance`` mean the mask is stable;
- then ``switch="dense"`` folds the soft mask into the weights and trains every weight (the
  function is unchanged at the switch, pruned weights restart from ~0), and ``switch="sparse"``
  folds the hard mask in and keeps the pruned weights at exactly zero from then on.

The pieces compose with any model of the suite: :class:`MSRS` is a parameter transform over
any parameter pytree (``init`` adds the logits, ``weights`` gives the model's weights,
``penalty`` the regularizer) and :meth:`MSRS.transform` wraps an optax optimizer with the
mask-phase bookkeeping (temperature, stability checks, the switch), its state arrays only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrepro.sparsity import apply_masks, path_names

SWITCHES = ("dense", "sparse")
MASK_LEARNING, SWITCHED = 0, 1


def weight_matrices(path: tuple, leaf: jax.Array) -> bool:
  """The default masked layers: every linear or convolution kernel (not biases, norms or
  embeddings), the weights that carry the computation as in MSRS Sec. 3."""
  return leaf.ndim >= 2 and "kernel" in path_names(path)


def soft_mask(logits: jax.Array, beta: jax.Array | float) -> jax.Array:
  """``sigmoid(beta * s)`` (Savarese et al. Eq. 6)."""
  return jax.nn.sigmoid(beta * logits)


def hard_mask(logits: jax.Array) -> jax.Array:
  """``[s > 0]``, the limit of :func:`soft_mask` as ``beta`` grows."""
  return logits > 0


def hard_masks(logits: Any) -> Any:
  """:func:`hard_mask` of every masked leaf; ``True`` (keep everything) for the shape-``()``
  placeholders of unmasked leaves (biases, norms, embeddings), which a sparse switch must
  leave trainable."""
  return jax.tree.map(lambda s: hard_mask(s) if s.ndim else jnp.ones((), bool), logits)


def beta_schedule(initial: float = 1.0, final: float = 100.0, anneal_steps: int = 1000
                  ) -> optax.Schedule:
  """``beta_t = initial * (final / initial) ** min(t / T, 1)``: the per-epoch multiplicative
  temperature increase of Savarese et al. (Sec. 3) made per step."""
  if not 0 < initial <= final:
    raise ValueError(f"need 0 < initial <= final, got {initial}, {final}")
  if anneal_steps < 1:
    raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")

  def schedule(step):
    t = jnp.minimum(jnp.asarray(step, jnp.float32) / anneal_steps, 1.0)
    return initial * (final / initial) ** t
  return schedule


def _masked(tree: Any) -> list[jax.Array]:
  return [x for x in jax.tree.leaves(tree) if x.ndim]


def mask_sparsity(masks: Any) -> jax.Array:
  """Fraction of zeros over the masks' entries (leaves of shape ``()`` are dense)."""
  leaves = _masked(masks)
  zeros = sum(jnp.sum(~m) for m in leaves)
  return jnp.asarray(zeros, jnp.float32) / max(sum(m.size for m in leaves), 1)


def hamming_distance(a: Any, b: Any) -> jax.Array:
  """Normalized Hamming distance between two mask trees: the fraction of entries that differ."""
  pairs = [(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if x.ndim]
  differ = sum(jnp.sum(x != y) for x, y in pairs)
  return jnp.asarray(differ, jnp.float32) / max(sum(x.size for x, _ in pairs), 1)


class MaskStabilityState(NamedTuple):
  previous: Any             # hard masks at the last check
  checks: jax.Array         # int32, checks done
  stable_checks: jax.Array  # int32, consecutive checks below tolerance
  distance: jax.Array       # float32, distance at the last check
  stable_step: jax.Array    # int32, step at which the mask became stable (-1: not yet)


@dataclasses.dataclass(frozen=True)
class MaskStability:
  """Mask stability (MSRS Sec. 3): the normalized Hamming distance between the hard masks of
  consecutive checks stays below ``tolerance`` for ``patience`` checks in a row. Pure
  functions of array state, usable inside ``jit`` and saved with the optimizer."""
  tolerance: float = 0.01
  patience: int = 3

  def init(self, masks: Any) -> MaskStabilityState:
    return MaskStabilityState(masks, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                              jnp.ones((), jnp.float32), jnp.full((), -1, jnp.int32))

  def update(self, state: MaskStabilityState, masks: Any, step: jax.Array
             ) -> MaskStabilityState:
    """One check at ``step``. The first check has nothing to compare with (distance 1)."""
    distance = jnp.where(state.checks > 0, hamming_distance(state.previous, masks), 1.0)
    stable_checks = jnp.where(distance < self.tolerance, state.stable_checks + 1, 0)
    became_stable = (stable_checks >= self.patience) & (state.stable_step < 0)
    stable_step = jnp.where(became_stable, jnp.asarray(step, jnp.int32), state.stable_step)
    return MaskStabilityState(masks, state.checks + 1, stable_checks.astype(jnp.int32),
                              distance, stable_step)

  @staticmethod
  def is_stable(state: MaskStabilityState) -> jax.Array:
    return state.stable_step >= 0


class MSRSState(NamedTuple):
  count: jax.Array              # int32, optimizer steps taken
  phase: jax.Array              # int32, MASK_LEARNING or SWITCHED
  mask: Any                     # bool tree: the hard mask frozen at the switch (() for dense)
  stability: MaskStabilityState
  penalty_weight: jax.Array     # float32, the current lambda
  inner_state: optax.OptState   # the weights' optimizer
  logit_state: optax.OptState   # the mask logits' optimizer


@dataclasses.dataclass(frozen=True)
class MSRS:
  """Continuous-sparsification MSRS over a parameter pytree.

  ``target_sparsity``: fraction of masked weights the penalty drives to zero;
  ``penalty_weight``: initial lambda, ``None`` (default) to calibrate it at the first step
  (:meth:`calibrated_penalty_weight`); multiplied by ``penalty_growth`` (:attr:`growth`) while
  the hard mask is below :meth:`sparsity_reference`, divided otherwise;
  ``beta_*``/``anneal_steps``: temperature schedule, also the length of the mask phase;
  ``logit_init``: initial ``s`` of a weight of the leaf's
  RMS magnitude, ``s`` proportional to ``|w|`` (soft mask ``sigmoid(beta_initial *
  logit_init)`` = 0.88 there by default: training starts close to the dense model);
  ``logit_learning_rate`` (:attr:`logit_step`): peak Adam step size of the logits,
  cosine-decayed to 0 at ``anneal_steps`` (a consistently pushed logit travels about
  ``anneal_steps * logit_learning_rate / 2``); ``check_every``/``start_step``: stability checks
  every that many steps from that step on, once the hard mask is at least
  ``ready_fraction * target_sparsity`` sparse (before pruning starts every mask looks stable);
  ``tolerance``/``patience``: :class:`MaskStability`; ``switch``: ``"dense"`` or ``"sparse"``;
  ``masked(path, leaf)``: which leaves get a mask (default :func:`weight_matrices`).
  """
  target_sparsity: float = 0.5
  penalty_weight: float | None = None
  penalty_growth: float | None = None
  beta_initial: float = 1.0
  beta_final: float = 100.0
  anneal_steps: int = 1000
  logit_init: float = 2.0
  logit_learning_rate: float | None = None
  check_every: int = 20
  start_step: int = 100
  ready_fraction: float = 0.9
  tolerance: float = 0.01
  patience: int = 3
  switch: str = "sparse"
  masked: Callable[[tuple, jax.Array], bool] = weight_matrices

  def __post_init__(self):
    if self.switch not in SWITCHES:
      raise ValueError(f"switch must be one of {SWITCHES}, got {self.switch!r}")
    if not 0.0 <= self.target_sparsity < 1.0:
      raise ValueError(f"target_sparsity must be in [0, 1), got {self.target_sparsity}")
    if self.check_every < 1:
      raise ValueError(f"check_every must be >= 1, got {self.check_every}")
    if self.penalty_growth is not None and self.penalty_growth < 1.0:
      raise ValueError(f"penalty_growth must be >= 1, got {self.penalty_growth}")

  @property
  def growth(self) -> float:
    """``penalty_growth``, by default ``10 ** (2 / anneal_steps)`` when lambda is calibrated
    (it starts at the right scale and corrects within two orders of magnitude over the mask
    phase) and ``10 ** (8 / anneal_steps)`` from a given ``penalty_weight`` (the scale of
    ``w dL/dw`` is not known in advance)."""
    if self.penalty_growth is not None:
      return self.penalty_growth
    decades = 2.0 if self.penalty_weight is None else 8.0
    return 10.0 ** (decades / self.anneal_steps)

  def calibrated_penalty_weight(self, trained: dict[str, Any], weight_grads: Any,
                                count: jax.Array) -> jax.Array:
    """``N * quantile(|w dL/dw_eff|, target_sparsity)`` over the masked weights.

    The task loss's gradient on a logit is ``beta sigmoid'(beta s) w dL/dw_eff`` (``w_eff`` the
    soft-masked weight), the penalty's ``beta sigmoid'(beta s) lambda / N``: with this lambda
    the penalty outweighs the task gradient on ``target_sparsity`` of the logits. Uses only
    the gradient of the training loss at the current step (``dL/dw = m dL/dw_eff``)."""
    beta = self.beta(count)
    importance = []
    for w, g, s in zip(jax.tree.leaves(trained["weights"]), jax.tree.leaves(weight_grads),
                       jax.tree.leaves(trained["logits"])):
      if s.ndim:
        importance.append(jnp.abs(w * g / soft_mask(s, beta).astype(g.dtype)).ravel())
    if not importance:
      return jnp.zeros((), jnp.float32)
    importance = jnp.concatenate(importance).astype(jnp.float32)
    return importance.size * jnp.quantile(importance, self.target_sparsity)

  def sparsity_reference(self, step: jax.Array) -> jax.Array:
    """The sparsity lambda steers the hard mask to: a ramp from 0 to ``target_sparsity`` over
    the first half of the mask phase (gradual pruning as in Zhu & Gupta 2017, arXiv
    1710.01878), so lambda rises with the demand instead of winding up while the logits are
    still on their way to 0."""
    ramp = jnp.minimum(jnp.asarray(step, jnp.float32) / max(self.anneal_steps / 2, 1), 1.0)
    return self.target_sparsity * ramp

  @property
  def logit_step(self) -> float:
    """``logit_learning_rate``, by default ``4 * |logit_init| / anneal_steps``: a logit
    pushed the same way throughout travels about twice its initial value in the phase, so
    every logit can cross 0 while the mask is learned."""
    if self.logit_learning_rate is not None:
      return self.logit_learning_rate
    return 4.0 * max(abs(self.logit_init), 0.1) / self.anneal_steps

  @property
  def logit_optimizer(self) -> optax.GradientTransformation:
    """Adam on the logits, its step size cosine-decayed to 0 over the mask phase."""
    return optax.adam(optax.cosine_decay_schedule(self.logit_step, self.anneal_steps))

  @property
  def beta(self) -> optax.Schedule:
    return beta_schedule(self.beta_initial, self.beta_final, self.anneal_steps)

  @property
  def stability(self) -> MaskStability:
    return MaskStability(self.tolerance, self.patience)

  # ---- parameter transform --------------------------------------------------------------

  def init(self, params: Any) -> dict[str, Any]:
    """``{"weights": params, "logits": s}``: ``s = logit_init * |w| / rms(w)`` on masked
    leaves, shape ``()`` on the others."""
    def logits(path, leaf):
      if self.masked(path, leaf):
        # |w| / rms(w) of the leaf: logits ordered like the weights' magnitudes, so the
        # penalty prunes them one by one, not all at once (equal logits move in lockstep
        # under Adam and cross 0 together)
        rms = jnp.sqrt(jnp.mean(jnp.square(leaf.astype(jnp.float32))))
        magnitude = jnp.where(rms > 0, jnp.abs(leaf) / jnp.where(rms > 0, rms, 1.0), 1.0)
        return (self.logit_init * magnitude).astype(jnp.float32)
      return jnp.zeros((), jnp.float32)
    return {"weights": params, "logits": jax.tree_util.tree_map_with_path(logits, params)}

  def weights(self, trained: dict[str, Any], state: MSRSState) -> Any:
    """The model's weights: soft-masked while the mask is learned, the (folded) weights
    after the switch."""
    beta = self.beta(state.count)
    learning = state.phase == MASK_LEARNING

    def leaf(w, s):
      if not s.ndim:
        return w
      return jnp.where(learning, w * soft_mask(s, beta).astype(w.dtype), w)
    return jax.tree.map(leaf, trained["weights"], trained["logits"])

  def penalty(self, trained: dict[str, Any], state: MSRSState) -> jax.Array:
    """``lambda * mean(sigmoid(beta s))`` while learning the mask, 0 after the switch."""
    leaves = _masked(trained["logits"])
    if not leaves:
      return jnp.zeros((), jnp.float32)
    beta = self.beta(state.count)
    mean = sum(jnp.sum(soft_mask(s, beta)) for s in leaves) / sum(s.size for s in leaves)
    return jnp.where(state.phase == MASK_LEARNING, state.penalty_weight * mean, 0.0)

  def metrics(self, trained: dict[str, Any], state: MSRSState) -> dict[str, jax.Array]:
    """Scalars to log: sparsity of the current (learning) or frozen (switched) hard mask,
    temperature, phase, last stability distance and the step the mask became stable."""
    learned = mask_sparsity(hard_masks(trained["logits"]))
    return {"mask_sparsity": jnp.where(state.phase == MASK_LEARNING, learned,
                                       mask_sparsity(state.mask)),
            "beta": self.beta(state.count), "phase": state.phase,
            "penalty_weight": state.penalty_weight,
            "mask_distance": state.stability.distance,
            "stable_step": state.stability.stable_step}

  # ---- optax transform ------------------------------------------------------------------

  def transform(self, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wraps ``inner`` (the whole optimizer) for trees made by :meth:`init`.

    ``inner`` updates the weights; while learning the mask, :attr:`logit_optimizer` updates
    the logits and lambda steers the mask's sparsity (see the module docstring); from
    ``start_step`` on, every ``check_every`` steps the hard mask goes to
    :class:`MaskStability` (once the mask is near its target sparsity). On the step it
    becomes stable the mask is folded into the weights (see the module docstring) and frozen.
    After the switch the logits stay put and, with ``switch="sparse"``, gradients and updates
    are masked so pruned weights stay 0.
    """
    stability = self.stability
    logit_optimizer = self.logit_optimizer

    def init_fn(trained):
      hard = hard_masks(trained["logits"])
      # a calibrated lambda is 0 until the first step sets it (that step's loss is the task's)
      return MSRSState(jnp.zeros((), jnp.int32), jnp.full((), MASK_LEARNING, jnp.int32),
                       hard, stability.init(hard),
                       jnp.asarray(self.penalty_weight or 0.0, jnp.float32),
                       inner.init(trained["weights"]), logit_optimizer.init(trained["logits"]))

    def update_fn(grads, state, trained=None):
      if trained is None:
        raise ValueError("MSRS.transform needs params")
      learning = state.phase == MASK_LEARNING
      sparse_after = self.switch == "sparse"
      weight_grads = grads["weights"]
      if sparse_after:  # after a sparse switch the inner optimizer sees the sparse model
        weight_grads = apply_masks(weight_grads, jax.tree.map(lambda m: m | learning,
                                                              state.mask))
      weight_updates, inner_state = inner.update(weight_grads, state.inner_state,
                                                 trained["weights"])
      logit_grads = grads["logits"]
      penalty_weight = state.penalty_weight
      if self.penalty_weight is None:  # calibrate at the first step, then add its penalty
        penalty_weight = jax.lax.cond(
            state.count == 0,
            lambda: self.calibrated_penalty_weight(trained, grads["weights"], state.count),
            lambda: penalty_weight)
        first = (state.count == 0).astype(jnp.float32)
        leaves = _masked(trained["logits"])
        n = max(sum(s.size for s in leaves), 1)
        beta0 = self.beta(state.count)

        def with_penalty(g, s):  # d/ds lambda * mean(sigmoid(beta s)), on the first step only
          if not s.ndim:
            return g
          m = soft_mask(s, beta0)
          return g + first * penalty_weight * beta0 * m * (1 - m) / n
        logit_grads = jax.tree.map(with_penalty, logit_grads, trained["logits"])
      logit_updates, logit_state = logit_optimizer.update(logit_grads, state.logit_state,
                                                          trained["logits"])
      # unmasked leaves' placeholder logits (shape ()) never move
      logit_updates = jax.tree.map(lambda u: jnp.where(learning & (u.ndim > 0), u, 0.0),
                                   logit_updates)
      if sparse_after:
        weight_updates = jax.tree.map(lambda u, w, m: jnp.where(m | learning, u, -w),
                                      weight_updates, trained["weights"], state.mask)
      count = state.count + 1
      logits = jax.tree.map(jnp.add, trained["logits"], logit_updates)
      hard = hard_masks(logits)
      sparsity = mask_sparsity(hard)
      ready = sparsity >= self.ready_fraction * self.target_sparsity
      factor = jnp.where(sparsity < self.sparsity_reference(count), self.growth,
                         1.0 / self.growth)
      # lambda acts through the logits only: once their steps have decayed to 0 it is held
      # (growing on, it would overflow and the loss with it)
      steering = learning & (state.count < self.anneal_steps)
      penalty_weight = jnp.where(steering, penalty_weight * factor, penalty_weight)
      due = learning & ready & (count >= self.start_step) & (count % self.check_every == 0)
      checked = stability.update(state.stability, hard, count)
      tracker = jax.tree.map(lambda new, old: jnp.where(due, new, old), checked,
                             state.stability)
      switch_now = learning & MaskStability.is_stable(tracker)
      beta = self.beta(count)

      def fold(w, u, s):  # weights after this step, with the mask folded in at the switch
        if not s.ndim:
          return u
        m = soft_mask(s, beta)
        if self.switch == "sparse":
          m = m * hard_mask(s)
        return jnp.where(switch_now, (w + u) * m.astype(w.dtype) - w, u)
      weight_updates = jax.tree.map(fold, trained["weights"], weight_updates, logits)
      mask = jax.tree.map(lambda new, old: jnp.where(switch_now, new, old), hard, state.mask)
      phase = jnp.where(switch_now, SWITCHED, state.phase).astype(jnp.int32)
      return ({"weights": weight_updates, "logits": logit_updates},
              MSRSState(count, phase, mask, tracker, penalty_weight, inner_state, logit_state))
    return optax.GradientTransformation(init_fn, update_fn)


def zero_fraction(params: Any, masked: Callable[[tuple, jax.Array], bool] = weight_matrices
                     ) -> float:
  """Fraction of exactly-zero weights over the masked leaves of ``params`` (final sparsity
  of any method: SET/RigL/magnitude zero their pruned weights, MSRS folds its mask in)."""
  pairs = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
           if masked(path, leaf)]
  zeros = sum(int(jnp.sum(leaf == 0)) for leaf in pairs)
  return zeros / max(sum(leaf.size for leaf in pairs), 1)
