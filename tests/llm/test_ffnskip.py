"""FFN-SkipLLM rule: exactness at threshold > 1, monotone skip ratio, a per-token Python reference."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import ffnskip
from llm.generate import Generator, SamplingParams, teacher_forced
from llm.model import CONFIGS, KVCache, Llama, LlamaConfig, rotary_angles

CONFIG = LlamaConfig(**{**CONFIGS["tiny"].__dict__, "num_layers": 6})


@pytest.fixture(scope="module")
def model():
  return Llama(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tokens():
  return np.asarray(jax.random.randint(jax.random.key(1), (2, 24), 0, CONFIG.vocab_size))


def test_threshold_above_one_equals_full_model(model, tokens):
  rule = ffnskip.adaptive_rule(6, 1, 5, threshold=1.01)
  full_nll, _, _ = teacher_forced(model, tokens)
  nll, ran, _ = teacher_forced(model, tokens, rule)
  np.testing.assert_array_equal(nll, full_nll)
  assert np.asarray(ran).all()


@pytest.mark.slow
def test_threshold_above_one_generation_unchanged(model):
  rule = ffnskip.adaptive_rule(6, 1, 5, threshold=1.01)
  generator = Generator(model)
  plain = generator.generate([[1, 2, 3]], SamplingParams(max_new_tokens=8))
  gated = generator.generate([[1, 2, 3]], SamplingParams(max_new_tokens=8), rule)
  assert plain.tokens == gated.tokens


def test_skip_ratio_monotone_in_threshold(model, tokens):
  ratios = []
  for threshold in np.linspace(0.0, 1.0, 11):
    _, ran, _ = teacher_forced(model, tokens, ffnskip.adaptive_rule(6, 1, 5, threshold))
    ratios.append(ffnskip.skip_stats(np.asarray(ran)).ratio)
  assert all(a >= b for a, b in zip(ratios, ratios[1:])), ratios
  assert ratios[0] > 0.2 and ratios[-1] == 0.0  # threshold 0: every other middle FFN skipped


@nnx.jit
def _attention_residual(layer, x, cos, sin, mask, kv, index):
  return x + layer.attn(layer.attn_norm(x), cos, sin, mask, kv, index)[0]


@nnx.jit
def _ffn_residual(layer, h):
  return h + layer.mlp(layer.mlp_norm(h))


def _reference_decode_step(model, token, cache, cold_start, cold_end, threshold, k):
  """One decode step, layer by layer in Python with if/else (Algorithm 1 of the paper)."""
  c = model.config
  cos, sin = rotary_angles(cache.index[None, None], c.head_dim, c.rope_theta)
  keys = jnp.arange(cache.max_len)
  mask = (keys[None, None, :] <= cache.index) & (keys[None, None, :] >= cache.start[:, None, None])
  x = model.embed(jnp.asarray([[token]]))
  remaining, ran = 0, []
  for i, layer in enumerate(model.layers):
    h = _attention_residual(layer, x, cos, sin, mask, (cache.keys[i], cache.values[i]),
                            cache.index)
    middle = cold_start <= i < cold_end
    if middle and remaining > 0:
      remaining -= 1
      x = h
      ran.append(False)
      continue
    x = _ffn_residual(layer, h)
    ran.append(True)
    if middle:
      a, b = np.asarray(h[0, 0], np.float64), np.asarray(x[0, 0], np.float64)
      if a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= threshold:
        remaining = k
  logits = model.embed.attend(model.norm(x)) if c.tie_embeddings else model.lm_head(model.norm(x))
  return np.asarray(logits[0, 0]), ran


@pytest.mark.parametrize("k", [1, 2])
def test_adaptive_decode_step_matches_reference(model, k):
  prompt = jnp.asarray([[4, 8, 15, 16, 23]])
  _, cache = model(prompt, cache=KVCache.init(CONFIG, 1, 8))
  # A threshold inside the range of this model's cosines, so some but not all FFNs skip.
  _, _, cosine = teacher_forced(model, np.asarray([[4, 8, 15, 16, 23, 42]]),
                                ffnskip.full_rule(6))
  threshold = float(np.median(np.asarray(cosine)[0, -1, 1:5]))
  rule = ffnskip.adaptive_rule(6, 1, 5, threshold, k)
  out = nnx.jit(lambda m, c, r: m.forward(jnp.asarray([[42]]), cache=c, ffn_gate=r))(
      model, cache, rule)
  ref_logits, ref_ran = _reference_decode_step(model, 42, cache, 1, 5, threshold, k)
  assert list(np.asarray(out.ffn_ran[0, 0])) == ref_ran
  assert not all(ref_ran)
  np.testing.assert_allclose(out.logits[0, 0], ref_logits, rtol=1e-5, atol=1e-6)


def test_random_and_static_baselines(model, tokens):
  rule = ffnskip.random_rule(6, 1, 5, ratio=0.3, key=jax.random.key(0))
  many = np.asarray(jax.random.randint(jax.random.key(2), (8, 64), 0, CONFIG.vocab_size))
  _, ran, _ = teacher_forced(model, many, rule)
  stats = ffnskip.skip_stats(np.asarray(ran))
  assert abs(stats.ratio - 0.3) < 0.03
  assert stats.per_layer[0] == 0 and stats.per_layer[5] == 0  # cold regions always run
  scores = np.array([0.1, 0.9, 0.2, 0.8, 0.95, 0.99])  # layer 5 is cold despite its score
  static = ffnskip.static_rule(6, 1, 5, ratio=2 / 6, layer_scores=scores)
  _, ran, _ = teacher_forced(model, tokens, static)
  np.testing.assert_array_equal(np.asarray(ran).all(axis=(0, 1)),
                                [True, False, True, True, False, True])


def test_skip_stats_of_no_selected_token_is_nan_not_all_skipped():
  ran = np.ones((8, 6), bool)  # every FFN ran ...
  none_selected = ffnskip.skip_stats(ran, np.zeros(8))  # ... but no token is measured
  assert np.isnan(none_selected.ratio) and np.isnan(none_selected.per_layer).all()
  some = ffnskip.skip_stats(ran, (np.arange(8) >= 4).astype(float))
  assert some.ratio == 0.0


def test_cold_regions_and_threshold_bisection():
  cosine = np.array([0.05, 0.9, 0.97, 0.98, 0.96, 0.97, 0.95, 0.7])
  assert ffnskip.cold_regions(cosine) == (2, 6)
  threshold, achieved = ffnskip.calibrate_threshold(lambda t: float(np.clip(1 - t, 0, 1) * 4),
                                                    0.25, iters=30)
  assert abs(achieved - 0.25) < 1e-6 and abs(threshold - 0.9375) < 1e-6
  with pytest.raises(ValueError):
    ffnskip.SkipRule.create("sometimes", 6, 1, 5)


def _dots(jaxpr, intermediate):
  """dot_generals of ``jaxpr`` (not of sub-jaxprs) that touch the MLP's intermediate size."""
  return [e for e in jaxpr.eqns if e.primitive.name == "dot_general"
          and any(intermediate in getattr(v.aval, "shape", ()) for v in e.invars + e.outvars)]


