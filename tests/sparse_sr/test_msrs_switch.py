"""The MSRS switch (arXiv:2406.17614, Sec. 3) against independent references: with a soft mask
of exactly 1 everywhere MSRS must train exactly like the plain optimizer, before and after the
switch (no restarted schedule, no dropped moments, no penalty leaking into the weights), and
the weights folded at the switch must be ``w * sigmoid(beta s)`` (dense) or
``w * sigmoid(beta s) * [s > 0]`` (sparse) computed in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from sparse_sr.msrs import MSRS, SWITCHED

X = jax.random.normal(jax.random.key(1), (64, 8))
Y = jnp.sin(X[:, :1] * 2) + X[:, 1:2]
SWITCH_AT = 6  # optimizer steps before the forced switch


def mlp_params(key):
  k1, k2 = jax.random.split(key)
  return {"l1": {"kernel": jax.random.normal(k1, (8, 32)) / 3, "bias": jnp.full(32, 0.1)},
          "l2": {"kernel": jax.random.normal(k2, (32, 1)) / 6, "bias": jnp.zeros(1)}}


def task_loss(weights):
  h = jnp.tanh(X @ weights["l1"]["kernel"] + weights["l1"]["bias"])
  return jnp.mean((h @ weights["l2"]["kernel"] + weights["l2"]["bias"] - Y) ** 2)


def forced_switch(switch: str, **overrides) -> MSRS:
  """An MSRS whose mask is declared stable at the first check, at step ``SWITCH_AT``."""
  return MSRS(**{"switch": switch, "penalty_weight": 5.0, "anneal_steps": 20,
                 "beta_initial": 1.0, "beta_final": 100.0, "start_step": SWITCH_AT,
                 "check_every": 1, "ready_fraction": 0.0, "tolerance": 2.0, "patience": 1,
                 **overrides})


def inner_optimizer():
  # the benchmark's optimizer: clipping, AdamW with warm-up and cosine decay
  schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-2, 4, 30, end_value=3e-4)
  return optax.chain(optax.clip_by_global_norm(0.5),
                     optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=1e-2))


def msrs_step(optimizer, reparam, trained, state):
  def loss(t):
    return task_loss(reparam.weights(t, state)) + reparam.penalty(t, state)
  updates, new_state = optimizer.update(jax.grad(loss)(trained), state, trained)
  return optax.apply_updates(trained, updates), new_state


@pytest.mark.parametrize("switch", ["dense", "sparse"])
def test_switch_with_a_soft_mask_of_one_continues_exactly_like_plain_training(switch):
  reparam = forced_switch(switch)
  params = mlp_params(jax.random.key(0))
  trained = reparam.init(params)
  # logits so large that sigmoid(beta s) is exactly 1.0 in float32 at every temperature
  trained["logits"] = jax.tree.map(lambda s: jnp.full_like(s, 1e4) if s.ndim else s,
                                   trained["logits"])
  optimizer = reparam.transform(inner_optimizer())
  state = optimizer.init(trained)
  plain = inner_optimizer()
  plain_params, plain_state = params, plain.init(params)
  msrs_jit = jax.jit(lambda t, s: msrs_step(optimizer, reparam, t, s))
  plain_jit = jax.jit(lambda p, s: plain.update(jax.grad(task_loss)(p), s, p))
  switched_at = None
  for step in range(1, 25):
    trained, state = msrs_jit(trained, state)
    updates, plain_state = plain_jit(plain_params, plain_state)
    plain_params = optax.apply_updates(plain_params, updates)
    if switched_at is None and int(state.phase) == SWITCHED:
      switched_at = step
    for got, want in zip(jax.tree.leaves(reparam.weights(trained, state)),
                         jax.tree.leaves(plain_params)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  assert switched_at == SWITCH_AT
  assert int(state.inner_state[1][0].count) == int(plain_state[1][0].count) == 24
  # the moments carried through the switch are the plain optimizer's
  for got, want in zip(jax.tree.leaves(state.inner_state[1][0].nu),
                       jax.tree.leaves(plain_state[1][0].nu)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("switch", ["dense", "sparse"])
def test_folded_weights_are_the_numpy_soft_mask_times_the_weights(switch):
  # frozen weights (learning rate 0) and frozen logits (logit step 0): the switch's fold is
  # the only change, so it can be computed in numpy from the initial tree
  reparam = forced_switch(switch, logit_learning_rate=0.0)
  params = mlp_params(jax.random.key(3))
  trained = reparam.init(params)
  rng = np.random.default_rng(0)
  trained["logits"] = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), jnp.float32) if s.ndim else s,
      trained["logits"])
  optimizer = reparam.transform(optax.sgd(0.0))
  state = optimizer.init(trained)
  weights0 = jax.tree.map(np.asarray, trained["weights"])
  logits0 = jax.tree.map(np.asarray, trained["logits"])
  step = jax.jit(lambda t, s: msrs_step(optimizer, reparam, t, s))
  for _ in range(SWITCH_AT):
    trained, state = step(trained, state)
  assert int(state.phase) == SWITCHED
  beta = 100.0 ** (SWITCH_AT / 20)  # the exponential schedule at the switch's count
  for leaf in ("l1", "l2"):
    w, s = weights0[leaf]["kernel"].astype(np.float64), logits0[leaf]["kernel"]
    expected = w * scipy.special.expit(beta * s.astype(np.float64))
    if switch == "sparse":
      expected = expected * (s > 0)
    np.testing.assert_allclose(np.asarray(trained["weights"][leaf]["kernel"]), expected,
                               rtol=1e-5, atol=1e-7)
    # unmasked leaves are not folded
    np.testing.assert_array_equal(np.asarray(trained["weights"][leaf]["bias"]),
                                  weights0[leaf]["bias"])
  # after the switch the model uses the folded weights as they are, with no penalty
  for got, want in zip(jax.tree.leaves(reparam.weights(trained, state)),
                       jax.tree.leaves(trained["weights"])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert float(reparam.penalty(trained, state)) == 0.0
  np.testing.assert_array_equal(np.asarray(state.mask["l1"]["kernel"]),
                                logits0["l1"]["kernel"] > 0)
