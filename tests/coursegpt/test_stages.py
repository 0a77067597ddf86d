"""Evaluation bookkeeping: unparseable judge replies are counted, left out of the mean, and
said in the report's notes."""

import pytest

from coursegpt.pipeline import config_for
from coursegpt.stages import evaluate_student, judge_failure_notes
from tests.coursegpt.test_judge import CLEAN

TEST = [{"question": f"What is {name}?", "answer": f"{name} is a Python builtin."}
        for name in ("len", "zip", "map", "sum")]


def _judge_script(parseable_questions):
  def script(messages, params):
    question = messages[-1]["content"]
    return CLEAN if any(q in question for q in parseable_questions) else "I like it."
  return script


def test_unparseable_verdicts_are_counted_left_out_and_noted(scripted):
  student = scripted(lambda messages, params: "A builtin.")
  config = config_for(True)
  parseable = ("What is len?", "What is zip?")
  judge = scripted(_judge_script(parseable))
  metrics = evaluate_student(student, judge, TEST, config)
  assert (metrics["judgements"], metrics["judge_failures"]) == (2, 2)
  # both graded answers get CLEAN's overall 7 (a two-word answer is not length-penalized)
  assert metrics["judge_score"] == pytest.approx(7.0)
  # each unparseable reply was retried up to judge_attempts times
  assert len(judge.requests) == 2 + 2 * config.optimize.judge_attempts
  notes = judge_failure_notes({"base": metrics}, "local")
  assert notes == ["base: the judge (local) gave no parseable verdict for 2 of 4 answers; "
                   "judge_score averages the other 2"]


def test_no_parseable_verdict_gives_a_null_score_and_says_what_to_do(scripted):
  student = scripted(lambda messages, params: "A builtin.")
  metrics = evaluate_student(student, scripted(_judge_script(())), TEST, config_for(True))
  assert metrics["judge_score"] is None and metrics["judge_failures"] == 4
  clean = evaluate_student(student, scripted(_judge_script(("What",))), TEST, config_for(True))
  notes = judge_failure_notes({"base": clean, "lora": metrics}, "local")
  assert len(notes) == 1 and notes[0].startswith("lora: ") and "judge_score is null" in notes[0]
  assert "--judge URL" in notes[0]
