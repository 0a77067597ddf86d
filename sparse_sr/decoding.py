"""Decoding: greedy CTC and joint CTC/attention beam search, plus WER/CER with jiwer.

The joint search follows Watanabe et al. 2017 (IEEE JSTSP 11(8), Sec. IV, Algorithm 2):
a hypothesis ``h`` is scored by ``lam * log p_ctc(h...) + (1 - lam) * log p_att(h)``, where
the CTC term is the prefix probability (all label sequences starting with ``h``), computed
with the forward variables ``r^n_t, r^b_t`` of the prefix and extended to every candidate
token at once. The attention decoder is evaluated on fixed-width prefixes so one compiled
function serves every step.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparse_sr.tokenizer import BLANK, SOS_EOS

NEG_INF = -1e30


def greedy_ctc(logits: np.ndarray, valid: np.ndarray) -> list[list[int]]:
  """Best path: argmax per frame, merge repeats, drop blanks (per utterance)."""
  best = np.asarray(jnp.argmax(logits, axis=-1))
  out = []
  for path, ok in zip(best, np.asarray(valid)):
    path = path[ok]
    keep = np.ones(len(path), bool)
    keep[1:] = path[1:] != path[:-1]
    out.append([int(t) for t in path[keep] if t != BLANK])
  return out


def greedy_attention(model, memory: jax.Array, valid: jax.Array, max_len: int) -> jax.Array:
  """Batched greedy decoding with the attention decoder (jittable): ``(batch, max_len)``
  token ids, zero after each utterance's <eos>. Prefixes have a fixed width, so one
  compiled decoder call serves every position."""
  batch = memory.shape[0]
  tokens = jnp.zeros((batch, max_len + 1), jnp.int32).at[:, 0].set(SOS_EOS)

  def body(i, carry):
    tokens, done = carry
    logits = model.decode(tokens, memory, valid)[:, i]
    logits = logits.at[:, BLANK].set(-jnp.inf)
    nxt = jnp.where(done, BLANK, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
    tokens = tokens.at[:, i + 1].set(nxt)
    return tokens, done | (nxt == SOS_EOS)
  tokens, _ = jax.lax.fori_loop(0, max_len, body, (tokens, jnp.zeros(batch, bool)))
  return tokens[:, 1:]


def candidate_tokens(tokenizer, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens (K, L), lengths (K,))``: the candidate transcripts, zero-padded."""
  encoded = [tokenizer.encode(c) for c in candidates]
  tokens = np.zeros((len(encoded), max(map(len, encoded))), np.int32)
  for i, ids in enumerate(encoded):
    tokens[i, :len(ids)] = ids
  return tokens, np.asarray([len(ids) for ids in encoded], np.int32)


def score_candidates(model, memory: jax.Array, valid: jax.Array, tokens: jax.Array,
                     token_len: jax.Array, ctc_weight: float) -> jax.Array:
  """Hybrid negative log-likelihoods ``(batch, K)`` of K candidate transcripts
  ``tokens (K, L)`` for every utterance: closed-vocabulary recognition (e.g. isolated digits)
  picks the argmin."""
  from sparse_sr.losses import attention_losses, ctc_losses, decoder_io
  batch = memory.shape[0]
  ctc_logits = model.ctc_logits(memory)

  def one(candidate, length):
    cand = jnp.broadcast_to(candidate, (batch,) + candidate.shape)
    lengths = jnp.broadcast_to(length, (batch,))
    ctc = ctc_losses(ctc_logits, valid, cand, lengths)
    inputs, targets, target_valid = decoder_io(cand, lengths)
    att = attention_losses(model.decode(inputs, memory, valid), targets, target_valid, 0.0)
    return ctc_weight * ctc + (1 - ctc_weight) * att
  return jax.vmap(one, out_axes=1)(tokens, token_len)


def strip_eos(ids) -> list[int]:
  """Tokens up to the first <eos>."""
  out = []
  for t in ids:
    if t == SOS_EOS:
      break
    out.append(int(t))
  return out


