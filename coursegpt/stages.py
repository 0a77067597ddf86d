"""The four pipeline stages (distill, optimize-prompt, sft, eval) as functions returning report
metrics; the CLI commands and the benchmark call them."""

from __future__ import annotations

import collections
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from coursegpt.backends import CachedBackend, GenParams, LocalBackend
from coursegpt.distill import answer_questions, distill_questions, split_qa
from coursegpt.judge import JudgeParseError, judge, penalized_score
from coursegpt.optimize import optimize_prompts
from coursegpt.pipeline import Backends, PipelineConfig, read_jsonl, read_paragraphs, \
    read_role_prompt, require_fields, write_jsonl
from coursegpt.prompts import ROLE_PROMPTS
from coursegpt.textbook import Paragraph
from coursegpt.textmetrics import reference_metrics

Tick = Callable[[], None] | None
QA_FIELDS = ("question", "answer", "paragraph_id")


def run_distill(backends: Backends, paragraphs: Sequence[Paragraph], out_dir: Path,
                config: PipelineConfig, *, teachers: Sequence[str], answerer: str,
                seed: int = 0, tick: Tick = None) -> dict[str, Any]:
  """Questions, deduplication, answers under the current role prompt, train/val/test split."""
  out_dir.mkdir(parents=True, exist_ok=True)
  teacher_backends = [backends.get(spec) for spec in teachers]
  result = distill_questions(paragraphs, teacher_backends, config.distill, seed=seed,
                             on_call=tick)
  write_jsonl(out_dir / "paragraphs.jsonl", ({"id": p.id, "text": p.text} for p in paragraphs))
  write_jsonl(out_dir / "questions.jsonl", result.questions)
  write_jsonl(out_dir / "removed.jsonl", result.removed)
  version, prompt = read_role_prompt(out_dir)
  qa = answer_questions(result.questions, {p.id: p.text for p in paragraphs},
                        backends.get(answerer), prompt, version, config.distill, on_call=tick)
  if not qa:
    raise ValueError(f"the teacher produced no usable QA pair from {len(paragraphs)} "
                     "paragraph(s); use more paragraphs or a stronger teacher")
  write_jsonl(out_dir / "qa.jsonl", qa)
  train, val, test = split_qa(qa, config.n_val, config.n_test, seed)
  for name, part in (("train", train), ("val", val), ("test", test)):
    write_jsonl(out_dir / f"{name}.jsonl", part)
  reasons = collections.Counter(r["reason"] for r in result.removed)
  return {"paragraphs": len(paragraphs), "questions_generated": result.generated,
          "duplicates_removed": len(result.removed),
          "duplicates_by_reason": dict(reasons), "questions_kept": len(result.questions),
          "qa_pairs": len(qa), "train": len(train), "val": len(val), "test": len(test),
          "prompt_version": version}


def run_optimize(backends: Backends, qa_dir: Path, config: PipelineConfig, *, judge_spec: str,
                 answerer: str, optimizer: str, seed: int = 0, tick: Tick = None
                 ) -> dict[str, Any]:
  """The reflection/resample loop on ``qa_dir/val.jsonl``; writes ``qa_dir/prompt.json``."""
  validation = read_jsonl(qa_dir / "val.jsonl")
  require_fields(validation, QA_FIELDS, str(qa_dir / "val.jsonl"))
  result = optimize_prompts(
      ROLE_PROMPTS[:config.initial_prompts], validation, read_paragraphs(qa_dir),
      answerer=backends.get(answerer), judge_backend=backends.get(judge_spec),
      optimizer=backends.get(optimizer), config=config.optimize, seed=seed, on_call=tick)
  record = {"best": result.best.summary(), "trajectory": result.trajectory,
            "candidates": [c.summary() for c in result.candidates]}
  (qa_dir / "prompt.json").write_text(json.dumps(record, indent=2) + "\n")
  failures = sum(c.judge_failures for c in result.candidates)
  judged = sum(len(c.raw_scores) for c in result.candidates)
  return {"best_prompt_id": result.best.id, "best_prompt": result.best.text,
          "best_score": result.best.score, "trajectory": result.trajectory,
          "prompts_scored": len(result.candidates),
          "judge_failures": failures, "judgements": judged,
          "origins": dict(collections.Counter(c.origin for c in result.candidates))}


