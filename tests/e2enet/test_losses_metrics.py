import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from e2enet import losses, metrics


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_dice_ce_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 5, 4)).astype(np.float32)
  labels = rng.integers(0, 4, size=(2, 3, 4, 5))
  p = _softmax(logits.astype(np.float64))
  onehot = np.eye(4)[labels]
  ce = -np.mean(np.log(np.take_along_axis(p, labels[..., None], -1)))
  tp = (p * onehot).sum((0, 1, 2, 3))
  fp = (p * (1 - onehot)).sum((0, 1, 2, 3))
  fn = ((1 - p) * onehot).sum((0, 1, 2, 3))
  dice = (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5)
  expected = ce - dice[1:].mean()                  # background excluded, batch Dice
  got = float(losses.dice_ce_loss(jnp.asarray(logits), jnp.asarray(labels)))
  assert got == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_gives_dice_minus_one():
  labels = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(1, 2, 4, 4)))
  logits = 50.0 * jax.nn.one_hot(labels, 3)
  assert float(losses.soft_dice_loss(logits, labels)) == pytest.approx(-1.0, abs=1e-6)


def test_deep_supervision_weights_and_label_downsampling():
  np.testing.assert_allclose(np.asarray(losses.deep_supervision_weights(4)),
                             np.asarray([8, 4, 2, 1]) / 15, rtol=1e-6)
  labels = jnp.arange(2 * 4 * 8 * 8).reshape(2, 4, 8, 8)
  small = losses.downsample_labels(labels, (2, 2, 4))
  np.testing.assert_array_equal(np.asarray(small), np.asarray(labels)[:, ::2, ::4, ::2])
  outs = [jnp.zeros((2, 4, 8, 8, 3)), jnp.zeros((2, 2, 4, 4, 3))]
  lab = jnp.zeros((2, 4, 8, 8), jnp.int32)
  expected = sum(w * float(losses.dice_ce_loss(o, losses.downsample_labels(lab, o.shape[1:4])))
                 for w, o in zip([2 / 3, 1 / 3], outs))
  assert float(losses.deep_supervision_loss(outs, lab)) == pytest.approx(expected, rel=1e-6)


def test_dice_hand_computed():
  ref = np.zeros((4, 4, 4), int)
  pred = np.zeros((4, 4, 4), int)
  ref[0, 0, :4] = 1        # 4 voxels of class 1
  pred[0, 0, 2:4] = 1      # 2 of them predicted, plus 2 false positives
  pred[1, 1, :2] = 1
  ref[3, 3, 3] = 2         # class 2 missed entirely
  scores = metrics.dice_per_class(pred, ref, 4)
  np.testing.assert_allclose(scores[:2], [2 * 2 / (4 + 4), 0.0])
  assert np.isnan(scores[2])                       # class 3 absent from both
  assert metrics.mean_dice(pred, ref, 4) == pytest.approx(0.25)


def test_hd95_hand_case_and_brute_force():
  a = np.zeros((9, 9, 9), bool)
  b = np.zeros((9, 9, 9), bool)
  a[1, 1, 1] = True
  b[1, 1, 4] = True
  assert metrics.hd95(a, b, spacing=(1.0, 2.0, 1.5)) == pytest.approx(4.5)  # 3 voxels * 1.5 mm
  rng = np.random.default_rng(0)
  for _ in range(3):
    a = np.zeros((12, 14, 10), bool)
    b = np.zeros_like(a)
    a[2:9, 3:11, 1:7] = rng.random((7, 8, 6)) > 0.2
    b[4:11, 2:9, 3:9] = rng.random((7, 7, 6)) > 0.3
    spacing = (2.0, 0.8, 1.2)

    def border(m):
      inner = m.copy()
      for d, s in itertools.product(range(3), (-1, 1)):
        shifted = np.zeros_like(m)
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        src[d] = slice(max(-s, 0), m.shape[d] - max(s, 0))
        dst[d] = slice(max(s, 0), m.shape[d] - max(-s, 0))
        shifted[tuple(dst)] = m[tuple(src)]
        inner &= shifted
      return np.argwhere(m & ~inner) * np.asarray(spacing)
    pa, pb = border(a), border(b)
    d = cdist(pa, pb)
    expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert metrics.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-9)
  assert np.isnan(metrics.hd95(np.zeros((3, 3, 3), bool), b[:3, :3, :3] | True))
  with pytest.raises(ValueError, match="shape"):
    metrics.dice_per_class(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 2)
