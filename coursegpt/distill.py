"""Corpus distillation (CourseGPT-zh, arXiv 2405.04781, Sec. 3.1).

For each paragraph a teacher writes a question list, prompted with 6 questions from the human
seed pool and 2 previously generated ones as in-context examples, and asked for more questions
than the paragraph strictly supports. Self-instruct-style expansion rounds then show the
paragraph's questions so far as content examples and 3 seed questions as style examples. Every
configured teacher runs; the union is deduplicated (normalized text, then n-gram similarity,
also against the seed pool, which a small teacher tends to copy). Answers come from a role-play
prompt with the source paragraph given as reference. Records carry their provenance.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Callable, Sequence

from coursegpt.backends import Backend, GenParams
from coursegpt.dedup import Removed, deduplicate
from coursegpt.seeds import SEED_QUESTIONS
from coursegpt.textbook import Paragraph


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  questions_per_call: int = 8  # asked for: more than one paragraph strictly supports
  expansion_rounds: int = 1
  seed_examples: int = 6
  generated_examples: int = 2
  style_examples: int = 3
  max_questions_per_paragraph: int | None = None  # kept after dedup (None: all)
  max_tokens: int = 256
  answer_max_tokens: int = 192
  temperature: float = 0.7
  dedup_ngram: int = 2
  dedup_threshold: float = 0.6


# The examples go in the system message and the passage last: a small teacher copies whatever
# list it has just read, so the text right before its reply is the passage, not the examples.
QUESTION_SYSTEM = """You write study questions for a Python course. Examples of the style of \
questions we want (do not repeat them):
{examples}"""

QUESTION_TEMPLATE = """Textbook passage:
\"\"\"{paragraph}\"\"\"

Write {n} new questions that a student could ask about this passage. Ask more than the passage \
strictly answers: include "why" and "how" questions and related questions it only touches on. \
Reply with a numbered list, one question per line."""

EXPANSION_SYSTEM = """You write study questions for a Python course. Examples of the style of \
questions we want (do not repeat them):
{style}"""

EXPANSION_TEMPLATE = """Questions already written about one topic:
{previous}

Write {n} more questions on the same topic that are different from all of these. Reply with a \
numbered list, one question per line."""

ANSWER_TEMPLATE = """Reference material:
\"\"\"{paragraph}\"\"\"