def test_gated_mlp_lives_only_inside_cond_branches(model):
  """Skipping saves compute only if no MLP matmul runs outside the ``lax.cond`` that skips it
  (a computed-then-masked MLP would show its dots at top level)."""
  _, cache = model(jnp.asarray([[4, 8, 15]]), cache=KVCache.init(CONFIG, 1, 8))
  rule = ffnskip.adaptive_rule(6, 1, 5, threshold=0.9)
  graphdef, state = nnx.split(model)
  step = lambda state, cache, rule: nnx.merge(graphdef, state).forward(
      jnp.asarray([[16]]), cache=cache, ffn_gate=rule).logits
  jaxpr = jax.make_jaxpr(step)(state, cache, rule).jaxpr
  inner = CONFIG.intermediate_size
  assert not _dots(jaxpr, inner)
  conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
  mlp_branches = [[len(_dots(b.jaxpr, inner)) for b in e.params["branches"]] for e in conds]
  assert sorted(mlp_branches) == [[0, 3]] * CONFIG.num_layers  # skip: no dots; run: 3
  ungated = jax.make_jaxpr(lambda s, c: nnx.merge(graphdef, s)(jnp.asarray([[16]]), cache=c)[0])(
      state, cache).jaxpr
  assert len(_dots(ungated, inner)) == 3 * CONFIG.num_layers  # the check sees MLP dots at all


