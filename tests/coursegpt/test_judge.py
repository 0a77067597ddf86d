import pytest

from coursegpt.backends import GenParams
from coursegpt.judge import FIELDS, JudgeParseError, judge, length_penalized, parse_judgement, \
    penalized_score

CLEAN = """Critique: Mostly right but misses mutability.
Factual accuracy: 7
User satisfaction: 6
Clarity: 8
Condensability: 9
Overall: 7"""


@pytest.mark.parametrize("score,res,ref,alpha,expected", [
    (8.0, 10, 10, 0.5, 8.0),  # equal length: no penalty
    (8.0, 3, 10, 0.5, 8.0),  # shorter: no penalty
    (8.0, 20, 10, 0.5, 7.5),  # twice as long: 8 - 0.5 * (2 - 1)
    (6.0, 40, 10, 0.5, 4.5),  # 4x: 6 - 0.5 * 3
    (6.0, 15, 10, 1.0, 5.5),  # alpha 1: 6 - (1.5 - 1)
])
def test_length_penalty_formula(score, res, ref, alpha, expected):
  assert length_penalized(score, res, ref, alpha) == pytest.approx(expected)


def test_length_penalty_rejects_empty_reference():
  with pytest.raises(ValueError, match="reference length"):
    length_penalized(5.0, 3, 0)


def test_penalized_score_counts_words():
  verdict = parse_judgement(CLEAN)
  assert penalized_score(verdict, "a b c d", "a b") == pytest.approx(7 - 0.5 * (4 / 2 - 1))


def test_parse_clean_reply():
  verdict = parse_judgement(CLEAN)
  assert verdict.scores == {"factual_accuracy": 7, "user_satisfaction": 6, "clarity": 8,
                            "condensability": 9, "overall": 7}
  assert verdict.critique == "Mostly right but misses mutability."
  assert verdict.overall == 7


def test_parse_messy_reply():
  text = """Sure! Let me think about the clarity and accuracy first.
The answer is fine overall.

**Factual Accuracy**: 8/10
- User satisfaction = 6.5
2. **Clarity:** 4 out of 5
Condensability - 7
Clarity: 9
### Overall score: 7/10  (good)
Hope this helps."""
  verdict = parse_judgement(text)
  # The last mention of a field wins; "4 out of 5" would have been 8 on the 10 scale.
  assert verdict.scores == {"factual_accuracy": 8, "user_satisfaction": 6.5, "clarity": 9,
                            "condensability": 7, "overall": 7}
  assert verdict.critique.startswith("Sure!")


def test_parse_rescales_other_scales():
  text = CLEAN.replace("Clarity: 8", "Clarity: 4/5").replace("Overall: 7", "Overall: 3 out of 5")
  verdict = parse_judgement(text)
  assert verdict.scores["clarity"] == pytest.approx(8.0)
  assert verdict.overall == pytest.approx(6.0)


@pytest.mark.parametrize("text,message", [
    (CLEAN.replace("Overall: 7", "Overall: great"), "missing overall"),
    (CLEAN.replace("Clarity: 8\n", ""), "missing clarity"),
    ("The answer looks fine to me.", "missing factual_accuracy; missing user_satisfaction"),
    (CLEAN.replace("Overall: 7", "Overall: 11"), "overall = 11 is outside"),
    (CLEAN.replace("Clarity: 8", "Clarity: 0"), "clarity = 0 is outside"),
    (CLEAN.replace("Condensability: 9", "Condensability: -3"), "condensability = -3"),
    (CLEAN.replace("Clarity: 8", "Clarity: 12/10"), "clarity = 12/10 is outside"),
    ("   ", "empty"),
])
def test_parse_failures_are_clear(text, message):
  with pytest.raises(JudgeParseError, match=message):
    parse_judgement(text)


def test_all_fields_are_named_in_the_prompt():
  from coursegpt.judge import REASONING_FIRST, SCORES_FIRST
  for field in FIELDS:
    assert field.split("_")[0] in REASONING_FIRST.lower()
    assert field.split("_")[0] in SCORES_FIRST.lower()


def test_judge_retries_by_sampling_then_raises(scripted):
  replies = iter(["no scores here", CLEAN])
  backend = scripted(lambda m, p: next(replies))
  assert judge(backend, "q", "ref", "resp", attempts=3).overall == 7
  params = [p for _, p in backend.requests]
  assert params == [GenParams(160, 0.0, seed=0), GenParams(160, 0.7, seed=1)]
  # The graded material reaches the judge in its last message.
  assert "Student answer: resp" in backend.requests[0][0][-1]["content"]

  always_bad = scripted(lambda m, p: "Overall: 42")
  with pytest.raises(JudgeParseError, match="overall = 42"):
    judge(always_bad, "q", "ref", "resp", attempts=2)
  assert len(always_bad.requests) == 2


def test_parse_scores_first_reply_takes_the_critique_after():
  text = ("Factual accuracy: 4\nUser satisfaction: 5\nClarity: 6\nCondensability: 7\n"
          "Overall: 5\nCritique: Misses the main point.")
  verdict = parse_judgement(text)
  assert verdict.overall == 5 and verdict.critique == "Misses the main point."


@pytest.mark.parametrize("reasoning_first", [True, False])
def test_judge_prompt_shows_a_parseable_worked_example(reasoning_first):
  from coursegpt.judge import judge_messages
  messages = judge_messages("q", "ref", "resp", reasoning_first=reasoning_first)
  assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
  example = parse_judgement(messages[2]["content"])
  assert example.overall == 6 and "sorts the keys is false" in example.critique
  assert messages[2]["content"].startswith("Critique" if reasoning_first else "Factual")
