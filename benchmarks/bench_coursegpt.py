"""CourseGPT-zh end to end (arXiv 2405.04781): distill QA pairs from the Python docs with the
local SmolLM2 over HTTP, optimize the role-play prompt with the LLM judge, re-answer with the best
prompt, LoRA-tune SmolLM2 on the pairs, and compare base vs tuned student on held-out pairs
(BLEU-1..4, GLEU, ROUGE-1/2/L, judge score).

The work directory starts without a cache, so every LLM call is made and timed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from jaxrepro.bench import Report, benchmark, benchmark_main


@benchmark("coursegpt")
def run(quick: bool, out_dir: Path) -> Report:
  from coursegpt.judge import JudgeParseError
  from coursegpt.pipeline import LOCAL, Backends, config_for, read_jsonl
  from coursegpt.stages import run_distill, run_eval, run_optimize, run_sft
  from coursegpt.textbook import load_textbook, select_paragraphs
  from jaxrepro.metrics import plot_curves

  config = config_for(quick)
  work = Path(out_dir) / "coursegpt_qa"
  shutil.rmtree(work, ignore_errors=True)
  paragraphs, source = load_textbook(None)
  paragraphs = select_paragraphs(paragraphs, config.paragraphs, seed=0)
  timings, metrics = {}, {}
  start = time.perf_counter()
  with Backends(work / "cache") as backends:
    backends.engine  # load the model outside the stage timings
    timings["model_load_seconds"] = time.perf_counter() - start

    def stage(name, fn, **kwargs):
      t0, calls = time.perf_counter(), backends.calls
      result = fn(backends, **kwargs)
      timings[f"{name}_seconds"] = time.perf_counter() - t0
      timings[f"{name}_llm_calls"] = backends.calls - calls
      return result

    common = dict(config=config, seed=0)
    distill = stage("distill", run_distill, paragraphs=paragraphs, out_dir=work,
                    teachers=[LOCAL], answerer=LOCAL, **common)
    notes = []
    try:
      optimized = stage("optimize", run_optimize, qa_dir=work, judge_spec=LOCAL,
                        answerer=LOCAL, optimizer=LOCAL, **common)
    except JudgeParseError as e:  # report it; the rest runs with the first hand-written prompt
      notes.append(f"prompt optimization stopped: {e}")
      optimized = {"trajectory": [], "best_prompt_id": None, "best_prompt": None,
                   "judge_failures": None, "judgements": 0}
    # Answers again under the best prompt (questions come from the cache).
    final = stage("reanswer", run_distill, paragraphs=paragraphs, out_dir=work,
                  teachers=[LOCAL], answerer=LOCAL, **common)
    sft = stage("sft", run_sft, qa_dir=work, steps=None, **common)
    evaluation = stage("eval", run_eval, test=read_jsonl(work / "test.jsonl"), config=config,
                       judge_spec=LOCAL, adapter_dir=work / "lora")
    model_source = backends.model_source
    metrics["llm_calls_made"] = backends.calls
  timings["total_seconds"] = time.perf_counter() - start
  trajectory = optimized["trajectory"]
  metrics.update({
      "qa_pairs": final["qa_pairs"], "questions_generated": distill["questions_generated"],
      "duplicates_removed": distill["duplicates_removed"],
      "duplicates_by_reason": distill["duplicates_by_reason"],
      "split": {k: final[k] for k in ("train", "val", "test")},
      "prompt_trajectory_best": [p["best"] for p in trajectory],
      "prompt_trajectory_top_k_mean": [p["top_k_mean"] for p in trajectory],
      "best_prompt_id": optimized["best_prompt_id"], "best_prompt": optimized["best_prompt"],
      "answers_prompt_version": final["prompt_version"],
      "judge_failures": optimized["judge_failures"], "judgements": optimized["judgements"],
      "sft_loss_first": sft["loss_first"], "sft_loss_last": sft["loss_last"],
      "sft_test_answer_loss": {"before": sft["test_answer_loss_before"],
                               "after": sft["test_answer_loss_after"]},
      "sft_trainable_params": sft["trainable_params"],
      "held_out": {name: {k: m[k] for k in ("bleu4", "rougeL", "judge_score",
                                            "judge_failures", "answers_changed") if k in m}
                   for name, m in evaluation.items()},
      "held_out_all": evaluation,
  })
  out = Path(out_dir)
  points = [(p["round"], p["best"]) for p in trajectory if p["best"] is not None]
  if points:
    plot_curves({"best prompt": tuple(zip(*points))}, out / "coursegpt_prompt_scores.png",
                xlabel="round", ylabel="validation judge score (length-penalized)",
                title="CourseGPT prompt optimization")
  plot_curves({"LoRA SFT": (list(range(1, len(sft["losses"]) + 1)), sft["losses"])},
              out / "coursegpt_sft_loss.png", ylabel="answer cross-entropy", title="LoRA SFT")
  sft_config = {k: sft[k] for k in ("steps", "rank", "alpha", "learning_rate")}
  return Report(
      "coursegpt", "python -m benchmarks.bench_coursegpt" + (" --quick" if quick else ""),
      {"quick": quick, "paragraphs": len(paragraphs), "initial_prompts": config.initial_prompts,
       "rounds": config.optimize.rounds, "top_k": config.optimize.top_k, "sft": sft_config,
       "teacher": "local SmolLM2-135M-Instruct over HTTP", "judge": "same"},
      {"textbook": source.describe(), "model": model_source}, metrics, timings,
      notes=["Teacher, judge, answerer and student are all SmolLM2-135M-Instruct on CPU: a weak "
             "judge (it often copies its in-context example's scores); the figures show a "
             "working, resumable pipeline, not the paper's quality.",
             "Test pairs' references are the teacher's own answers under the best prompt."]
      + notes)


if __name__ == "__main__":
  benchmark_main(run, __doc__)
