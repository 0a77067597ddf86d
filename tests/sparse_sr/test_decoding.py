"""CTC loss and prefix scores against brute-force enumeration; greedy and beam decoding."""

import itertools

import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.special import logsumexp

from sparse_sr.decoding import (CTCPrefixScorer, beam_search, error_rates, greedy_attention,
                               greedy_ctc, strip_eos)
from sparse_sr.losses import ctc_losses, decoder_io
from sparse_sr.tokenizer import BLANK, SOS_EOS


def collapse(path):
  out = []
  for i, c in enumerate(path):
    if c != BLANK and (i == 0 or c != path[i - 1]):
      out.append(c)
  return out


def brute_force_log_probs(log_probs):
  """log P(labelling) summed over all V^T alignments, for every labelling reached."""
  T, V = log_probs.shape
  totals = {}
  for path in itertools.product(range(V), repeat=T):
    labels = tuple(collapse(path))
    score = sum(log_probs[t, c] for t, c in enumerate(path))
    totals.setdefault(labels, []).append(score)
  return {k: logsumexp(v) for k, v in totals.items()}


def random_log_probs(T, V, seed):
  logits = np.random.default_rng(seed).normal(size=(T, V)) * 2
  return logits - logsumexp(logits, axis=1, keepdims=True)


def test_ctc_loss_matches_enumeration_with_padding():
  T, V = 5, 4
  log_probs = random_log_probs(T, V, 0)
  table = brute_force_log_probs(log_probs)
  labels = [(2, 3), (2, 2), (3,)]
  tokens = np.zeros((3, 4), np.int32)
  for i, y in enumerate(labels):
    tokens[i, :len(y)] = y
  # the same utterance, padded with two garbage frames that must be ignored
  logits = np.concatenate([np.stack([log_probs] * 3),
                           np.random.default_rng(1).normal(size=(3, 2, V))], axis=1)
  valid = np.arange(T + 2)[None, :] < T
  losses = ctc_losses(jnp.asarray(logits), jnp.asarray(np.repeat(valid, 3, 0)),
                      jnp.asarray(tokens), jnp.asarray([len(y) for y in labels]))
  np.testing.assert_allclose(losses, [-table[y] for y in labels], rtol=1e-4)


def test_ctc_prefix_scores_match_enumeration():
  T, V = 4, 4  # ids 0 blank, 1 eos (never emitted by CTC here), 2 and 3 labels
  log_probs = random_log_probs(T, V, 2)
  log_probs[:, SOS_EOS] = -1e9  # CTC never emits <eos>; rows must still sum to one
  log_probs -= logsumexp(log_probs, axis=1, keepdims=True)
  table = brute_force_log_probs(log_probs)
  scorer = CTCPrefixScorer(log_probs)
  state, prefix = scorer.initial_state(), []
  for step in [2, 3]:
    psi, states = scorer.extend(prefix, state)
    for c in (2, 3):
      starts_with = [v for k, v in table.items() if list(k[:len(prefix) + 1]) == prefix + [c]]
      np.testing.assert_allclose(psi[c], logsumexp(starts_with), rtol=1e-6)
    exact = table.get(tuple(prefix), -np.inf)
    np.testing.assert_allclose(psi[SOS_EOS], exact, rtol=1e-6)
    state, prefix = (states[0][:, step], states[1][:, step]), prefix + [step]


def test_greedy_ctc_collapses_repeats_and_blanks():
  path = np.asarray([[0, 2, 2, 0, 2, 3, 3, 0, 5]])
  logits = np.eye(6)[path] * 5.0
  valid = np.ones((1, 9), bool)
  valid[0, 8] = False  # the last frame is padding
  assert greedy_ctc(logits, valid) == [[2, 2, 3]]


