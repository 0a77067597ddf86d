"""Training and evaluation of the hybrid CTC/attention recognizer.

The step is one jitted pure function of (params, other model state, optimizer state, key,
batch): batches are split over every device of the mesh (``data`` axis, see
``jaxrepro.mesh``), parameters are replicated. It returns per-utterance losses so a data
sampler can learn from them. Checkpoints hold the model, optimizer, RNG key, step and the
data iterator's state (including the sampler's), so a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxrepro.checkpoint import Checkpointer
from jaxrepro.mesh import make_mesh, replicated, shard_batch
from jaxrepro.metrics import MetricsLogger
from jaxrepro.progress import progress
from jaxrepro.sparsity import path_names
from sparse_sr.data.loader import BatchIterator, Dataset, Padding, Sampler, eval_batches
from sparse_sr.decoding import (beam_search, candidate_tokens, decoder_log_prob_fn,
                                error_rates, greedy_attention, greedy_ctc, score_candidates,
                                strip_eos)
from sparse_sr.losses import hybrid_loss
from sparse_sr.model import ModelConfig, SpeechRecognizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 2000
  batch_size: int = 32
  learning_rate: float = 2e-3
  warmup_steps: int = 200
  weight_decay: float = 1e-3
  clip_norm: float = 5.0
  ctc_weight: float = 0.1
  label_smoothing: float = 0.1
  eval_every: int = 500
  checkpoint_every: int = 500
  log_every: int = 20
  eval_batch_size: int = 32
  num_buckets: int = 2       # distinct padded lengths (each compiles once)
  seed: int = 0


@functools.lru_cache(maxsize=8)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, after global-norm clipping."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(config.warmup_steps, max(1, config.steps - 1)),
      max(config.steps, 2), end_value=0.01 * config.learning_rate)
  return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                     optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=config.weight_decay))


@functools.lru_cache(maxsize=8)
def make_train_step(graphdef, optimizer, config: TrainConfig, reparam=None):
  """Cached, so runs with the same model and configuration share compilations.

  ``step(params, other, opt_state, key, batch) -> (params, other, opt_state, metrics)``;
  ``metrics["losses"]`` is per utterance and ``metrics["layer_grad_norms"]`` has one
  gradient norm per parameter leaf. ``reparam`` (e.g. :class:`sparse_sr.msrs.MSRS`)
  maps the trained tree to the model's weights and adds its penalty to the loss."""

  def loss_fn(params, other, opt_state, key, batch):
    weights = params if reparam is None else reparam.weights(params, opt_state)
    model = nnx.merge(graphdef, weights, other, copy=True)
    k_drop, k_aug = jax.random.split(key)
    loss, aux = hybrid_loss(model, batch, ctc_weight=config.ctc_weight,
                            label_smoothing=config.label_smoothing,
                            rngs=nnx.Rngs(dropout=k_drop, augment=k_aug))
    _, _, other = nnx.split(model, nnx.Param, ...)   # updated batch statistics
    if reparam is not None:
      loss = loss + reparam.penalty(params, opt_state)
    return loss, (aux, other)

  @jax.jit
  def step(params, other, opt_state, key, batch):
    (loss, (aux, other)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, other, opt_state, key, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, "ctc": jnp.mean(aux["ctc"]), "att": jnp.mean(aux["att"]),
               "accuracy": aux["accuracy"], "grad_norm": optax.tree.norm(grads),
               "losses": aux["losses"], "layer_grad_norms": leaf_norms(grads)}
    if reparam is not None:
      metrics.update(reparam.metrics(params, opt_state))
    return params, other, opt_state, metrics
  return step


