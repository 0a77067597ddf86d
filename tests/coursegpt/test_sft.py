"""LoRA SFT on a tiny random decoder with SmolLM2's tokenizer."""

import jax
import numpy as np
import pytest
from flax import nnx

from coursegpt.sft import SFTConfig, encode_pairs, merged_copy, train_lora
from coursegpt.stages import load_adapters, save_adapters
from llm.model import Llama, LlamaConfig
from qgalore_jax.lora import LoRAParam

PAIRS = [{"question": "What does len() return?", "answer": "The number of items."},
         {"question": "Is a tuple mutable?", "answer": "No, tuples are immutable."}]


@pytest.fixture(scope="module")
def tokenizer():
  from llm.gguf_loader import smollm2_path
  from llm.tokenizer import tokenizer_from_gguf
  try:
    return tokenizer_from_gguf(smollm2_path())
  except FileNotFoundError as e:
    pytest.skip(str(e))


def tiny_model(seed=0):
  config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                       num_heads=2, num_kv_heads=1, tie_embeddings=True, max_seq_len=128)
  return Llama(config, rngs=nnx.Rngs(seed))


def test_encode_pairs_masks_exactly_the_answer(tokenizer):
  tokens, mask = encode_pairs(PAIRS, tokenizer, 64)
  assert tokens.shape == mask.shape == (2, 64)
  for row, pair in enumerate(PAIRS):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": pair["question"]}])
    n_prompt = len(tokenizer.encode(prompt))
    assert tokenizer.decode(tokens[row, :n_prompt], skip_special=False) == prompt
    answer_ids = tokens[row][mask[row] == 1]
    assert tokenizer.decode(answer_ids, skip_special=False) == pair["answer"] + "<|im_end|>"
    assert mask[row, :n_prompt].sum() == 0
    assert (tokens[row][mask[row] == 0][n_prompt:] == tokenizer.pad_id).all()
  with pytest.raises(ValueError, match="does not fit"):
    encode_pairs(PAIRS, tokenizer, 8)


def test_answer_loss_matches_numpy_reference(tokenizer):
  from coursegpt.sft import answer_loss
  model = tiny_model(1)
  tokens, mask = encode_pairs(PAIRS, tokenizer, 48)
  logits = np.asarray(model(tokens[:, :-1])[0], np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  expected = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
  assert float(answer_loss(model, tokens, mask)) == pytest.approx(expected, rel=1e-5)


def test_lora_sft_fits_pairs_and_adapters_round_trip(tokenizer, tmp_path):
  model = tiny_model()
  base_kernel = np.asarray(model.layers[0].attn.q_proj.kernel.get_value())
  config = SFTConfig(rank=4, alpha=8, learning_rate=5e-2, steps=20, batch_size=2, max_len=48,
                     targets=("q_proj", "v_proj", "up_proj"))
  result = train_lora(model, tokenizer, PAIRS, config, held_out=PAIRS)
  # rank 4 x (in + out) per adapted linear: q (32 -> 32), v (32 -> 16), up (32 -> 64); 2 layers.
  assert result.trainable_params == 2 * 4 * ((32 + 32) + (32 + 16) + (32 + 64))
  # A tiny random model's logits are small (tied 0.02-std embeddings after RMSNorm), so its
  # loss starts near log(vocab) and moves slowly; 0.3 nats is far beyond noise.
  assert result.losses[-1] < result.losses[0] - 0.3
  assert result.eval_loss_before == pytest.approx(result.losses[0], rel=1e-5)  # same pairs
  assert result.eval_loss_after < result.eval_loss_before - 0.3
  # Only the adapters trained: the frozen base kernel is bit-identical.
  np.testing.assert_array_equal(model.layers[0].attn.q_proj.kernel.get_value(), base_kernel)

  tokens, _ = encode_pairs(PAIRS, tokenizer, 48)
  logits, _ = model(tokens)
  merged_logits, _ = merged_copy(model)(tokens)
  np.testing.assert_allclose(merged_logits, logits, atol=2e-4)

  save_adapters(model, config, tmp_path)
  restored = load_adapters(tiny_model(), tmp_path)
  np.testing.assert_array_equal(restored(tokens)[0], logits)
  assert len(nnx.state(restored, LoRAParam)) > 0


def test_merged_weights_serve_through_the_base_engine(tokenizer):
  from coursegpt.serving import engine_with_weights, make_engine
  from coursegpt.sft import merged_into
  from coursegpt.sft import add_adapters
  from qgalore_jax.lora import lora_layers
  adapted = add_adapters(tiny_model(), SFTConfig(rank=4, alpha=8))
  rng = np.random.default_rng(0)
  for layer in lora_layers(adapted):  # as if trained: B away from its zero init
    layer.lora_b.set_value(rng.normal(0, 0.5, layer.lora_b.get_value().shape).astype(np.float32))
  plain = merged_into(tiny_model(), adapted)
  assert not any("lora" in str(path) for path, _ in nnx.to_flat_state(nnx.state(plain)))
  tokens, _ = encode_pairs(PAIRS, tokenizer, 48)
  np.testing.assert_allclose(plain(tokens)[0], adapted(tokens)[0], atol=2e-4)

  base_engine = make_engine(tiny_model(), tokenizer, model_name="tiny", prompt_bucket=64)
  tuned = engine_with_weights(base_engine, plain, "tiny+lora")
  fresh = make_engine(plain, tokenizer, model_name="tiny+lora", prompt_bucket=64)
  body = {"max_tokens": 6}
  prompt = "What is a list?"
  assert tuned.complete(prompt, body) == fresh.complete(prompt, body)
  assert tuned.complete(prompt, body) != base_engine.complete(prompt, body)
  with pytest.raises(ValueError, match="parameter tree"):
    engine_with_weights(base_engine, adapted, "x")


def test_fresh_models_do_not_share_weights_with_the_engine(tokenizer, tmp_path):
  from coursegpt.pipeline import Backends
  from coursegpt.serving import make_engine
  from coursegpt.sft import add_adapters, merged_into
  from qgalore_jax.lora import lora_layers
  with Backends(tmp_path) as backends:
    backends._engine = make_engine(tiny_model(), tokenizer, model_name="tiny")
    before = [np.asarray(x) for x in jax.tree.leaves(backends.engine.generator.state)]
    adapted = add_adapters(backends.fresh_model(), SFTConfig(rank=2, alpha=4))
    for layer in lora_layers(adapted):
      layer.lora_b.set_value(np.ones(layer.lora_b.get_value().shape, np.float32))
    plain = merged_into(backends.fresh_model(), adapted)
    tokens, _ = encode_pairs(PAIRS, tokenizer, 48)
    np.testing.assert_allclose(plain(tokens)[0], adapted(tokens)[0], atol=2e-4)
    after = jax.tree.leaves(backends.engine.generator.state)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, after))
    assert not np.array_equal(backends.fresh_model()(tokens)[0], plain(tokens)[0])
