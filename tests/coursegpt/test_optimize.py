"""Top-k selection and reflection/resample bookkeeping with a deterministic scripted backend."""

import random
import re

import pytest

from coursegpt.backends import GenParams
from coursegpt.judge import JudgeParseError
from coursegpt.optimize import Candidate, OptimizeConfig, optimize_prompts, reflect, resample, \
    top_k

VALIDATION = [{"question": f"Q{i}?", "answer": "ref answer words", "paragraph_id": "p#0"}
              for i in range(3)]
PARAGRAPHS = {"p#0": "Some paragraph."}


def test_top_k_orders_by_score_then_age_and_skips_unscored():
  cands = [Candidate("b", "x", "seed", 0, score=5.0), Candidate("a", "y", "seed", 0, score=5.0),
           Candidate("c", "z", "seed", 0, score=None), Candidate("d", "w", "seed", 0, score=7.0),
           Candidate("r1-reflect-b", "v", "reflection", 1, score=5.0)]
  assert [c.id for c in top_k(cands, 5)] == ["d", "b", "a", "r1-reflect-b"]
  assert [c.id for c in top_k(cands, 2)] == ["d", "b"]


def test_reflection_feeds_a_random_sample_of_critiques(scripted):
  cand = Candidate("seed-0", "Be a teacher.", "seed", 0,
                   critiques=[f"critique {i}" for i in range(8)], score=3.0)
  optimizer = scripted(lambda m, p: "New prompt: Be a precise and brief Python teacher.")
  new = reflect(cand, optimizer, OptimizeConfig(critiques=5), random.Random(0), round_=2)
  text = optimizer.requests[0][0][-1]["content"]
  fed = re.findall(r"- (critique \d)", text)
  assert len(fed) == 5 and set(fed) <= set(cand.critiques)
  assert fed == random.Random(0).sample(cand.critiques, 5)
  assert (new.id, new.origin, new.parent, new.round) == ("r2-reflect-seed-0", "reflection",
                                                        "seed-0", 2)
  assert new.text == "Be a precise and brief Python teacher."
  assert reflect(cand, scripted(lambda m, p: "ok"), OptimizeConfig(), random.Random(0), 1) is None


def test_resample_lists_prompts_best_first_and_asks_for_as_many(scripted):
  ranked = top_k([Candidate("a", "Prompt alpha is short and clear.", "seed", 0, score=4.0),
                  Candidate("b", "Prompt beta is long and vague.", "seed", 0, score=6.5)], 2)
  optimizer = scripted(lambda m, p: "Patterns: brevity.\n1. Answer briefly and precisely, "
                       "please.\n2) \"Explain with one small code example.\"\n3. extra one here")
  new = resample(ranked, optimizer, OptimizeConfig(), round_=1)
  text = optimizer.requests[0][0][-1]["content"]
  assert text.index("(score 6.50) Prompt beta") < text.index("(score 4.00) Prompt alpha")
  assert "write 2 new" in text
  assert [(c.id, c.text, c.origin) for c in new] == [
      ("r1-resample-0", "Answer briefly and precisely, please.", "resample"),
      ("r1-resample-1", "Explain with one small code example.", "resample")]


def _world(scripted, quality):
  """Answer quality is a function of the system prompt; the judge reports it as the overall
  score (with a critique naming the prompt); the optimizer appends words to prompts."""
  def answer(messages, params):
    return f"answer under [{messages[0]['content']}]"

  def grade(messages, params):
    response = messages[-1]["content"].split("Student answer: ")[1].split("\n")[0]
    prompt = re.search(r"\[(.*)\]", response).group(1)
    score = quality(prompt)
    if score is None:
      return "I cannot grade this."
    return (f"Critique: about {prompt}.\nFactual accuracy: {score}\nUser satisfaction: {score}\n"
            f"Clarity: {score}\nCondensability: {score}\nOverall: {score}")

  def rewrite(messages, params):
    text = messages[-1]["content"]
    if "sorted from best to worst" in text:
      n = int(re.search(r"write (\d+) new", text).group(1))
      return "\n".join(f"{i + 1}. Resampled prompt number {i} is great." for i in range(n))
    prompt = re.search(r'"(.*)"', text).group(1)
    return prompt + " Be precise."

  return scripted(answer), scripted(grade), scripted(rewrite)