def eval_messages(question: str) -> list[dict[str, str]]:
  """How a student is asked at evaluation: the question alone (closed book), as in SFT."""
  return [{"role": "user", "content": question}]


def evaluate_student(student, judge_backend, test: Sequence[dict[str, Any]],
                     config: PipelineConfig, tick: Tick = None) -> dict[str, Any]:
  """Reference metrics (BLEU-1..4, GLEU, ROUGE) and the judge's length-penalized overall score
  of ``student``'s answers to the test questions."""
  params = GenParams(config.eval_max_tokens, 0.0)
  answers, scores, failures = [], [], 0
  for qa in test:
    answer = student.chat(eval_messages(qa["question"]), params).strip()
    answers.append(answer)
    try:
      verdict = judge(judge_backend, qa["question"], qa["answer"], answer,
                      max_tokens=config.optimize.judge_max_tokens,
                      attempts=config.optimize.judge_attempts,
                      reasoning_first=config.optimize.judge_reasoning_first)
      scores.append(penalized_score(verdict, answer, qa["answer"], config.optimize.alpha))
    except JudgeParseError:
      failures += 1
    if tick:
      tick()
  metrics = reference_metrics(answers, [qa["answer"] for qa in test])
  metrics["judge_score"] = statistics.fmean(scores) if scores else None
  metrics["judgements"] = len(scores)
  metrics["judge_failures"] = failures
  metrics["mean_answer_words"] = statistics.fmean(len(a.split()) for a in answers)
  metrics["answers"] = answers
  return metrics


# ---- SFT and evaluation of the tuned student ---------------------------------------------

def _sft_config(config: PipelineConfig, steps: int | None):
  from coursegpt.sft import SFTConfig
  return SFTConfig(rank=config.sft_rank, alpha=config.sft_alpha,
                   learning_rate=config.sft_learning_rate,
                   steps=config.sft_steps if steps is None else steps,
                   batch_size=config.sft_batch_size, max_len=config.sft_max_len)


def save_adapters(model, sft_config, path: Path) -> None:
  """The LoRA adapter arrays (``.npz``, by parameter path) and their configuration."""
  import jax
  from flax import nnx
  from qgalore_jax.lora import LoRAParam
  path.mkdir(parents=True, exist_ok=True)
  flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, LoRAParam))[0]
  np.savez(path / "adapters.npz", **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})
  (path / "config.json").write_text(json.dumps(dataclasses.asdict(sft_config), indent=2))


def load_adapters(model, path: Path):
  """Adds adapters (configured as saved) to ``model`` and loads their trained values."""
  import jax
  from flax import nnx
  from coursegpt.sft import SFTConfig, add_adapters
  from qgalore_jax.lora import LoRAParam
  if not (path / "adapters.npz").is_file():
    raise FileNotFoundError(f"no adapters.npz in {path} (run `jaxrepro coursegpt sft` first)")
  fields = json.loads((path / "config.json").read_text())
  fields["targets"] = tuple(fields["targets"])
  add_adapters(model, SFTConfig(**fields))
  saved = np.load(path / "adapters.npz")
  state = nnx.state(model, LoRAParam)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  names = [jax.tree_util.keystr(k) for k, _ in leaves]
  if sorted(names) != sorted(saved.files):
    raise ValueError(f"{path}: saved adapters do not match the model's LoRA parameters")
  nnx.update(model, jax.tree_util.tree_unflatten(treedef, [saved[n] for n in names]))
  return model