class CTCPrefixScorer:
  """CTC prefix log-probabilities of one utterance, ``log_probs (T, V)`` (log-softmax)."""

  def __init__(self, log_probs: np.ndarray, blank: int = BLANK, eos: int = SOS_EOS):
    self.x = np.asarray(log_probs, np.float64)
    self.blank, self.eos = blank, eos

  def initial_state(self):
    """Forward variables of the empty prefix: ``(r_n, r_b)``, each ``(T,)``."""
    r_n = np.full(len(self.x), NEG_INF)
    r_b = np.cumsum(self.x[:, self.blank])
    return r_n, r_b

  def extend(self, prefix: Sequence[int], state):
    """Prefix scores ``psi (V,)`` of ``prefix + [c]`` for every token ``c`` and their
    forward variables ``(r_n, r_b)`` of shape ``(T, V)``. ``psi[eos]`` is the probability
    that the output is exactly ``prefix``; ``psi[blank]`` is ``-inf``."""
    x = self.x
    T, V = x.shape
    r_n_prev, r_b_prev = state
    r_sum = np.logaddexp(r_n_prev, r_b_prev)
    # phi_t(c): probability mass at frame t from which a new c can start
    phi = np.repeat(r_sum[:, None], V, axis=1)
    if prefix:
      phi[:, prefix[-1]] = r_b_prev  # a repeated label needs a blank in between
    r_n = np.full((T, V), NEG_INF)
    r_b = np.full((T, V), NEG_INF)
    r_n[0] = x[0] if not prefix else NEG_INF
    psi = r_n[0].copy()
    for t in range(1, T):
      r_n[t] = np.logaddexp(r_n[t - 1], phi[t - 1]) + x[t]
      r_b[t] = np.logaddexp(r_b[t - 1], r_n[t - 1]) + x[t, self.blank]
      psi = np.logaddexp(psi, phi[t - 1] + x[t])
    psi[self.eos] = r_sum[-1]
    psi[self.blank] = NEG_INF
    return psi, (r_n, r_b)


def decoder_log_prob_fn(model):
  """``fn(prefixes (n, L), memory (1, T, d), valid (1, T)) -> log-probs (n, L, V)``, jitted."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def log_probs(state, prefixes, memory, valid):
    m = nnx.merge(graphdef, state)
    n = prefixes.shape[0]
    logits = m.decode(prefixes, jnp.broadcast_to(memory, (n,) + memory.shape[1:]),
                      jnp.broadcast_to(valid, (n,) + valid.shape[1:]))
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return lambda *args: log_probs(state, *args)


def beam_search(model, memory: np.ndarray, valid: np.ndarray, ctc_log_probs: np.ndarray, *,
                beam: int = 4, ctc_weight: float = 0.3, max_len: int | None = None,
                decoder_fn=None) -> list[int]:
  """Joint CTC/attention beam search for one utterance.

  ``memory (1, T, d)`` and ``valid (1, T)`` are the encoder output, ``ctc_log_probs`` the
  CTC log-softmax ``(T_valid, V)``. Returns the best finished hypothesis (token ids, no
  <sos>/<eos>). With ``beam=1`` and ``ctc_weight=0`` this is greedy attention decoding.
  """
  decoder_fn = decoder_fn or decoder_log_prob_fn(model)
  max_len = max_len or max(1, len(ctc_log_probs))
  width = max_len + 1
  scorer = CTCPrefixScorer(ctc_log_probs)
  use_ctc = ctc_weight > 0
  # hypothesis: (tokens, attention log-prob, CTC forward variables)
  hyps = [([], 0.0, scorer.initial_state() if use_ctc else None)]
  finished = []
  for step in range(max_len + 1):
    prefixes = np.zeros((beam, width), np.int32)  # always `beam` rows: one compilation
    for i, (tokens, _, _) in enumerate(hyps):
      prefixes[i, :len(tokens) + 1] = [SOS_EOS] + tokens
    att = np.asarray(decoder_fn(prefixes, memory, valid))[np.arange(len(hyps)), step]
    candidates = []
    for i, (tokens, att_score, ctc_state) in enumerate(hyps):
      total_att = att_score + att[i]
      if use_ctc:
        psi, new_state = scorer.extend(tokens, ctc_state)
        joint = ctc_weight * psi + (1 - ctc_weight) * total_att
      else:
        psi, new_state, joint = None, None, total_att.copy()
      joint[BLANK] = NEG_INF
      if step == max_len:  # out of frames: only <eos> is possible
        joint[np.arange(len(joint)) != SOS_EOS] = NEG_INF
      for c in np.argsort(-joint, kind="stable")[:beam]:
        candidates.append((float(joint[c]), i, int(c), float(total_att[c]), new_state))
    candidates.sort(key=lambda item: -item[0])
    previous, hyps = hyps, []
    for score, i, c, att_score, new_state in candidates[:beam]:
      tokens = previous[i][0]
      if c == SOS_EOS:
        finished.append((score, tokens))
      else:
        state = None if new_state is None else (new_state[0][:, c], new_state[1][:, c])
        hyps.append((tokens + [c], att_score, state))
    # scores only decrease as hypotheses grow: stop once the best finished one leads
    if not hyps or (finished and max(s for s, _ in finished) >= candidates[0][0]):
      break
  if not finished:
    return []
  return max(finished, key=lambda item: item[0])[1]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
  """Corpus WER and CER (jiwer) and sentence accuracy (exact match)."""
  import jiwer
  references, hypotheses = list(references), list(hypotheses)
  if not references:
    raise ValueError("no references to score")
  # jiwer rejects empty references; an empty hypothesis is fine (all deletions)
  return {"wer": float(jiwer.wer(references, hypotheses)),
          "cer": float(jiwer.cer(references, hypotheses)),
          "sentence_accuracy": float(np.mean([r == h for r, h in zip(references, hypotheses)]))}