def test_optimization_loop_bookkeeping(scripted):
  # Quality grows with the prompt's length in words, capped at 10.
  quality = lambda prompt: min(10, len(prompt.split()))
  answerer, judge_backend, optimizer = _world(scripted, quality)
  initial = ["One two three four five six.", "One two three four five six seven eight.",
             "Short prompt here now ok."]
  config = OptimizeConfig(rounds=2, top_k=2, critiques=5, judge_attempts=1, alpha=0.5)
  result = optimize_prompts(initial, VALIDATION, PARAGRAPHS, answerer=answerer,
                            judge_backend=judge_backend, optimizer=optimizer, config=config)
  by_id = {c.id: c for c in result.candidates}
  # Answers are longer than the 3-word reference: each score carries the length penalty.
  for c in result.candidates:
    n_answer = len(f"answer under [{c.text}]".split())
    expected = quality(c.text) - 0.5 * (n_answer / 3 - 1)
    assert c.score == pytest.approx(expected)
    assert len(c.raw_scores) == len(VALIDATION) and c.judge_failures == 0
  # Round 1 reflects on the top 2 seeds and resamples 2; round 2 on the new top 2.
  round1 = [c.id for c in result.candidates if c.round == 1]
  assert round1 == ["r1-reflect-seed-1", "r1-reflect-seed-0", "r1-resample-0", "r1-resample-1"]
  assert by_id["r1-reflect-seed-1"].text == initial[1] + " Be precise."
  # Round 2's top 2: r1-reflect-seed-1 (10 words) and seed-1, which ties r1-reflect-seed-0
  # (8 words each) and wins as the older one. Rewriting seed-1 again and the resampled prompts
  # give known texts, which are not scored twice.
  assert [c.id for c in result.candidates if c.round == 2] == ["r2-reflect-r1-reflect-seed-1"]
  assert len(answerer.requests) == len(result.candidates) * len(VALIDATION)
  best_scores = [p["best"] for p in result.trajectory]
  assert [p["round"] for p in result.trajectory] == [0, 1, 2]
  assert best_scores == sorted(best_scores)
  assert result.best.id == max(result.candidates, key=lambda c: c.score).id
  assert result.trajectory[-1]["best_id"] == result.best.id
  # Every answer and judge call is greedy with the configured token limits.
  assert answerer.requests[0][1] == GenParams(config.answer_max_tokens, 0.0)


def test_unparseable_judgements_are_counted_not_zeroed(scripted):
  quality = lambda prompt: None if "bad" in prompt else 6
  answerer, judge_backend, optimizer = _world(scripted, quality)
  config = OptimizeConfig(rounds=1, top_k=2, judge_attempts=2)
  result = optimize_prompts(["a bad prompt for answers", "a good prompt for answers"],
                            VALIDATION, PARAGRAPHS, answerer=answerer,
                            judge_backend=judge_backend, optimizer=optimizer, config=config)
  bad = result.candidates[0]
  assert bad.score is None and bad.judge_failures == len(VALIDATION) and not bad.raw_scores
  assert result.best.score is not None and "bad" not in result.best.text
  # Only the scored prompt was reflected on.
  assert [c.parent for c in result.candidates if c.origin == "reflection"] == ["seed-1"]

  answerer, judge_backend, optimizer = _world(scripted, lambda prompt: None)
  with pytest.raises(JudgeParseError, match="no prompt received a parseable judgement"):
    optimize_prompts(["x y z w v"], VALIDATION, PARAGRAPHS, answerer=answerer,
                     judge_backend=judge_backend, optimizer=optimizer, config=config)
