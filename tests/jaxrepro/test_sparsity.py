import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrepro import sparsity
from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise


def _conv_granularity(path, leaf):
  names = sparsity.path_names(path)
  if names[-1] == "kernel":
    return sparsity.KERNEL
  if names[-1] == "w":
    return sparsity.ELEMENT
  return None


def _params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"conv": {"kernel": jax.random.normal(k1, (1, 3, 3, 6, 8)), "bias": jnp.ones(8)},
          "dense": {"w": jax.random.normal(k2, (10, 12))},
          "head": {"b": jax.random.normal(k3, (4,))}}


def test_top_k_mask_matches_numpy_sort():
  scores = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  scores[0, :3] = scores[1, 0]                            # ties: lower flat index first
  traced = jax.jit(sparsity.top_k_mask)
  for k in (0, 1, 3, 13, 35):
    expected = np.zeros(scores.size, bool)
    expected[np.argsort(-scores.ravel(), kind="stable")[:k]] = True
    for got in (sparsity.top_k_mask(jnp.asarray(scores), k), traced(jnp.asarray(scores), k)):
      np.testing.assert_array_equal(np.asarray(got), expected.reshape(scores.shape))


def test_mask_shapes_follow_granularity():
  masks = sparsity.init_masks(jax.random.key(0), _params(jax.random.key(1)), 0.25,
                              _conv_granularity)
  assert masks["conv"]["kernel"].shape == (6, 8)          # one entry per (in, out) kernel
  assert masks["dense"]["w"].shape == (10, 12)
  assert masks["conv"]["bias"].shape == () and masks["head"]["b"].shape == ()
  assert int(masks["conv"]["kernel"].sum()) == round(0.25 * 48)
  assert int(masks["dense"]["w"].sum()) == round(0.25 * 120)
  params = _params(jax.random.key(1))
  assert sparsity.count_nonzero(params, masks) == 9 * 12 + 8 + 30 + 4
  assert sparsity.nonzero_at_density(params, 0.25, _conv_granularity) == 9 * 12 + 8 + 30 + 4
  with pytest.raises(ValueError, match="kernel granularity"):
    sparsity.mask_shape((4, 5), sparsity.KERNEL)


_prune_regrow = jax.jit(sparsity.prune_and_regrow, static_argnames="regrow")


@settings(max_examples=20, deadline=None)
@given(n_in=st.sampled_from([1, 6]), n_out=st.sampled_from([5]), density=st.floats(0.05, 1.0),
       fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), rigl=st.booleans())
def test_prune_regrow_keeps_density_and_drops_smallest(n_in, n_out, density, fraction, seed,
                                                       rigl):
  key = jax.random.key(seed)
  k1, k2, k3, k4 = jax.random.split(key, 4)
  param = jax.random.normal(k1, (2, 3, n_in, n_out))
  grad = jax.random.normal(k2, param.shape)
  mask = sparsity.random_mask(k3, (n_in, n_out), density)
  new_mask, regrown = _prune_regrow(k4, mask, param, jnp.float32(fraction), grad=grad,
                                    regrow="gradient" if rigl else "random")
  mask, new_mask, regrown = map(np.asarray, (mask, new_mask, regrown))
  assert new_mask.sum() == mask.sum()
  n_drop = math.floor(np.float32(fraction) * mask.sum())
  assert regrown.sum() == n_drop and not (regrown & ~new_mask).any()
  # The survivors are the active kernels of largest L1 norm (ties aside).
  l1 = np.abs(np.asarray(param)).sum(axis=(0, 1))
  kept = mask & new_mask & ~regrown
  dropped = mask & ~kept
  if kept.any() and dropped.any():
    assert l1[kept].min() >= l1[dropped].max()
  inactive_before = ~mask
  if rigl and n_drop <= inactive_before.sum() and n_drop > 0:
    g1 = np.abs(np.asarray(grad)).sum(axis=(0, 1))
    grown_scores = g1[regrown]
    not_grown = inactive_before & ~regrown
    if not_grown.any():
      assert grown_scores.min() >= g1[not_grown].max()   # RigL: largest |grad| wins


