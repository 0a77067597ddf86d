"""OwLore / LISA: LOD against a hook-based numpy reference and planted outliers, sampling
frequencies by chi-square against the exact laws, frozen inactive blocks, LISA with every
block active == optax.adam, bit-exact checkpoint resume."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from flax import nnx

from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
from llm.model import CONFIGS, Llama
from qgalore_jax import layerwise as ow

CONFIG = dataclasses.replace(CONFIGS["tiny"], vocab_size=64, num_layers=4, max_seq_len=32)
BATCHES = [jax.random.randint(jax.random.key(i), (2, 12), 0, CONFIG.vocab_size) for i in range(2)]


def _model(seed=0):
  return Llama(CONFIG, rngs=nnx.Rngs(seed))


def _lod_reference(model, batches, M):
  """Records every nnx.Linear input by patching the class (not the modules), then the OWL
  metric in numpy."""
  inputs = {}
  original = nnx.Linear.__call__

  def recording(self, x):
    inputs.setdefault(id(self), []).append(np.asarray(x, np.float64).reshape(-1, x.shape[-1]))
    return original(self, x)

  nnx.Linear.__call__ = recording
  try:
    for tokens in batches:
      model(tokens)
  finally:
    nnx.Linear.__call__ = original
  lod = []
  for layer in model.layers:
    linears = [layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj, layer.attn.o_proj,
               layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
    scores = []
    for lin in linears:
      x = np.concatenate(inputs[id(lin)])
      scores.append(np.abs(np.asarray(lin.kernel.get_value(), np.float64))
                    * np.linalg.norm(x, axis=0)[:, None])
    flat = np.concatenate([s.ravel() for s in scores])
    lod.append(100 * np.mean(flat > M * flat.mean()))
  return np.asarray(lod)


def test_lod_matches_reference_and_restores_model():
  model = _model()
  before = jax.tree.map(np.asarray, nnx.state(model))
  lod = ow.layer_outlier_distribution(model, BATCHES, M=3.0)
  assert all(isinstance(layer.attn.q_proj, nnx.Linear) for layer in model.layers)
  assert tree_equal_bitwise(before, jax.tree.map(np.asarray, nnx.state(model)))
  reference = _lod_reference(model, BATCHES, 3.0)
  assert lod.shape == (CONFIG.num_layers,) and np.all(reference > 0)
  np.testing.assert_allclose(lod, reference, rtol=1e-3, atol=0.05)


@pytest.mark.parametrize("planted", [1, 3])
def test_lod_ranks_planted_outlier_layer_first(planted):
  model = _model()
  kernel = model.layers[planted].attn.q_proj.kernel
  rows = jnp.arange(0, kernel.shape[0], 4)
  kernel.set_value(kernel.get_value().at[rows, rows % kernel.shape[1]].multiply(200.0))
  lod = ow.layer_outlier_distribution(model, BATCHES, M=13.0)
  assert int(np.argmax(lod)) == planted
  assert lod[planted] > 2 * np.max(np.delete(lod, planted))
  probs = ow.sampling_probabilities(lod)
  np.testing.assert_allclose(np.asarray(probs), lod / lod.sum(), rtol=1e-6)


def _pair_law(p):
  """Exact law of the unordered pair drawn sequentially without replacement."""
  return {(i, j): p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
          for i, j in itertools.combinations(range(len(p)), 2)}


def test_sample_blocks_chi_square():
  p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
  keys = jax.random.split(jax.random.key(0), 20000)
  single = np.asarray(jax.vmap(lambda k: ow.sample_blocks(k, jnp.asarray(p), 1))(keys))
  assert np.all(single.sum(1) == 1)
  assert scipy.stats.chisquare(single.sum(0), p * len(keys)).pvalue > 1e-3
  pairs = np.asarray(jax.vmap(lambda k: ow.sample_blocks(k, jnp.asarray(p), 2))(keys))
  assert np.all(pairs.sum(1) == 2)
  law = _pair_law(p)
  observed = {pair: 0 for pair in law}
  for row in pairs:
    observed[tuple(np.flatnonzero(row))] += 1
  expected = np.array([law[k] for k in law]) * len(keys)
  assert abs(sum(law.values()) - 1) < 1e-12
  assert scipy.stats.chisquare(np.array([observed[k] for k in law]), expected).pvalue > 1e-3


def test_transform_samples_blocks_with_p_every_interval():
  p = np.array([0.5, 0.3, 0.15, 0.05])
  params = {"layers": {str(i): {"w": jnp.zeros(3)} for i in range(4)}, "head": jnp.zeros(2)}
  tx = ow.layerwise_sampling(optax.scale_by_adam(), optax.scale_by_adam(), p, gamma=1,
                             interval=2, seed=3)
  grads = jax.tree.map(jnp.ones_like, params)
  steps = 6000

  def body(state, _):
    _, state = tx.update(grads, state, params)
    return state, ow.sampling_state(state).active

  state, active = jax.lax.scan(body, tx.init(params), None, length=steps)
  active = np.asarray(active)
  sampler = ow.sampling_state(state)
  assert np.all(active.sum(1) == 1)
  np.testing.assert_array_equal(active[0::2], active[1::2])  # redrawn only every K steps
  counts = np.asarray(sampler.times_sampled)
  assert counts.sum() == steps // 2
  assert scipy.stats.chisquare(counts, p * steps / 2).pvalue > 1e-3
  # each block's Adam counter counts exactly the steps it was active
  for b in range(4):
    inner = sampler.inner_state.inner_states[f"block_{b:04d}"].inner_state
    assert int(inner.count) == int(active[:, b].sum())


def _xent(graphdef, params, tokens):
  logits, _ = nnx.merge(graphdef, params)(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def _train_step(graphdef, tx):
  @jax.jit
  def step(params, opt_state, tokens):
    grads = jax.grad(lambda p: _xent(graphdef, p, tokens))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step


def _block_state(opt_state, block):
  sampler = ow.sampling_state(opt_state)
  return sampler.inner_state.inner_states[f"block_{block:04d}"]


def test_inactive_blocks_params_and_moments_are_bit_identical():
  graphdef, params = nnx.split(_model())
  probs = np.array([0.1, 0.2, 0.3, 0.4])
  tx = ow.owlore(1e-2, probs, gamma=1, interval=2, rank=4, update_proj_gap=3, seed=1)
  step = _train_step(graphdef, tx)
  opt_state = tx.init(params)
  active_counts = np.zeros(4, int)
  for i in range(8):
    tokens = BATCHES[i % 2]
    new_params, new_state = step(params, opt_state, tokens)
    active = np.asarray(ow.sampling_state(new_state).active)
    assert active.sum() == 1
    active_counts += active
    for b in range(4):
      same_params = tree_equal_bitwise(params["layers"][b], new_params["layers"][b])
      same_state = tree_equal_bitwise(_block_state(opt_state, b), _block_state(new_state, b))
      assert same_params == same_state == (not active[b]), (i, b)
    # embeddings and the final norm train every step
    assert not tree_equal_bitwise(params["embed"], new_params["embed"])
    params, opt_state = new_params, new_state
  # GaLore step counters of each block froze while it was inactive
  for b in range(4):
    galore_state = _block_state(opt_state, b).inner_state[0].inner_states["galore"]
    assert int(galore_state.inner_state.count) == active_counts[b]


@pytest.mark.slow
def test_lisa_with_every_block_active_is_adam():
  graphdef, params = nnx.split(_model())
  lisa = ow.lisa(3e-3, CONFIG.num_layers, gamma=CONFIG.num_layers, interval=1)
  adam = optax.adam(3e-3)
  step_lisa, step_adam = _train_step(graphdef, lisa), _train_step(graphdef, adam)
  p1, s1, p2, s2 = params, lisa.init(params), params, adam.init(params)
  for i in range(3):
    p1, s1 = step_lisa(p1, s1, BATCHES[i % 2])
    p2, s2 = step_adam(p2, s2, BATCHES[i % 2])
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_checkpoint_round_trip_resumes_bit_exactly(tmp_path):
  graphdef, params0 = nnx.split(_model())
  tx = ow.owlore(1e-2, np.array([0.4, 0.1, 0.3, 0.2]), gamma=2, interval=3, rank=4,
                 update_proj_gap=2, seed=5)
  step = _train_step(graphdef, tx)

  def run(state, start, stop):
    for i in range(start, stop):
      state = step(*state, BATCHES[i % 2])
    return state

  full = run((params0, tx.init(params0)), 0, 10)
  half = run((params0, tx.init(params0)), 0, 4)
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(4, half, force=True)
    ckpt.wait()
    like = jax.eval_shape(lambda: half)
    restored, _ = ckpt.restore(like)
  assert tree_equal_bitwise(restored, half)
  sampler = ow.sampling_state(restored[1])
  assert sampler.active.dtype == jnp.bool_ and jnp.issubdtype(sampler.key.dtype,
                                                               jax.dtypes.prng_key)
  resumed = run(restored, 4, 10)
  assert tree_equal_bitwise(resumed, full)


def test_bad_configurations():
  with pytest.raises(ValueError, match="gamma"):
    ow.lisa(1e-3, 4, gamma=5)
  with pytest.raises(ValueError, match="positive sampling"):
    ow.owlore(1e-3, np.array([1.0, 0.0, 0.0, 0.0]), gamma=2)
  with pytest.raises(ValueError, match="positive sum"):
    ow.sampling_probabilities(np.zeros(3))
  with pytest.raises(ValueError, match="calibration"):
    ow.layer_outlier_distribution(_model(), [])
