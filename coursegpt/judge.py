"""LLM-as-judge with a chain-of-thought prompt, robust score parsing and the length penalty
(CourseGPT-zh, arXiv 2405.04781, Sec. 3.2).

The judge compares a response with a reference answer on Factual accuracy, User satisfaction,
Clarity and Condensability, then gives an overall (comprehensive) score, each on 1..10. A reply
that lacks a field or gives a number outside 1..10 raises :class:`JudgeParseError` naming what is
wrong: a bad judgement is never read as a silent zero.
"""

from __future__ import annotations

import dataclasses
import re

from coursegpt.backends import Backend, GenParams

SCORE_MIN, SCORE_MAX = 1.0, 10.0
LENGTH_ALPHA = 0.5  # the paper's alpha

# Field -> regex of the names a judge may use for it.
FIELDS: dict[str, str] = {
    "factual_accuracy": r"factual(?:ity)?(?:[ _]+accuracy)?|accuracy",
    "user_satisfaction": r"user[ _]+satisfaction|satisfaction",
    "clarity": r"clarity",
    "condensability": r"condensab\w*|concise\w*|condensed",
    "overall": r"overall(?:[ _]+score)?|comprehensive(?:[ _]+score)?|final[ _]+score",
}

JUDGE_SYSTEM = ("You are a strict, impartial teacher grading a student's answer to a Python "
                "course question against a reference answer.")

_SCORE_LINES = """Factual accuracy: <1-10>
User satisfaction: <1-10>
Clarity: <1-10>
Condensability: <1-10>
Overall: <1-10>"""

# Chain of thought (the paper): critique first, then the scores.
REASONING_FIRST = ("First write one or two sentences of critique after \"Critique:\". Then give "
                   "each score from 1 (worst) to 10 (best), one per line, exactly in this "
                   "format:\nCritique: <your reasoning>\n" + _SCORE_LINES)
# For small judges, which wander while reasoning and never reach the scores within a short token
# limit: the scores first, then one sentence of critique (still fed to reflection).
SCORES_FIRST = ("Give each score from 1 (worst) to 10 (best), one per line, then one sentence of "
                "critique, exactly in this format:\n" + _SCORE_LINES
                + "\nCritique: <one sentence>")

JUDGE_TEMPLATE = """Question: {question}

Reference answer: {reference}

Student answer: {response}

Compare the student answer with the reference answer. {instructions}"""


class JudgeParseError(ValueError):
  """The judge's reply does not contain every score, or a score is out of range."""


@dataclasses.dataclass(frozen=True)
class Judgement:
  scores: dict[str, float]  # every key of FIELDS
  critique: str

  @property
  def overall(self) -> float:
    return self.scores["overall"]


_NUMBER = r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?"


def parse_judgement(text: str) -> Judgement:
  """Scores and critique of a judge reply.

  Tolerates markdown (``**Clarity**: 7``), ``7/10`` or ``7 out of 10``, ``=``/``-``/``:``
  separators, text around the scores and repeated fields (the last one wins: reasoning may
  mention a field before scoring it). A fraction over another scale is rescaled to 1..10.
  """
  if not isinstance(text, str) or not text.strip():
    raise JudgeParseError("the judge's reply is empty")
  scores, first_score_at, last_score_end, problems = {}, len(text), 0, []
  for field, names in FIELDS.items():
    pattern = (rf"(?im)^[\s>*#\-\d.)]*\**\s*(?:{names})\s*(?:score)?\s*\**\s*[:=\-]\s*\**\s*"
               + _NUMBER)
    matches = list(re.finditer(pattern, text))
    if not matches:
      problems.append(f"missing {field}")
      continue
    match = matches[-1]
    value = float(match.group(1))
    if match.group(2) is not None:
      scale = float(match.group(2))
      if scale <= 0:
        problems.append(f"{field}: scale {scale:g} is not positive")
        continue
      value = value / scale * SCORE_MAX
    if not SCORE_MIN <= value <= SCORE_MAX:
      problems.append(f"{field} = {match.group(0).split(':')[-1].strip()} is outside "
                      f"[{SCORE_MIN:g}, {SCORE_MAX:g}]")
      continue
    scores[field] = value
    first_score_at = min(first_score_at, match.start())
    last_score_end = max(last_score_end, match.end())
  if problems:
    raise JudgeParseError("; ".join(problems) + f" in judge reply {text.strip()[:200]!r}")
  critique = text[:first_score_at].strip() or text[last_score_end:].strip()
  critique = re.sub(r"(?i)^\W*critique\W*", "", critique).strip()
  return Judgement(scores, critique)


def length_penalized(score: float, response_len: int, reference_len: int,
                     alpha: float = LENGTH_ALPHA) -> float:
  """s = s_llm if len_res <= len_ref, else s_llm - alpha * (len_res / len_ref - 1)."""
  if reference_len <= 0:
    raise ValueError(f"reference length must be positive, got {reference_len}")
  if response_len <= reference_len:
    return score
  return score - alpha * (response_len / reference_len - 1.0)


def text_length(text: str) -> int:
  """Length in whitespace-separated words (the paper counts Chinese characters)."""
  return len(text.split())


# A worked grading exchange shown before the real request: small judges copy the format of a
# previous assistant turn far more reliably than they follow a format description.
_EXAMPLE = dict(
    question="What does the len() function return for a dictionary?",
    reference="len(d) returns the number of keys (items) stored in the dictionary d.",
    response="It returns the number of key-value pairs, so len({'a': 1, 'b': 2}) is 2. It also "
    "sorts the keys.")
_EXAMPLE_CRITIQUE = ("Critique: The count of key-value pairs is correct and the example helps, "
                     "but the claim that len() sorts the keys is false.")
_EXAMPLE_SCORES = """Factual accuracy: 5
User satisfaction: 6
Clarity: 8
Condensability: 7
Overall: 6"""


def judge_messages(question: str, reference: str, response: str, *,
                   reasoning_first: bool = True) -> list[dict[str, str]]:
  instructions = REASONING_FIRST if reasoning_first else SCORES_FIRST
  example_reply = (f"{_EXAMPLE_CRITIQUE}\n{_EXAMPLE_SCORES}" if reasoning_first
                   else f"{_EXAMPLE_SCORES}\n{_EXAMPLE_CRITIQUE}")
  return [{"role": "system", "content": JUDGE_SYSTEM},
          {"role": "user", "content": JUDGE_TEMPLATE.format(**_EXAMPLE,
                                                            instructions=instructions)},
          {"role": "assistant", "content": example_reply},
          {"role": "user", "content": JUDGE_TEMPLATE.format(
              question=question, reference=reference, response=response,
              instructions=instructions)}]


def judge(backend: Backend, question: str, reference: str, response: str, *,
          max_tokens: int = 160, attempts: int = 3, reasoning_first: bool = True) -> Judgement:
  """Asks ``backend`` to grade ``response``; an unparseable reply is retried by sampling
  (temperature 0.7, new seed) up to ``attempts`` times, then the last error is raised."""
  messages = judge_messages(question, reference, response, reasoning_first=reasoning_first)
  error = None
  for attempt in range(attempts):
    params = GenParams(max_tokens=max_tokens, temperature=0.0 if attempt == 0 else 0.7,
                       seed=attempt)
    try:
      return parse_judgement(backend.chat(messages, params))
    except JudgeParseError as e:
      error = e
  raise error


def penalized_score(judgement: Judgement, response: str, reference: str,
                    alpha: float = LENGTH_ALPHA) -> float:
  return length_penalized(judgement.overall, text_length(response),
                          max(text_length(reference), 1), alpha)