def run_sft(backends: Backends, qa_dir: Path, config: PipelineConfig, *, steps: int | None,
            seed: int = 0, tick: Tick = None) -> dict[str, Any]:
  """LoRA SFT of SmolLM2 on ``qa_dir/train.jsonl``; adapters saved under ``qa_dir/lora``."""
  from coursegpt.sft import train_lora
  train = read_jsonl(qa_dir / "train.jsonl")
  test = read_jsonl(qa_dir / "test.jsonl")
  require_fields(train, QA_FIELDS, str(qa_dir / "train.jsonl"))
  sft_config = _sft_config(config, steps)
  model = backends.fresh_model()
  tokenizer = backends.engine.tokenizer
  start = time.perf_counter()
  result = train_lora(model, tokenizer, train, sft_config, held_out=test, seed=seed,
                      on_step=(lambda s, l: tick()) if tick else None)
  seconds = time.perf_counter() - start
  save_adapters(model, sft_config, qa_dir / "lora")
  return {"method": "lora", "steps": sft_config.steps, "rank": sft_config.rank,
          "alpha": sft_config.alpha, "learning_rate": sft_config.learning_rate,
          "train_pairs": len(train), "trainable_params": result.trainable_params,
          "loss_first": result.losses[0], "loss_last": result.losses[-1],
          "losses": result.losses, "test_answer_loss_before": result.eval_loss_before,
          "test_answer_loss_after": result.eval_loss_after,
          "adapter_digest": result.adapter_digest, "train_seconds": seconds}


def tuned_student(backends: Backends, adapter_dir: Path) -> CachedBackend:
  """The LoRA-tuned SmolLM2 (adapters merged), in process, cached under its adapter digest;
  it reuses the base engine's compiled generation."""
  from coursegpt.serving import engine_with_weights
  from coursegpt.sft import adapter_digest, merged_into
  adapted = load_adapters(backends.fresh_model(), adapter_dir)
  name = f"{backends.engine.model_name}+lora-{adapter_digest(adapted)}"
  engine = engine_with_weights(backends.engine, merged_into(backends.fresh_model(), adapted),
                               name)
  return backends.cached(LocalBackend(engine))


def judge_failure_notes(results: dict[str, dict[str, Any]], judge_spec: str) -> list[str]:
  """Report notes for the students of ``run_eval``'s ``results`` whose answers the judge did
  not always grade in the verdict format: their ``judge_score`` averages only the graded
  answers, and is None when none was."""
  notes = []
  for name, metrics in results.items():
    failures, graded = metrics["judge_failures"], metrics["judgements"]
    if not failures:
      continue
    if graded:
      notes.append(f"{name}: the judge ({judge_spec}) gave no parseable verdict for {failures} "
                   f"of {failures + graded} answers; judge_score averages the other {graded}")
    else:
      notes.append(f"{name}: the judge ({judge_spec}) gave no parseable verdict for any of the "
                   f"{failures} answers, so judge_score is null; a small local model may not "
                   "keep to the verdict format: pass --judge URL of a stronger one")
  return notes


def run_eval(backends: Backends, test: Sequence[dict[str, Any]], config: PipelineConfig, *,
             judge_spec: str, adapter_dir: Path | None, tick: Tick = None) -> dict[str, Any]:
  """Base student vs (with ``adapter_dir``) the LoRA-tuned one on the held-out QA pairs."""
  require_fields(test, QA_FIELDS, "test set")
  if not test:
    raise ValueError("the test set is empty")
  judge_backend = backends.get(judge_spec)
  students = {"base": backends.cached(LocalBackend(backends.engine))}
  if adapter_dir is not None:
    students["lora"] = tuned_student(backends, adapter_dir)
  results = {name: evaluate_student(student, judge_backend, test, config, tick)
             for name, student in students.items()}
  if "lora" in results:  # how many held-out answers the fine-tuning changed at all
    results["lora"]["answers_changed"] = sum(
        a != b for a, b in zip(results["base"]["answers"], results["lora"]["answers"]))
  for metrics in results.values():
    metrics.pop("answers")
  return results