def test_rigl_regrows_exactly_largest_gradient_kernels():
  param = jnp.arange(1.0, 13.0).reshape(1, 1, 3, 4)       # |w| increases with the flat index
  mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
  grad = jnp.zeros_like(param).at[0, 0, 2, 3].set(-5.0).at[0, 0, 1, 2].set(4.0)
  new_mask, regrown = sparsity.prune_and_regrow(jax.random.key(0), mask, param, 0.35, grad=grad,
                                                regrow="gradient")
  # floor(0.35 * 6) = 2 dropped: the two smallest active weights, entries (0,0) and (0,1).
  expected = np.asarray([[0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(np.asarray(new_mask), expected)
  np.testing.assert_array_equal(np.argwhere(np.asarray(regrown)), [[1, 2], [2, 3]])


def test_magnitude_masks_global_threshold_matches_numpy():
  params = _params(jax.random.key(3))
  masks = sparsity.magnitude_masks(params, 0.3, _conv_granularity, scope="global")
  l1 = np.abs(np.asarray(params["conv"]["kernel"])).sum(axis=(0, 1, 2)).ravel()
  w = np.abs(np.asarray(params["dense"]["w"])).ravel()
  scores = np.concatenate([l1, w])
  k = round(0.3 * scores.size)
  threshold = np.sort(scores)[::-1][k - 1]
  got = np.concatenate([np.asarray(masks["conv"]["kernel"]).ravel(),
                        np.asarray(masks["dense"]["w"]).ravel()])
  np.testing.assert_array_equal(got, scores >= threshold)
  per_layer = sparsity.magnitude_masks(params, 0.3, _conv_granularity)
  assert int(per_layer["dense"]["w"].sum()) == round(0.3 * 120)


def test_cosine_drop_fraction_matches_cosine_annealing_closed_form():
  sched = sparsity.cosine_drop_fraction(0.5, 100, 0.001)
  for t in (0, 25, 50, 99, 100, 150):
    tt = min(t, 100)
    expected = 0.001 + (0.5 - 0.001) * (1 + math.cos(math.pi * tt / 100)) / 2
    assert float(sched(t)) == pytest.approx(expected, abs=1e-6)
  dens = sparsity.gradual_density(1.0, 0.2, 10, 110)
  assert float(dens(0)) == 1.0 and float(dens(200)) == pytest.approx(0.2)
  assert float(dens(60)) == pytest.approx(0.2 + 0.8 * 0.5 ** 3)


def _run(tx, params, steps, key):
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for i in range(steps):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.fold_in(key, i), p.shape), params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append((params, state))
  return history


def test_dynamic_sparsity_keeps_inactive_zero_and_density_constant():
  params = _params(jax.random.key(0))
  inner = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9))
  tx = sparsity.dynamic_sparsity(inner, density=0.3,
                                 granularity=_conv_granularity, update_frequency=3,
                                 drop_fraction=sparsity.cosine_drop_fraction(0.5, 12))
  history = _run(tx, params, 7, jax.random.key(1))
  first_masks = history[0][1].masks
  for step, (p, state) in enumerate(history, start=1):
    m = state.masks
    kernel = np.asarray(p["conv"]["kernel"])
    km = np.asarray(m["conv"]["kernel"])
    assert not kernel[..., ~km].any()                       # whole kernels are zero
    assert not np.asarray(p["dense"]["w"])[~np.asarray(m["dense"]["w"])].any()
    assert km.sum() == round(0.3 * 48) and np.asarray(m["dense"]["w"]).sum() == 36
    assert np.asarray(p["head"]["b"]).all()                 # dense leaves untouched by masks
    mom = np.asarray(state.inner_state[1][0].trace["conv"]["kernel"])
    assert not mom[..., ~km].any()                          # momentum masked
    changed = not np.array_equal(km, np.asarray(first_masks["conv"]["kernel"]))
    if step < 3:
      assert not changed
  assert not np.array_equal(np.asarray(history[2][1].masks["conv"]["kernel"]),
                            np.asarray(history[1][1].masks["conv"]["kernel"]))
  # Regrown kernels start at zero with zero momentum at the exploration step.
  before, after = history[1][1].masks, history[2][1].masks
  grown = np.asarray(after["conv"]["kernel"]) & ~np.asarray(before["conv"]["kernel"])
  assert grown.any()
  assert not np.asarray(history[2][0]["conv"]["kernel"])[..., grown].any()
  assert not np.asarray(history[2][1].inner_state[1][0].trace["conv"]["kernel"])[..., grown].any()


def test_dynamic_sparsity_static_masks_with_magnitude_init():
  params = _params(jax.random.key(0))
  tx = sparsity.dynamic_sparsity(optax.adam(1e-2), density=0.5, granularity=_conv_granularity,
                                 update_frequency=0, init="magnitude")
  history = _run(tx, params, 4, jax.random.key(2))
  expected = sparsity.magnitude_masks(params, 0.5, _conv_granularity)
  for _, state in history:
    assert tree_equal_bitwise(state.masks, expected)
  assert sparsity.count_nonzero(params, expected) == 9 * 24 + 8 + 60 + 4
  assert float(sparsity.mask_density(expected, params)) == pytest.approx((9 * 24 + 60) / 552)


def test_sparsity_state_checkpoint_resumes_bit_exactly(tmp_path):
  params = _params(jax.random.key(0))
  tx = sparsity.dynamic_sparsity(optax.sgd(0.1, momentum=0.9), density=0.3,
                                 granularity=_conv_granularity, update_frequency=2)
  state = tx.init(params)
  update = jax.jit(tx.update)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = update(grads, state, params)
  params = optax.apply_updates(params, updates)
  with Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, (params, state), force=True)
    restored, _ = ckpt.restore(like=(params, state))
  assert tree_equal_bitwise(restored, (params, state))
  # The next step (an exploration step, update_frequency=2) draws the same regrowth.
  a = update(grads, state, params)
  b = update(grads, restored[1], restored[0])
  assert tree_equal_bitwise(a, b)
  assert not tree_equal_bitwise(a[1].masks, state.masks)