def test_ffn_weight_share_counts_the_real_parameter_tree():
  from llm.skip_eval import ffn_weight_share
  config = CONFIGS["smollm2_135m"]
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  sizes = {"/".join(map(str, p)): np.prod(v.shape)
           for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
  kernels = {p: n for p, n in sizes.items() if p.endswith("kernel") or "embedding" in p}
  mlp = sum(n for p, n in kernels.items() if "/mlp/" in p)
  assert ffn_weight_share(config) == pytest.approx(mlp / sum(kernels.values()))
  assert 0.55 < ffn_weight_share(config) < 0.65  # SmolLM2: 79.6M of 134.5M weights in FFNs


def _hlo_computations(text):
  """Compiled HLO text -> {computation: (instruction lines, [(callee, via_conditional)])}."""
  comps, name = {}, None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
    if head:
      name = "ENTRY" if line.startswith("ENTRY") else head.group(1)
      comps[name] = ([], [])
    elif name and line.startswith("  "):
      comps[name][0].append(line)
      branches = re.search(r"branch_computations=\{([^}]*)\}", line)
      via_cond = set(re.findall(r"%([\w.\-]+)", branches.group(1))) if branches else set()
      for callee in re.findall(r"(?:calls|body|condition|to_apply|branch_computations)="
                               r"\{?%([\w.\-]+(?:, %[\w.\-]+)*)", line):
        for c in callee.split(", %"):
          comps[name][1].append((c, c in via_cond))
  return comps


def _mlp_dot_placement(text, intermediate):
  """(dots producing MLP activations reachable without entering a conditional branch, those
  only inside one); the up and gate projections are such dots, down_proj is in the same place."""
  comps = _hlo_computations(text)
  mlp_dots = {c: sum(1 for l in lines
                     if re.search(rf"= \w+\[[\d,]*\b{intermediate}\b[\d,]*\]\S* dot\(", l))
              for c, (lines, _) in comps.items()}
  outside, stack = set(), ["ENTRY"]
  while stack:
    c = stack.pop()
    if c not in outside and c in comps:
      outside.add(c)
      stack += [callee for callee, via_cond in comps[c][1] if not via_cond]
  top = sum(mlp_dots[c] for c in outside)
  return top, sum(mlp_dots.values()) - top


def test_compiled_decode_reads_mlp_weights_only_inside_conditionals(model):
  """On the optimized HLO of the jitted decode loop (what runs, after XLA's passes): the
  middle-region MLPs' dots sit only in ``conditional`` branches, so a skipped FFN reads none of
  its weights; cold-region layers (whose condition is constant) and the plain model have them
  at top level. Two dots per MLP (gate and up) produce the intermediate activations."""
  generator = Generator(model).with_stop_ids(())
  params = SamplingParams(max_new_tokens=4)
  key, warmup, temperature, top_p = generator._common(params)
  _, cache = generator.prefill([[4, 8, 15]], 4)
  first = jnp.zeros((1,), jnp.int32)

  def placement(rule):
    text = generator._decode.lower(generator.state, cache, first, key, rule, warmup, temperature,
                                   top_p, steps=4).compile().as_text()
    return _mlp_dot_placement(text, CONFIG.intermediate_size)

  assert CONFIG.intermediate_size not in (CONFIG.hidden_size, CONFIG.vocab_size, cache.max_len)
  assert placement(ffnskip.adaptive_rule(6, 1, 5, threshold=0.9)) == (2 * 2, 2 * 4)
  assert placement(None) == (2 * 6, 0)


def test_layer_drop_cost_equals_zeroing_that_ffn(model, tokens):
  """Skipping only layer l's FFN = the plain model with that FFN's output projection zeroed."""
  from llm.skip_eval import layer_drop_cost
  split = nnx.split(model)
  costs = layer_drop_cost(split, tokens, warmup=0)
  full = np.exp(np.mean(teacher_forced(model, tokens)[0]))
  for layer in (0, 3):
    zeroed = nnx.clone(model)  # a deep copy: merge(*split(model)) would share the Variables
    zeroed.layers[layer].mlp.down_proj.kernel[...] = 0.0
    ppl = np.exp(np.mean(teacher_forced(zeroed, tokens)[0]))
    np.testing.assert_allclose(costs[layer], ppl / full - 1.0, rtol=1e-4, atol=1e-6)
  assert costs.shape == (CONFIG.num_layers,) and np.all(costs != 0)
