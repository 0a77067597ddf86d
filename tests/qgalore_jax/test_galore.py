"""GaLore / Q-GaLore transforms against independent references: a numpy transcription of the
official update rule, optax.contrib.scale_by_galore, and the lazy-refresh schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import qgalore_jax as qg

SHAPES = {"wide": (12, 20), "tall": (20, 12), "square": (16, 16)}  # Flax (in, out) kernels


def _grads(step, params, seed=0):
  key = jax.random.fold_in(jax.random.key(seed), step)
  return {name: jax.random.normal(jax.random.fold_in(key, i), p.shape)
          for i, (name, p) in enumerate(sorted(params.items()))}


def _official_galore_numpy(grad_seq, rank, gap, alpha, lr, b1, b2, eps):
  """The official GaLore AdamW (jiaweizzhao/GaLore, galore_torch/adamw.py +
  galore_projector.py, proj_type='std') in plain numpy on the torch (out, in) layout."""
  grad_seq = [np.asarray(g, np.float32).T for g in grad_seq]
  w = np.zeros_like(grad_seq[0])
  exp_avg = exp_avg_sq = None
  for step, g in enumerate(grad_seq):
    m, n = g.shape
    if step % gap == 0:
      u, _, vh = scipy.linalg.svd(g, full_matrices=False, lapack_driver="gesdd")
      p = vh[:rank] if m >= n else u[:, :rank]
    r = g @ p.T if m >= n else p.T @ g
    if exp_avg is None:
      exp_avg, exp_avg_sq = np.zeros_like(r), np.zeros_like(r)
    t = step + 1
    exp_avg = b1 * exp_avg + (1 - b1) * r
    exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * r * r
    step_size = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    norm_grad = exp_avg / (np.sqrt(exp_avg_sq) + eps)
    # the official back-projection picks its side from the low-rank gradient's shape
    back = norm_grad @ p if norm_grad.shape[0] >= norm_grad.shape[1] else p @ norm_grad
    w = w - step_size * alpha * back
  return w.T  # back to Flax (in, out)


def _run(opt, params, steps, seed=0):
  state = opt.init(params)
  update = jax.jit(opt.update)
  grad_seq = []
  for step in range(steps):
    grads = _grads(step, params, seed)
    grad_seq.append(grads)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state, grad_seq


def test_galore_matches_official_numpy_rule_across_refreshes():
  params = {name: jnp.zeros(shape) for name, shape in SHAPES.items()}
  rank, gap, alpha, lr, b1, b2, eps = 4, 3, 0.25, 0.01, 0.9, 0.999, 1e-6
  opt = qg.galore(lr, rank=rank, update_proj_gap=gap, scale=alpha, b1=b1, b2=b2, eps=eps)
  final, state, grad_seq = _run(opt, params, steps=8)
  for name in SHAPES:
    expected = _official_galore_numpy([g[name] for g in grad_seq], rank, gap, alpha, lr, b1,
                                      b2, eps)
    np.testing.assert_allclose(final[name], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
  counts = qg.svd_counts(state)
  assert counts["per_layer"] == {f"['{n}']": 3 for n in SHAPES}  # steps 0, 3, 6
  assert counts["total"] == 9


def test_torch_side_differs_from_naive_side_on_square_matrices():
  params = {"square": jnp.zeros((16, 16))}
  torch_state = qg.scale_by_galore(rank=4, proj_side="torch").init(params)
  naive_state = qg.scale_by_galore(rank=4, proj_side="smaller").init(params)
  # torch reduces the Flax rows (R = P^T G, P: (16, 4)); the naive rule the columns (P: (4, 16))
  assert torch_state.layers["square"].projector.shape == (16, 4)
  assert naive_state.layers["square"].projector.shape == (4, 16)


@pytest.mark.parametrize("shape", list(SHAPES.values()))
def test_optax_eps_and_larger_side_match_optax_contrib(shape):
  params = {"w": jnp.zeros(shape), "bias": jnp.zeros((5,))}
  ours = qg.scale_by_galore(rank=4, update_proj_gap=3, scale=0.5, proj_side="larger",
                            eps_placement="optax", eps=1e-8)
  ref = optax.contrib.scale_by_galore(rank=4, update_proj_gap=3, scale=0.5)
  s_ours, s_ref = ours.init(params), ref.init(params)
  update_ours, update_ref = jax.jit(ours.update), jax.jit(ref.update)
  for step in range(7):
    grads = _grads(step, params)
    u_ours, s_ours = update_ours(grads, s_ours)
    u_ref, s_ref = update_ref(grads, s_ref)
    for name in params:
      np.testing.assert_allclose(u_ours[name], u_ref[name], rtol=2e-5, atol=1e-6)


def test_official_and_optax_eps_placement_differ_early():
  g = {"w": jnp.full((4, 6), 1e-7)}
  official = qg.scale_by_adam_official(eps=1e-6, eps_placement="official")
  as_optax = qg.scale_by_adam_official(eps=1e-6, eps_placement="optax")
  u1, _ = official.update(g, official.init(g))
  u2, _ = as_optax.update(g, as_optax.init(g))
  ref, _ = optax.scale_by_adam(eps=1e-6).update(g, optax.scale_by_adam(eps=1e-6).init(g))
  np.testing.assert_allclose(u2["w"], ref["w"], rtol=1e-6)
  # official: bc * m / (sqrt(v) + eps) with m = 0.1 g, sqrt(v) = sqrt(0.001) g, bc = sqrt(.001)/.1
  expected = np.sqrt(1e-3) / 0.1 * (0.1e-7) / (np.sqrt(1e-3) * 1e-7 + 1e-6)
  np.testing.assert_allclose(u1["w"], expected, rtol=1e-5)
  assert not np.allclose(u1["w"], u2["w"], rtol=1e-2)


def _lazy_schedule(similarities, steps, gap, queue_size=5, threshold=0.4, gamma=2):
  """The paper's rule as a plain Python loop: returns (svd_count, final gap).
  ``similarities(k)`` is the cosine seen at the k-th refresh (k >= 1)."""
  queue, count = [], 0
  for step in range(steps):
    if step % gap == 0:
      if count:
        queue = (queue + [similarities(count)])[-queue_size:]
        if len(queue) == queue_size and sum(queue) / queue_size >= threshold:
          gap = int(gap * gamma)
      count += 1
  return count, gap


def _stream(kind, step, shape=(24, 40)):
  a = np.zeros(shape, np.float32)
  if kind == "fixed":
    a[0, :] = np.linspace(1, 2, shape[1])
    a[1, :3] = 0.1
  elif kind == "rotating":  # the dominant direction moves to a new orthogonal axis each step
    a[step % shape[0], :] = np.linspace(1, 2, shape[1])
  return {"w": jnp.asarray(a)}


@pytest.mark.parametrize("kind,similarity", [("fixed", 1.0), ("rotating", 0.0)])
def test_lazy_refresh_schedule(kind, similarity):
  steps, gap = 70, 2
  opt = qg.scale_by_qgalore(rank=2, update_proj_gap=gap, moments_8bit=False)
  params = {"w": jnp.zeros((24, 40))}
  state = opt.init(params)
  update = jax.jit(opt.update)
  for step in range(steps):
    _, state = update(_stream(kind, step), state)
  layer = state.layers["w"]
  expected_count, expected_gap = _lazy_schedule(lambda k: similarity, steps, gap)
  assert int(layer.svd_count) == expected_count
  assert int(layer.gap) == expected_gap
  if kind == "fixed":
    assert expected_gap > gap and expected_count <= 11  # doubled on schedule: 0,2,..,10,12,16,32,64
    np.testing.assert_allclose(layer.queue, 1.0, atol=1e-5)
  else:
    assert expected_gap == gap and expected_count == steps // gap
    np.testing.assert_allclose(layer.queue, similarity, atol=1e-5)


def test_similarity_has_no_absolute_value():
  from qgalore_jax.galore import _Config, _init_layer, _refresh
  cfg = _Config(2, 1, 1.0, "torch", None, 256, False, True, 0.4, 2.0, 2)
  g = jnp.asarray(_stream("fixed", 0)["w"])
  layer = _refresh(_init_layer(g, cfg), g, cfg)
  flipped = layer._replace(first_vector=-layer.first_vector)
  layer = _refresh(_refresh(flipped, g, cfg)._replace(first_vector=-layer.first_vector), g, cfg)
  np.testing.assert_allclose(layer.queue, [-1.0, -1.0], atol=1e-5)
  assert int(layer.gap) == 1  # a full queue with mean -1 never grows the gap


def test_nonfinite_gradient_keeps_projector_and_retries():
  opt = qg.scale_by_galore(rank=3, update_proj_gap=3)
  params = {"w": jnp.zeros((10, 14))}
  state = opt.init(params)
  update = jax.jit(opt.update)
  projectors = []
  for step in range(7):
    grads = _grads(step, params)
    if step == 3:
      grads = {"w": grads["w"].at[2, 5].set(jnp.nan)}
    _, state = update(grads, state)
    projectors.append(np.asarray(state.layers["w"].projector))
    assert np.all(np.isfinite(projectors[-1]))
  layer = state.layers["w"]
  np.testing.assert_array_equal(projectors[3], projectors[2])  # kept at the bad refresh
  assert not np.allclose(projectors[4], projectors[3])        # retried at the next step
  assert int(layer.nonfinite_count) == 1
  assert int(layer.svd_count) == 3  # steps 0, 4 (retry), 6
  assert qg.svd_counts(state)["nonfinite"] == 1


def test_qgalore_projector_is_packed_int4_and_close_to_float():
  params = {"w": jnp.zeros((64, 96))}
  g = _grads(0, params)
  q_state = qg.scale_by_qgalore(rank=8, moments_8bit=False).init(params)
  _, q_state = qg.scale_by_qgalore(rank=8, moments_8bit=False).update(g, q_state)
  _, f_state = qg.scale_by_galore(rank=8).update(g, qg.scale_by_galore(rank=8).init(params))
  q = q_state.layers["w"].projector
  assert isinstance(q, qg.QTensor) and q.bits == 4 and q.data.dtype == jnp.uint8
  assert q.data.size == 64 * 8 // 2
  dense = qg.dequantize(q)
  f = f_state.layers["w"].projector
  assert np.max(np.abs(dense - f)) <= np.max(q.scale) / 2 + 1e-6


def test_vmap_over_independent_problems():
  opt = qg.scale_by_galore(rank=3, update_proj_gap=2)
  params = {"w": jnp.zeros((3, 10, 14))}
  grads = [{"w": jax.random.normal(jax.random.key(s), (3, 10, 14))} for s in range(3)]
  state = jax.vmap(opt.init)(params)
  step = jax.jit(jax.vmap(opt.update))
  outs = []
  for g in grads:
    u, state = step(g, state)
    outs.append(u["w"])
  for i in range(3):
    single = opt.init({"w": params["w"][i]})
    for t, g in enumerate(grads):
      u, single = opt.update({"w": g["w"][i]}, single)
      np.testing.assert_allclose(outs[t][i], u["w"], rtol=1e-5, atol=1e-7)


def test_partition_with_llama_labels_and_svd_counts():
  from flax import nnx
  from llm.model import CONFIGS, Llama
  model = Llama(CONFIGS["tiny"], rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  labels = qg.projected_labels(params)
  opt = optax.partition({"galore": qg.galore(1e-3, rank=8, update_proj_gap=2),
                         "adamw": optax.adamw(1e-3)}, labels)
  state = opt.init(params)
  grads = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape),
                       params)
  update = jax.jit(opt.update)
  for _ in range(3):
    _, state = update(grads, state, params)
  counts = qg.svd_counts(state)
  n_layers = CONFIGS["tiny"].num_layers
  assert len(counts["per_layer"]) == 7 * n_layers
  assert all(c == 2 for c in counts["per_layer"].values())  # steps 0 and 2
  assert all("attn" in k or "mlp" in k for k in counts["per_layer"])


@pytest.mark.slow
def test_fsdp_sharded_gradients_give_the_same_update():
  from jaxrepro.testing import run_with_devices
  out = run_with_devices("""
    import jax, jax.numpy as jnp, numpy as np
    import qgalore_jax as qg
    from jaxrepro.mesh import make_mesh, shard_fsdp
    mesh = make_mesh("data=2,fsdp=4")
    params = {"w": jnp.zeros((64, 96)), "v": jnp.zeros((96, 32))}
    grads = {k: jax.random.normal(jax.random.key(i), p.shape) for i, (k, p) in
             enumerate(params.items())}
    opt = qg.qgalore(0.01, rank=8, update_proj_gap=2, moments_8bit=False)
    def run(params, grads):
      state = opt.init(params)
      step = jax.jit(opt.update)
      for _ in range(3):
        u, state = step(grads, state, params)
      return u
    plain = run(params, grads)
    sharded_grads = shard_fsdp(grads, mesh)
    assert not sharded_grads["w"].sharding.is_fully_replicated
    sharded = run(shard_fsdp(params, mesh), sharded_grads)
    for k in params:
      np.testing.assert_allclose(np.asarray(sharded[k]), np.asarray(plain[k]), rtol=1e-4,
                                 atol=1e-6)
    print("ok")
  """)
  assert out.strip().endswith("ok")
