"""Model properties: padding invariance, causality, modalities, and the train step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparse_sr.conformer import ConformerConfig, rotary
from sparse_sr.decoder import DecoderConfig
from sparse_sr.losses import hybrid_loss
from sparse_sr.model import ModelConfig, SpeechRecognizer, model_config_from_dict, preset
from sparse_sr.visual import VisualConfig

NANO = dict(encoder=ConformerConfig(32, 2, 1, conv_kernel=5, dropout=0.0),
            decoder=DecoderConfig(1, 2, dropout=0.0), subsample_channels=4,
            visual=VisualConfig(4, (4, 8, 8, 8), 1), fusion_hidden=16)


def audio_batch(rng, lengths, width, token_lengths, token_width):
  audio = np.zeros((len(lengths), width), np.float32)
  tokens = np.zeros((len(lengths), token_width), np.int32)
  for i, (n, k) in enumerate(zip(lengths, token_lengths)):
    audio[i, :n] = rng.normal(size=n) * 0.1
    tokens[i, :k] = rng.integers(2, 10, k)
  return {"audio": audio, "audio_len": np.asarray(lengths), "tokens": tokens,
          "token_len": np.asarray(token_lengths), "valid": np.ones(len(lengths), bool)}


def test_loss_is_invariant_to_padding():
  model = SpeechRecognizer(ModelConfig(vocab_size=12, **NANO), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = audio_batch(rng, [9000, 12000], 12800, [4, 6], 8)
  padded = {k: v.copy() for k, v in batch.items()}
  padded["audio"] = np.pad(batch["audio"], ((0, 0), (0, 6400)))
  padded["tokens"] = np.pad(batch["tokens"], ((0, 0), (0, 8)))
  loss_fn = nnx.jit(lambda m, b: hybrid_loss(m, b))
  a, aux_a = loss_fn(model, batch)
  b, aux_b = loss_fn(model, padded)
  np.testing.assert_allclose(aux_a["losses"], aux_b["losses"], rtol=2e-5)
  np.testing.assert_allclose(a, b, rtol=2e-5)
  # and an utterance's loss does not depend on its batch neighbours
  alone = {k: v[1:] for k, v in batch.items()}
  np.testing.assert_allclose(loss_fn(model, alone)[1]["losses"], aux_a["losses"][1:], rtol=2e-5)


def test_decoder_is_causal():
  model = SpeechRecognizer(ModelConfig(vocab_size=12, **NANO), rngs=nnx.Rngs(1))
  memory = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 32)), jnp.float32)
  valid = jnp.ones((1, 5), bool)
  a = model.decode(jnp.asarray([[1, 4, 5, 6]]), memory, valid)
  b = model.decode(jnp.asarray([[1, 4, 9, 2]]), memory, valid)
  np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-5)
  assert not np.allclose(a[:, 2:], b[:, 2:])


def test_rotary_makes_scores_depend_on_offsets_only():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 8)), jnp.float32)
  score = lambda i, j: float(jnp.sum(rotary(q, jnp.asarray([i]))
                                     * rotary(k, jnp.asarray([j]))))
  np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-5)
  assert not np.isclose(score(3, 1), score(3, 2))


def test_video_and_audio_visual_models_align_streams():
  rng = np.random.default_rng(0)
  batch = audio_batch(rng, [12800, 7000], 12800, [3, 2], 8)
  batch["video"] = rng.integers(0, 255, (2, 20, 44, 44)).astype(np.uint8)
  batch["video_len"] = np.asarray([20, 11])
  for modality in ("video", "av"):
    model = SpeechRecognizer(ModelConfig(vocab_size=12, modality=modality, **NANO),
                             rngs=nnx.Rngs(0))
    memory, valid = model.encode(batch)
    assert memory.shape == (2, 20, 32)
    # 7000 audio samples and 11 video frames both end at 25 fps frame 11
    np.testing.assert_array_equal(np.asarray(valid).sum(1), [20, 11])
    loss, aux = hybrid_loss(model, batch, rngs=nnx.Rngs(dropout=0, augment=1))
    assert np.isfinite(loss) and aux["losses"].shape == (2,)


def test_presets_scale_to_the_paper_size():
  base = preset("conformer-base", 40)
  assert (base.encoder.d_model, base.encoder.num_layers, base.decoder.num_layers) == (768, 12, 6)
  model = nnx.eval_shape(lambda: SpeechRecognizer(base, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert 150e6 < count < 300e6  # 12 x d=768 Conformer + 6-layer decoder
  assert model_config_from_dict(dataclasses.asdict(base)) == base


def test_tempo_perturbation_is_for_audio_only_models():
  assert preset("conformer-nano", 40, tempo_change=0.1).tempo_change == 0.1
  with pytest.raises(ValueError, match="audio-only"):
    preset("conformer-nano", 40, "av", tempo_change=0.1)