def leaf_norms(tree) -> dict[str, jax.Array]:
  """L2 norm of every leaf, keyed by its path joined with '/'."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(n for n in path_names(path) if n != "value"): jnp.linalg.norm(leaf)
          for path, leaf in leaves}


def init_model(config: ModelConfig, seed: int) -> SpeechRecognizer:
  return SpeechRecognizer(config, rngs=nnx.Rngs(seed))


def evaluate(model: SpeechRecognizer, dataset: Dataset, *, batch_size: int = 32,
             beam: int = 0, ctc_weight: float = 0.3, mesh: Mesh | None = None,
             max_utterances: int | None = None,
             candidates: Sequence[str] | None = None,
             warps: Sequence[float] | None = None,
             transform: Callable[[dict], dict] | None = None,
             candidate_bias: dict[str, np.ndarray] | None = None,
             quiet: bool | None = None) -> dict[str, Any]:
  """WER/CER of greedy CTC, greedy attention decoding, joint CTC/attention beam search
  when ``beam > 0``, and closed-vocabulary recognition (the best-scoring of ``candidates``
  under the hybrid model) when given, on ``dataset``.

  ``warps`` (e.g. ``0.8, 0.85, ..., 1.2``) turns on vocal tract length normalization at test
  time (Lee & Rose 1998, IEEE TSAP 6(1), "A frequency warping approach to speaker
  normalization"): every utterance is decoded under each frequency warp factor, and each
  speaker gets the factor under which the best CTC paths of all their utterances are most
  probable (no transcript is used). Results are those under the chosen factors, listed in
  ``result["vtln"]``; beam search is then not available. ``transform(batch)`` adds inputs
  to every batch (e.g. :class:`sparse_sr.adaptation.SpeakerCMVN`'s speaker statistics).
  ``candidate_bias`` maps a speaker to offsets ``(K,)`` of ``sorted(set(candidates))``,
  added to their log-likelihoods in closed-vocabulary recognition (see
  :func:`sparse_sr.adaptation.prior_matching_bias`; other speakers: none). ``quiet``: as
  :func:`jaxrepro.progress.progress` (one bar per decoding pass).
  """
  if warps and beam:
    raise ValueError("test-time VTLN (warps) decodes greedily; use beam=0")
  tokenizer = dataset.tokenizer
  graphdef, state = nnx.split(model)
  padding = Padding.for_dataset(dataset, 1)
  encode = _eval_fn(graphdef, padding.token_width + 1)
  decoder_fn = decoder_log_prob_fn(model) if beam else None
  if candidates:
    candidates = sorted(set(candidates))
    cand_tokens, cand_len = candidate_tokens(tokenizer, candidates)
    scorer = _candidate_fn(graphdef, ctc_weight)

  def decode_all(warp: float | None) -> dict[int, dict[str, Any]]:
    """Hypotheses of every utterance (by index) under one warp factor (None: none)."""
    out = {}
    # Decoding a test set (once per VTLN warp) can take minutes on CPU: show how far it is.
    batches = progress(eval_batches(dataset, batch_size, padding),
                       total=-(-len(dataset) // batch_size), leave=False,
                       desc="decode" if warp is None else f"decode (warp {warp:g})",
                       quiet=quiet)
    for batch in batches:
      if transform is not None:
        batch = transform(batch)
      device_batch = {k: v for k, v in batch.items() if k != "index"}
      if warp is not None:
        device_batch["warp"] = np.full(len(batch["valid"]), warp, np.float32)
      if mesh is not None:
        device_batch = shard_batch(device_batch, mesh)
      memory, valid, log_probs, att_ids = jax.device_get(encode(state, device_batch))
      hyps = greedy_ctc(log_probs, valid)
      best_path = np.sum(np.max(log_probs, -1) * valid, -1)
      if candidates:
        scores = np.asarray(scorer(state, memory, valid, cand_tokens, cand_len))
        if candidate_bias:
          scores = scores - np.stack([
              candidate_bias.get(dataset.utterances[int(i)].speaker, np.zeros(len(candidates)))
              if ok else np.zeros(len(candidates))
              for i, ok in zip(batch["index"], batch["valid"])])
        choice = np.argmin(scores, 1)
      for j in np.flatnonzero(batch["valid"]):
        item = {"greedy_ctc": tokenizer.decode(hyps[j]), "best_path": float(best_path[j]),
                "greedy_attention": tokenizer.decode(strip_eos(att_ids[j]))}
        if candidates:
          item["closed_vocabulary"] = candidates[int(choice[j])]
        if beam:
          item["beam"] = tokenizer.decode(beam_search(
              model, memory[j:j + 1], valid[j:j + 1], log_probs[j][valid[j]], beam=beam,
              ctc_weight=ctc_weight, decoder_fn=decoder_fn))
        out[int(batch["index"][j])] = item
    return out

  chosen = {}
  if warps:
    by_warp = {float(w): decode_all(float(w)) for w in warps}
    speakers = sorted({u.speaker for u in dataset.utterances})
    for speaker in speakers:
      members = [i for i, u in enumerate(dataset.utterances) if u.speaker == speaker]
      chosen[speaker] = max(by_warp, key=lambda w: sum(by_warp[w][i]["best_path"]
                                                       for i in members))
    decoded = {i: by_warp[chosen[u.speaker]][i] for i, u in enumerate(dataset.utterances)}
  else:
    decoded = decode_all(None)
  order = [i for i in np.argsort(dataset.durations(), kind="stable")][:max_utterances]
  refs = [dataset.utterances[i].text for i in order]
  hyps = {kind: [decoded[i][kind] for i in order] for kind in decoded[order[0]]
          if kind != "best_path"}
  result = {"utterances": len(refs)}
  for kind in ("greedy_ctc", "greedy_attention", "beam", "closed_vocabulary"):
    if kind in hyps:
      result[f"beam{beam}" if kind == "beam" else kind] = error_rates(refs, hyps[kind])
  if warps:
    result["vtln"] = chosen
  result["examples"] = [{"ref": refs[k], "greedy_ctc": hyps["greedy_ctc"][k],
                         "greedy_attention": hyps["greedy_attention"][k]}
                        | ({"beam": hyps["beam"][k]} if beam else {})
                        for k in range(min(5, len(refs)))]
  return result


@functools.lru_cache(maxsize=8)
def _eval_fn(graphdef, max_len: int):
  """Encoder output, CTC log-probabilities and greedy attention hypotheses (cached jit)."""
  @jax.jit
  def encode(state, batch):
    m = nnx.merge(graphdef, state)
    memory, valid = m.encode(batch)
    attention = greedy_attention(m, memory, valid, max_len)
    return (memory, valid, jax.nn.log_softmax(m.ctc_logits(memory).astype(jnp.float32)),
            attention)
  return encode


@functools.lru_cache(maxsize=8)
def _candidate_fn(graphdef, ctc_weight: float):
  @jax.jit
  def score(state, memory, valid, tokens, token_len):
    return score_candidates(nnx.merge(graphdef, state), memory, valid, tokens, token_len,
                            ctc_weight)
  return score


def train(model_config: ModelConfig, config: TrainConfig, train_data: Dataset, *,
          eval_data: Dataset | None = None, mesh: Mesh | None = None,
          workdir: str | Path | None = None, sampler: Sampler | None = None,
          transform: Callable | None = None, quiet: bool | None = None,
          stop_after: int | None = None,
          optimizer: optax.GradientTransformation | None = None, reparam: Any = None,
          layer_norm_steps: int = 0,
          eval_transform: Callable[[dict], dict] | None = None) -> dict[str, Any]:
  """Trains for ``config.steps`` steps, resuming from ``workdir``'s latest checkpoint.

  ``stop_after`` ends the run early at that step (after checkpointing), as an
  interruption would. ``optimizer`` replaces :func:`make_optimizer` (e.g. wrapped by
  ``jaxrepro.sparsity.dynamic_sparsity``); ``reparam`` (``init(params)``,
  ``weights(trained, opt_state)``, ``penalty``, ``metrics``, e.g. :class:`sparse_sr.msrs.MSRS`)
  trains a tree of its own from which the model's weights are computed; the first
  ``layer_norm_steps`` steps record per-leaf gradient norms; ``eval_transform`` is
  :func:`evaluate`'s ``transform`` for ``eval_data``. Returns the model, final
  metrics, evaluations (with ``seconds``, the cumulative real time of the steps so far, data
  loading and compilation included, and ``steady_seconds``, the same without the steps that
  compiled), throughput, ``step_seconds`` (real time of all steps),
  ``steady_seconds`` (the same without the steps that compiled) and ``steady_cpu_seconds``
  (this process's CPU time in those steps: less sensitive to other jobs on the machine).
  """
  mesh = mesh or make_mesh()
  if config.batch_size % mesh.size:
    raise ValueError(f"batch size {config.batch_size} is not divisible by the {mesh.size} "
                     "devices of the mesh")
  model = init_model(model_config, config.seed)
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  if reparam is not None:
    params = reparam.init(params)
  optimizer = optimizer or make_optimizer(config)
  opt_state = optimizer.init(params)
  iterator = BatchIterator(train_data, config.batch_size, sampler, seed=config.seed,
                           transform=transform,
                           padding=Padding.for_dataset(train_data, config.num_buckets))
  state = {"params": params, "other": other, "opt_state": opt_state,
           "key": jax.random.key(config.seed), "step": jnp.int32(0),
           "data": iterator.state()}
  state = jax.device_put(state, replicated(mesh))
  ckpt = logger = None
  if workdir is not None:
    workdir = Path(workdir)
    ckpt = Checkpointer(workdir / "checkpoints", save_every=config.checkpoint_every, keep=2)
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(like=state)
      iterator.load_state(jax.device_get(state["data"]))
    logger = MetricsLogger(workdir / "metrics.jsonl")
  # One step function for every step: with the per-leaf norms in-graph a medium VSR step was
  # no slower (A/B, medians of 15), while a second variant without them compiled again
  # (about half of the 21 s a 200-step dense run spent compiling).
  step_fn = make_train_step(graphdef, optimizer, config, reparam)

  def weights(params, opt_state):
    return params if reparam is None else reparam.weights(params, opt_state)
  start = int(state["step"])
  last = config.steps if stop_after is None else min(config.steps, stop_after)
  evaluations, history = [], []
  audio_seconds, train_seconds, step_seconds, steady_seconds = 0.0, 0.0, 0.0, 0.0
  steady_cpu_seconds = 0.0
  layer_grad_norms = []
  compiled_shapes = set()
  bar = progress(total=last - start, desc="train", quiet=quiet)
  params, other, opt_state, key = (state["params"], state["other"], state["opt_state"],
                                   state["key"])
  for step in range(start + 1, last + 1):
    t_load, cpu_load = time.perf_counter(), time.process_time()
    batch = next(iterator)
    host_index = batch.pop("index")
    audio_seconds_batch = float(np.sum(batch["audio_len"])) / model_config.features.sample_rate \
        if "audio_len" in batch else float(np.sum(batch["video_len"])) / 25
    t0 = time.perf_counter()
    key, step_key = jax.random.split(key)
    params, other, opt_state, metrics = step_fn(params, other, opt_state, step_key,
                                                shard_batch(batch, mesh))
    norms = metrics.pop("layer_grad_norms")
    metrics = jax.device_get(metrics)
    if step <= layer_norm_steps:
      layer_grad_norms.append({"step": step, **{k: float(v) for k, v in
                                                jax.device_get(norms).items()}})
    shape = tuple(v.shape for v in batch.values())
    compiled = shape in compiled_shapes
    if compiled:  # throughput excludes steps that compiled
      train_seconds += time.perf_counter() - t0
      audio_seconds += audio_seconds_batch
    compiled_shapes.add(shape)
    iterator.sampler.update(host_index, np.asarray(metrics.pop("losses")))
    # real time of the step with its data loading and sampler update
    step_seconds += time.perf_counter() - t_load
    if compiled:
      steady_seconds += time.perf_counter() - t_load
      steady_cpu_seconds += time.process_time() - cpu_load
    bar.update(1)
    bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
    if step % config.log_every == 0 or step == last:
      record = {k: float(v) for k, v in metrics.items()}
      record["epoch"] = iterator.epoch
      history.append({"step": step, **record})
      if logger:
        logger.log(step, **record)
    if eval_data is not None and (step % config.eval_every == 0 or step == config.steps):
      result = evaluate(nnx.merge(graphdef, weights(params, opt_state), other), eval_data,
                        batch_size=config.eval_batch_size, mesh=mesh,
                        transform=eval_transform, quiet=quiet)
      evaluations.append({"step": step, "seconds": step_seconds,
                          "steady_seconds": steady_seconds, **result})
      if logger:
        logger.log(step, eval_cer=result["greedy_ctc"]["cer"],
                   eval_wer=result["greedy_ctc"]["wer"],
                   eval_attention_cer=result["greedy_attention"]["cer"])
    if ckpt is not None and (ckpt.should_save(step) or step == last):
      ckpt.save(step, {"params": params, "other": other, "opt_state": opt_state, "key": key,
                       "step": jnp.int32(step), "data": iterator.state()}, force=True)
  bar.close()
  if ckpt is not None:
    ckpt.wait()
    ckpt.close()
    save_model(workdir, last, weights(params, opt_state), other)
  return {"model": nnx.merge(graphdef, weights(params, opt_state), other), "params": params,
          "other": other,
          "opt_state": opt_state, "key": key, "history": history, "evaluations": evaluations,
          "audio_seconds": audio_seconds, "train_seconds": train_seconds,
          "step_seconds": step_seconds, "steady_seconds": steady_seconds,
          "steady_cpu_seconds": steady_cpu_seconds,
          "layer_grad_norms": layer_grad_norms,
          "throughput": audio_seconds / train_seconds if train_seconds else None,
          "steps": last}


def save_model(workdir: str | Path, step: int, params, other) -> None:
  """Writes the final weights (no optimizer or data state) to ``workdir/model``."""
  with Checkpointer(Path(workdir) / "model", keep=1) as ckpt:
    ckpt.save(step, {"params": params, "other": other}, force=True)
    ckpt.wait()


def restore_model(model_config: ModelConfig, workdir: str | Path) -> tuple[SpeechRecognizer, int]:
  """The model saved by :func:`save_model` in ``workdir`` and its training step."""
  abstract = nnx.eval_shape(lambda: init_model(model_config, 0))
  graphdef, params, other = nnx.split(abstract, nnx.Param, ...)
  with Checkpointer(Path(workdir) / "model") as ckpt:
    step = ckpt.latest_step()
    restored, _ = ckpt.restore(like={"params": params, "other": other})
  return nnx.merge(graphdef, restored["params"], restored["other"]), step