def test_decoder_io_shifts_and_terminates():
  inputs, targets, valid = decoder_io(jnp.asarray([[5, 6, 7], [8, 0, 0]]), jnp.asarray([3, 1]))
  np.testing.assert_array_equal(inputs, [[SOS_EOS, 5, 6, 7], [SOS_EOS, 8, 0, 0]])
  np.testing.assert_array_equal(targets, [[5, 6, 7, SOS_EOS], [8, SOS_EOS, 0, 0]])
  np.testing.assert_array_equal(valid, [[1, 1, 1, 1], [1, 1, 0, 0]])


def _tiny_model(vocab=8):
  from sparse_sr.conformer import ConformerConfig
  from sparse_sr.decoder import DecoderConfig
  from sparse_sr.model import ModelConfig, SpeechRecognizer
  config = ModelConfig(vocab_size=vocab, encoder=ConformerConfig(32, 2, 1, conv_kernel=3),
                       decoder=DecoderConfig(1, 2), subsample_channels=4)
  return SpeechRecognizer(config, rngs=nnx.Rngs(3))


def test_beam_of_one_is_the_greedy_path():
  model = _tiny_model()
  rng = np.random.default_rng(0)
  memory = rng.normal(size=(1, 6, 32)).astype(np.float32)
  valid = np.ones((1, 6), bool)
  # greedy attention decoding, written independently: feed back the argmax until <eos>
  tokens = [SOS_EOS]
  for _ in range(7):
    logits = model.decode(jnp.asarray([tokens]), jnp.asarray(memory), jnp.asarray(valid))
    logits = np.asarray(logits[0, -1]).copy()
    logits[BLANK] = -np.inf
    if len(tokens) == 7:
      break
    nxt = int(np.argmax(logits))
    if nxt == SOS_EOS:
      break
    tokens.append(nxt)
  ctc = random_log_probs(6, 8, 1)
  assert beam_search(model, memory, valid, ctc, beam=1, ctc_weight=0.0) == tokens[1:]
  batched = greedy_attention(model, jnp.asarray(memory), jnp.asarray(valid), 6)
  assert strip_eos(np.asarray(batched)[0]) == tokens[1:]


def test_beam_search_with_pure_ctc_finds_the_most_probable_labelling():
  model = _tiny_model(vocab=4)
  T = 4
  log_probs = random_log_probs(T, 4, 5)
  log_probs[:, SOS_EOS] = -1e9
  log_probs -= logsumexp(log_probs, axis=1, keepdims=True)
  table = brute_force_log_probs(log_probs)
  best = max(table, key=table.get)
  memory = np.zeros((1, T, 32), np.float32)
  result = beam_search(model, memory, np.ones((1, T), bool), log_probs, beam=8, ctc_weight=1.0)
  assert tuple(result) == best


def test_error_rates_use_jiwer_definitions():
  rates = error_rates(["one two three", "four"], ["one too three", "four"])
  assert rates["wer"] == 1 / 4
  assert np.isclose(rates["cer"], 1 / 17)  # "two" -> "too": one substitution in 13 + 4 chars
  assert rates["sentence_accuracy"] == 0.5


def test_candidate_scores_are_hybrid_losses_of_each_transcript():
  from sparse_sr.decoding import score_candidates
  from sparse_sr.losses import attention_losses
  model = _tiny_model()
  rng = np.random.default_rng(4)
  memory = jnp.asarray(rng.normal(size=(2, 6, 32)), jnp.float32)
  valid = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], bool)
  tokens = jnp.asarray([[2, 3, 0], [4, 5, 6]])
  lengths = jnp.asarray([2, 3])
  scores = score_candidates(model, memory, valid, tokens, lengths, ctc_weight=0.25)
  assert scores.shape == (2, 2)
  for k in range(2):
    cand = jnp.broadcast_to(tokens[k], (2, 3))
    ctc = ctc_losses(model.ctc_logits(memory), valid, cand, jnp.broadcast_to(lengths[k], (2,)))
    inputs, targets, target_valid = decoder_io(cand, jnp.broadcast_to(lengths[k], (2,)))
    att = attention_losses(model.decode(inputs, memory, valid), targets, target_valid, 0.0)
    np.testing.assert_allclose(scores[:, k], 0.25 * ctc + 0.75 * att, rtol=1e-5)