Question: {question}"""


def _numbered(items: Sequence[str]) -> str:
  return "\n".join(f"{i}. {q}" for i, q in enumerate(items, start=1))


def _bulleted(items: Sequence[str]) -> str:
  return "\n".join(f"- {q}" for q in items)


_INTERROGATIVE = re.compile(r"(?i)^(?:what|why|how|when|where|which|who|whom|whose|is|are|can|"
                            r"could|does|do|did|should|would|will|in what|explain)\b")


def parse_questions(text: str, min_words: int = 3) -> list[str]:
  """Questions of a list reply: one per line, numbering, bullets and "Question:" labels
  removed. A line counts when it ends in '?', or starts like a question and ends a sentence
  (small teachers often close with '.' or a quote); an unfinished last line, cut by the token
  limit, does neither and is dropped."""
  out = []
  for line in text.splitlines():
    line = re.sub(r"^(?:\s*(?:[-*•]|\(?\d+[.):]|\**q(?:uestion)?\s*\d*\s*[.:)]\**))+\s*", "",
                  line.strip(), flags=re.I).strip()
    if len(line) > 1 and line[0] in "\"“" and line[-1] in "\"”":
      line = line[1:-1].strip()
    if len(line.split()) < min_words:
      continue
    if line.endswith("?") or (_INTERROGATIVE.match(line) and line[-1] in ".\"'”"):
      out.append(line)
  return out


def question_messages(paragraph: str, examples: Sequence[str], n: int) -> list[dict[str, str]]:
  return [{"role": "system", "content": QUESTION_SYSTEM.format(examples=_bulleted(examples))},
          {"role": "user", "content": QUESTION_TEMPLATE.format(paragraph=paragraph, n=n)}]


def expansion_messages(previous: Sequence[str], style: Sequence[str], n: int
                       ) -> list[dict[str, str]]:
  return [{"role": "system", "content": EXPANSION_SYSTEM.format(style=_bulleted(style))},
          {"role": "user", "content": EXPANSION_TEMPLATE.format(previous=_numbered(previous),
                                                                n=n)}]


def answer_messages(role_prompt: str, paragraph: str | None, question: str
                    ) -> list[dict[str, str]]:
  user = ANSWER_TEMPLATE.format(paragraph=paragraph, question=question) if paragraph else question
  return [{"role": "system", "content": role_prompt}, {"role": "user", "content": user}]


@dataclasses.dataclass
class DistillResult:
  questions: list[dict[str, Any]]  # kept, with provenance
  removed: list[dict[str, Any]]  # duplicates, with the reason and what they duplicate
  generated: int  # before deduplication


def distill_questions(paragraphs: Sequence[Paragraph], teachers: Sequence[Backend],
                      config: DistillConfig, *, seed: int = 0,
                      on_call: Callable[[], None] | None = None) -> DistillResult:
  """Questions from every (paragraph, teacher), then expansion rounds, then deduplication."""
  rng = random.Random(seed)
  pool: list[str] = []  # every generated question so far: the "previously generated" examples
  raw: list[dict[str, Any]] = []
  for paragraph in paragraphs:
    for teacher in teachers:
      examples = (rng.sample(SEED_QUESTIONS, config.seed_examples)
                  + rng.sample(pool, min(config.generated_examples, len(pool))))
      params = GenParams(config.max_tokens, config.temperature, seed=rng.randrange(2**31))
      found = parse_questions(teacher.chat(
          question_messages(paragraph.text, examples, config.questions_per_call), params))
      if on_call:
        on_call()
      own = list(found)
      raw += [_provenance(q, paragraph, teacher, "generate", 0) for q in found]
      for round_ in range(1, config.expansion_rounds + 1):
        if not own:
          break
        style = rng.sample(SEED_QUESTIONS, config.style_examples)
        params = GenParams(config.max_tokens, config.temperature, seed=rng.randrange(2**31))
        found = parse_questions(teacher.chat(
            expansion_messages(own, style, config.questions_per_call), params))
        if on_call:
          on_call()
        own += found
        raw += [_provenance(q, paragraph, teacher, "expand", round_) for q in found]
      pool += own
  keep, removed = deduplicate([r["question"] for r in raw], existing=SEED_QUESTIONS,
                              n=config.dedup_ngram, threshold=config.dedup_threshold)
  kept = [raw[i] for i in keep]
  if config.max_questions_per_paragraph is not None:
    per_paragraph: dict[str, int] = {}
    capped = []
    for record in kept:
      count = per_paragraph.get(record["paragraph_id"], 0)
      if count < config.max_questions_per_paragraph:
        capped.append(record)
        per_paragraph[record["paragraph_id"]] = count + 1
    kept = capped
  return DistillResult(kept, [_removed_record(r) for r in removed], len(raw))


def _provenance(question: str, paragraph: Paragraph, teacher: Backend, stage: str,
                round_: int) -> dict[str, Any]:
  return {"question": question, "paragraph_id": paragraph.id,
          "teacher": f"{teacher.identity}/{teacher.model}", "stage": stage, "round": round_}


def _removed_record(removed: Removed) -> dict[str, Any]:
  return dataclasses.asdict(removed)


def answer_questions(questions: Sequence[dict[str, Any]], paragraphs: dict[str, str],
                     teacher: Backend, role_prompt: str, prompt_version: str,
                     config: DistillConfig, on_call: Callable[[], None] | None = None
                     ) -> list[dict[str, Any]]:
  """QA records: each question answered by ``teacher`` under ``role_prompt`` with its source
  paragraph as reference (greedy); empty answers are dropped."""
  params = GenParams(config.answer_max_tokens, 0.0)
  records = []
  for record in questions:
    answer = teacher.chat(answer_messages(role_prompt, paragraphs[record["paragraph_id"]],
                                          record["question"]), params).strip()
    if on_call:
      on_call()
    if answer:
      records.append({**record, "answer": answer, "answered_by":
                      f"{teacher.identity}/{teacher.model}", "prompt_version": prompt_version})
  return records


def split_qa(records: Sequence[dict[str, Any]], n_val: int, n_test: int, seed: int = 0
             ) -> tuple[list, list, list]:
  """Shuffled (train, val, test) split of QA records."""
  if n_val + n_test >= len(records):
    raise ValueError(f"{len(records)} QA pairs cannot give {n_val} validation + {n_test} test "
                     "pairs and a non-empty training set; distill more paragraphs")
  order = list(range(len(records)))
  random.Random(seed).shuffle(order)
  shuffled = [records[i] for i in order]
  return (shuffled[n_val + n_test:], shuffled[:n_val], shuffled[n_val:n_val + n_test])
