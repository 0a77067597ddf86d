"""MSRS (arXiv:2406.17614) as continuous sparsification, and the SET/RigL/magnitude baselines,
on a small MLP (any parameter pytree works) against closed forms and scripted sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from sparse_sr.msrs import (MSRS, MaskStability, SWITCHED, beta_schedule, hamming_distance,
                            hard_mask, soft_mask, weight_matrices, zero_fraction)
from sparse_sr.sparse_methods import sparse_training


def mlp_params(key):
  k1, k2 = jax.random.split(key)
  return {"l1": {"kernel": jax.random.normal(k1, (8, 32)) / 3, "bias": jnp.zeros(32)},
          "l2": {"kernel": jax.random.normal(k2, (32, 1)) / 6, "bias": jnp.zeros(1)}}


def mlp(params, x):
  h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
  return h @ params["l2"]["kernel"] + params["l2"]["bias"]


X = jax.random.normal(jax.random.key(1), (64, 8))
Y = jnp.sin(X[:, :1] * 2) + X[:, 1:2]


def test_soft_mask_tends_to_the_hard_mask():
  s = np.linspace(-1, 1, 41)
  s = s[np.abs(s) > 1e-6]
  gaps = []
  for beta in (1.0, 10.0, 100.0, 1000.0):
    soft = np.asarray(soft_mask(jnp.asarray(s), beta))
    np.testing.assert_allclose(soft, scipy.special.expit(beta * s), rtol=1e-5, atol=1e-12)
    gaps.append(np.max(np.abs(soft - (s > 0))))
  assert all(a > b for a, b in zip(gaps, gaps[1:]))
  assert gaps[-1] < 1e-8
  np.testing.assert_array_equal(np.asarray(hard_mask(jnp.asarray(s))), s > 0)
  schedule = beta_schedule(1.0, 100.0, 10)
  np.testing.assert_allclose([float(schedule(t)) for t in (0, 5, 10, 20)],
                             [1.0, 10.0, 100.0, 100.0], rtol=1e-5)


def test_penalty_gradient_pushes_every_logit_down():
  reparam = MSRS(penalty_weight=0.5, target_sparsity=0.9, beta_initial=3.0, beta_final=3.0)
  trained = reparam.init(mlp_params(jax.random.key(0)))
  trained["logits"]["l1"]["kernel"] = jax.random.normal(jax.random.key(2), (8, 32))
  state = reparam.transform(optax.sgd(0.1)).init(trained)
  grad = jax.grad(lambda t: reparam.penalty(t, state))(trained)["logits"]
  s = np.asarray(trained["logits"]["l1"]["kernel"])
  n = 8 * 32 + 32 * 1
  sig = 1 / (1 + np.exp(-3 * s))
  # d/ds lambda * mean(sigmoid(beta s)) = lambda * beta * sigmoid' / N > 0: descent lowers s
  np.testing.assert_allclose(np.asarray(grad["l1"]["kernel"]), 0.5 * 3 * sig * (1 - sig) / n,
                             rtol=1e-4)
  assert np.all(np.asarray(grad["l1"]["kernel"]) > 0)
  assert float(jnp.sum(jnp.abs(grad["l1"]["bias"]))) == 0  # unmasked leaf
  # after the switch the penalty is off
  assert float(reparam.penalty(trained, state._replace(phase=jnp.int32(SWITCHED)))) == 0.0


def test_stability_tracker_on_a_scripted_mask_sequence():
  rng = np.random.default_rng(0)
  base = rng.random(200) > 0.5
  flip = lambda m, n: np.where(np.arange(200) < n, ~m, m)  # noqa: E731
  # distances to the previous mask: -, 0.1, 0.005, 0, 0.02 (reset), 0, 0, 0 -> stable at 8
  sequence = [base, flip(base, 20), flip(flip(base, 20), 1), flip(flip(base, 20), 1)]
  sequence += [flip(sequence[-1], 4)] * 4
  tracker = MaskStability(tolerance=0.01, patience=3)
  state = tracker.init({"m": jnp.asarray(sequence[0])})
  expected_distance = [1.0]
  for a, b in zip(sequence, sequence[1:]):
    expected_distance.append(np.mean(a != b))
  stable_at = None
  for step, (mask, distance) in enumerate(zip(sequence, expected_distance), start=1):
    state = tracker.update(state, {"m": jnp.asarray(mask)}, step)
    assert float(state.distance) == pytest.approx(distance)
    if stable_at is None and bool(MaskStability.is_stable(state)):
      stable_at = step
  assert stable_at == 8 and int(state.stable_step) == 8
  assert float(hamming_distance({"m": jnp.asarray(base)}, {"m": jnp.asarray(~base)})) == 1.0


def _step(optimizer, reparam, t, s):
  def loss(t, s):
    w = reparam.weights(t, s) if reparam else t
    value = jnp.mean((mlp(w, X) - Y) ** 2)
    return value + (reparam.penalty(t, s) if reparam else 0.0)
  u, s = optimizer.update(jax.grad(loss)(t, s), s, t)
  return optax.apply_updates(t, u), s


def _train(optimizer, reparam, params, steps, on_step=None):
  trained = reparam.init(params) if reparam else params
  state = optimizer.init(trained)
  step = jax.jit(lambda t, s: _step(optimizer, reparam, t, s))
  for i in range(steps):
    before = (trained, state)
    trained, state = step(trained, state)
    if on_step:
      on_step(i, before, (trained, state))
  return trained, state


def test_sparse_switch_keeps_pruned_weights_exactly_zero():
  reparam = MSRS(target_sparsity=0.6, penalty_weight=2.0, anneal_steps=150, beta_final=50.0,
                 start_step=40, check_every=5, patience=3, tolerance=0.02, logit_init=0.3,
                 switch="sparse")
  optimizer = reparam.transform(optax.adam(1e-2))
  zeros_seen = []

  def check(i, before, after):
    trained, state = after
    if int(state.phase) == SWITCHED:
      pruned = 0
      for leaf in ("l1", "l2"):
        w = np.asarray(trained["weights"][leaf]["kernel"])
        m = np.asarray(state.mask[leaf]["kernel"])
        assert np.all(w[~m] == 0.0)
        pruned += int(np.sum(~m))
      zeros_seen.append(pruned)
  params = mlp_params(jax.random.key(0))
  trained, state = _train(optimizer, reparam, params, 300, check)
  assert int(state.phase) == SWITCHED and len(zeros_seen) > 50
  assert 0 <= int(state.stability.stable_step) <= 300
  # the unmasked leaves (biases, zero at init) kept training after the switch
  for leaf in ("l1", "l2"):
    assert np.all(np.asarray(trained["weights"][leaf]["bias"]) != 0.0)
  sparsity = zero_fraction(trained["weights"])
  assert sparsity == pytest.approx(zeros_seen[-1] / (8 * 32 + 32), abs=1e-9)
  assert sparsity >= 0.4
  assert float(jnp.mean((mlp(reparam.weights(trained, state), X) - Y) ** 2)) < float(
      jnp.mean(Y ** 2))  # it learned something


def test_dense_switch_keeps_the_function_and_then_trains_every_weight():
  reparam = MSRS(target_sparsity=0.6, penalty_weight=2.0, anneal_steps=150, beta_final=50.0,
                 start_step=40, check_every=5, patience=3, tolerance=0.02, logit_init=0.3,
                 switch="dense")
  optimizer = reparam.transform(optax.adam(1e-2))
  at_switch = {}

  def check(i, before, after):
    (t0, s0), (t1, s1) = before, after
    if int(s0.phase) != SWITCHED and int(s1.phase) == SWITCHED:
      # the step's own update, without the switch, would give weights(t1) at count s1.count
      unswitched = s1._replace(phase=jnp.zeros((), jnp.int32))
      unfolded = jax.tree.map(lambda w, s: w / jnp.where(s.ndim > 0, soft_mask(
          s, reparam.beta(s1.count)), 1.0), t1["weights"], t1["logits"])
      expected = mlp(reparam.weights({**t1, "weights": unfolded}, unswitched), X)
      np.testing.assert_allclose(np.asarray(mlp(reparam.weights(t1, s1), X)),
                                 np.asarray(expected), rtol=1e-4, atol=1e-5)
      at_switch["mask"] = s1.mask
  trained, state = _train(optimizer, reparam, mlp_params(jax.random.key(0)), 300, check)
  assert "mask" in at_switch
  pruned = ~np.asarray(at_switch["mask"]["l1"]["kernel"])
  assert pruned.sum() > 0
  # dense training moved the weights the mask had pruned
  assert np.mean(np.asarray(trained["weights"]["l1"]["kernel"])[pruned] != 0) > 0.9


@pytest.mark.parametrize("method", ["set", "rigl", "magnitude"])
def test_baselines_keep_density_constant(method):
  params = mlp_params(jax.random.key(0))
  optimizer, reparam = sparse_training(method, optax.adam(1e-2), steps=40,
                                       target_sparsity=0.75)
  assert reparam is None
  expected = {"l1": round(0.25 * 8 * 32), "l2": round(0.25 * 32)}
  changed = []

  def check(i, before, after):
    trained, state = after
    for leaf, count in expected.items():
      m = np.asarray(state.masks[leaf]["kernel"])
      assert m.sum() == count
      assert np.all(np.asarray(trained[leaf]["kernel"])[~m] == 0.0)
    changed.append(not np.array_equal(np.asarray(before[1].masks["l1"]["kernel"]),
                                      np.asarray(state.masks["l1"]["kernel"])))
  _train(optimizer, None, params, 30, check)
  if method == "magnitude":
    assert not any(changed)
    # pruning at init keeps the largest initial weights
    m = np.asarray(optimizer.init(params).masks["l1"]["kernel"])
    w = np.abs(np.asarray(params["l1"]["kernel"]))
    assert w[m].min() >= w[~m].max()
  else:
    assert any(changed)  # the topology explored


def test_default_masked_leaves_are_kernels():
  leaves = jax.tree_util.tree_flatten_with_path(mlp_params(jax.random.key(0)))[0]
  assert [weight_matrices(p, x) for p, x in leaves] == [False, True, False, True]


def test_mask_state_resumes_bit_exactly_from_a_checkpoint(tmp_path):
  from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
  reparam = MSRS(target_sparsity=0.6, anneal_steps=40, start_step=5,
                 check_every=2, patience=2, tolerance=0.05, logit_init=0.2)
  optimizer = reparam.transform(optax.adam(1e-2))
  params = mlp_params(jax.random.key(0))
  straight = _train(optimizer, reparam, params, 30)
  half = _train(optimizer, reparam, params, 15)
  with Checkpointer(tmp_path, keep=1) as ckpt:
    ckpt.save(15, half, force=True)
    restored, _ = ckpt.restore(like=half)
  assert tree_equal_bitwise(restored, half)
  trained, state = restored
  step = jax.jit(lambda t, s: _step(optimizer, reparam, t, s))
  for _ in range(15):
    trained, state = step(trained, state)
  assert tree_equal_bitwise((trained, state), straight)


def test_penalty_weight_steers_the_mask_to_a_ramped_sparsity_reference():
  reparam = MSRS(target_sparsity=0.5, penalty_weight=0.25, penalty_growth=2.0, anneal_steps=8,
                 start_step=10 ** 6)
  # the reference ramps linearly to the target over half the mask phase
  np.testing.assert_allclose([float(reparam.sparsity_reference(c)) for c in (0, 1, 2, 4, 9)],
                             [0.0, 0.125, 0.25, 0.5, 0.5])
  optimizer = reparam.transform(optax.sgd(0.0))
  trained = reparam.init(mlp_params(jax.random.key(0)))
  n1, n2 = 8 * 32, 32
  zero_grads = jax.tree.map(jnp.zeros_like, trained)  # the logits stay where they are put

  def with_sparsity(fraction):  # the first round(fraction * n) logits negative: pruned
    s = np.where(np.arange(n1 + n2) < round(fraction * (n1 + n2)), -1.0, 1.0)
    logits = dict(trained["logits"])
    logits["l1"] = {**logits["l1"], "kernel": jnp.asarray(s[:n1].reshape(8, 32), jnp.float32)}
    logits["l2"] = {**logits["l2"], "kernel": jnp.asarray(s[n1:].reshape(32, 1), jnp.float32)}
    return {**trained, "logits": logits}
  state = optimizer.init(trained)
  seen = []
  # (hard-mask sparsity, reference at that step): below -> x2, at or above -> /2
  for fraction in (0.0, 0.3, 0.3, 0.49, 0.5):  # references 0.125, 0.25, 0.375, 0.5, 0.5
    _, state = optimizer.update(zero_grads, state, with_sparsity(fraction))
    seen.append(float(state.penalty_weight))
  assert seen == [0.5, 0.25, 0.5, 1.0, 0.5]  # exact powers of two
  # steps 6-8 still steer; from step 9 the logits' steps are 0 and lambda is held
  for _ in range(6):
    _, state = optimizer.update(zero_grads, state, with_sparsity(0.0))
    seen.append(float(state.penalty_weight))
  assert seen[5:] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
  state = state._replace(count=jnp.int32(5))  # for the penalty check below
  # the penalty is on while the mask is learned, whatever the sparsity
  expected = 4.0 * float(np.mean(scipy.special.expit(reparam.beta(state.count) * np.where(
      np.arange(n1 + n2) < (n1 + n2) // 2, -1.0, 1.0))))
  assert float(reparam.penalty(with_sparsity(0.5), state)) == pytest.approx(expected, rel=1e-5)
  # defaults: two orders of magnitude over the mask phase from a calibrated lambda, eight
  # from a given one
  assert MSRS(anneal_steps=40).growth ** 40 == pytest.approx(1e2, rel=1e-6)
  assert MSRS(anneal_steps=40, penalty_weight=1.0).growth ** 40 == pytest.approx(1e8, rel=1e-6)


def test_logits_start_ordered_like_the_weight_magnitudes():
  params = mlp_params(jax.random.key(0))
  params["l2"]["kernel"] = jnp.zeros((32, 1))  # a zero-initialized layer: logits at logit_init
  logits = MSRS(logit_init=1.5).init(params)["logits"]
  w = np.asarray(params["l1"]["kernel"])
  np.testing.assert_allclose(np.asarray(logits["l1"]["kernel"]),
                             1.5 * np.abs(w) / np.sqrt(np.mean(w ** 2)), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(logits["l2"]["kernel"]), 1.5)
  assert logits["l1"]["bias"].shape == ()


def test_logit_steps_follow_a_cosine_decay_to_zero_over_the_mask_phase():
  reparam = MSRS(anneal_steps=20, logit_init=0.5, start_step=10 ** 6, penalty_weight=1.0)
  assert reparam.logit_step == pytest.approx(4 * 0.5 / 20)
  optimizer = reparam.transform(optax.sgd(0.0))
  trained = reparam.init(mlp_params(jax.random.key(0)))
  grads = jax.tree.map(jnp.ones_like, trained)  # a constant push: Adam's m / sqrt(v) = 1
  state = optimizer.init(trained)
  for t in range(25):
    updates, state = optimizer.update(grads, state, trained)
    expected = reparam.logit_step * 0.5 * (1 + np.cos(np.pi * min(t / 20, 1.0)))
    np.testing.assert_allclose(np.asarray(updates["logits"]["l1"]["kernel"]), -expected,
                               rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(updates["logits"]["l1"]["bias"])) == 0.0  # unmasked leaf


@pytest.mark.parametrize("steps,target", [(200, 0.5), (400, 0.8)])
def test_default_mask_phase_reaches_the_target_then_switches(steps, target):
  params = mlp_params(jax.random.key(0))
  params["l1"]["bias"] = jnp.full((32,), 0.1)  # unmasked leaves must survive the sparse switch
  optimizer, reparam = sparse_training("msrs", optax.adam(1e-2), steps=steps,
                                       target_sparsity=target)
  assert reparam.anneal_steps == steps // 10 and reparam.penalty_weight is None
  log = []

  def check(i, before, after):
    trained, state = after
    mask = np.concatenate([np.asarray(trained["logits"][k]["kernel"]).ravel() > 0
                           for k in ("l1", "l2")])
    log.append((mask, int(state.phase), float(state.penalty_weight)))
    if int(state.phase) == SWITCHED:
      frozen = np.concatenate([np.asarray(state.mask[k]["kernel"]).ravel() for k in ("l1", "l2")])
      w = np.concatenate([np.asarray(trained["weights"][k]["kernel"]).ravel()
                          for k in ("l1", "l2")])
      np.testing.assert_array_equal(frozen, mask)  # the switch froze the learned hard mask
      assert np.all(w[~frozen] == 0.0)
  trained, state = _train(optimizer, reparam, params, steps // 4, check)
  # stability (distance < tolerance for `patience` checks) triggered the switch in the phase
  switch = int(state.stability.stable_step)
  assert int(state.phase) == SWITCHED and 0 < switch <= reparam.anneal_steps
  assert [phase for _, phase, _ in log] == [0] * (switch - 1) + [1] * (steps // 4 - switch + 1)
  sparsity = 1 - log[switch - 1][0].mean()
  # at least the threshold stability is checked from, overshooting by at most 0.15
  assert reparam.ready_fraction * target <= sparsity <= target + 0.15
  assert all(np.array_equal(log[switch - 1][0], m) for m, _, _ in log[switch:])
  assert len({lam for _, _, lam in log[switch - 1:]}) == 1  # lambda held after the switch
  assert np.all(np.asarray(trained["weights"]["l1"]["bias"]) != 0.1)  # biases still trained
  assert float(jnp.mean((mlp(reparam.weights(trained, state), X) - Y) ** 2)) < float(
      jnp.mean(Y ** 2))


def test_calibrated_penalty_weight_is_the_target_quantile_of_first_order_importance():
  target = 0.7
  reparam = MSRS(target_sparsity=target, penalty_growth=1.0, anneal_steps=20,
                 start_step=10 ** 6)
  assert reparam.penalty_weight is None
  params = mlp_params(jax.random.key(0))
  trained = reparam.init(params)
  optimizer = reparam.transform(optax.sgd(0.0))
  state = optimizer.init(trained)
  assert float(state.penalty_weight) == 0.0  # the first step's loss is the task loss
  # reference: dL/dw_eff by central finite differences on the soft-masked weights, in numpy
  m = {k: scipy.special.expit(np.asarray(trained["logits"][k]["kernel"], np.float64))
       for k in ("l1", "l2")}  # beta = 1 at step 0
  w = {k: np.asarray(params[k]["kernel"], np.float64) for k in ("l1", "l2")}
  x, y = np.asarray(X, np.float64), np.asarray(Y, np.float64)

  def loss(eff):
    h = np.tanh(x @ eff["l1"])
    return np.mean((h @ eff["l2"] - y) ** 2)
  importance = []
  for k in ("l1", "l2"):
    eff = {j: w[j] * m[j] for j in ("l1", "l2")}
    g = np.zeros_like(w[k])
    for idx in np.ndindex(g.shape):
      up = {j: v.copy() for j, v in eff.items()}
      down = {j: v.copy() for j, v in eff.items()}
      up[k][idx] += 1e-6
      down[k][idx] -= 1e-6
      g[idx] = (loss(up) - loss(down)) / 2e-6
    importance.append(np.abs(w[k] * g).ravel())
  importance = np.concatenate(importance)
  expected = importance.size * np.quantile(importance, target)
  _, state = _step(optimizer, reparam, trained, state)
  assert float(state.penalty_weight) == pytest.approx(expected, rel=1e-3)
  # a fixed penalty_weight is used as given
  fixed = MSRS(penalty_weight=3.0).transform(optax.sgd(0.0))
  assert float(fixed.init(trained).penalty_weight) == 3.0
