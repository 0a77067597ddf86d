"""Hand-written role-play prompts (the optimization's starting population) and the prompts that
ask an LLM to improve them (CourseGPT-zh Sec. 3.2: reflection and resampling)."""

from __future__ import annotations

import re
from typing import Sequence

ROLE_PROMPTS: tuple[str, ...] = (
    "You are a patient Python teacher. Answer the student's question correctly and concisely, "
    "using the reference material when it is given.",
    "You are a teaching assistant for an introductory Python course. Give a short, accurate "
    "answer with a tiny code example when it helps.",
    "You are an expert Python developer explaining the language to a beginner. Be precise, "
    "define any term you use, and keep the answer brief.",
    "You answer questions about Python's documentation. State the rule first, then one sentence "
    "of explanation. Do not invent facts that the reference does not support.",
)

REFLECTION_TEMPLATE = """Here is a system prompt that tells an assistant how to answer Python \
course questions:
"{prompt}"

A grader criticized answers written with this prompt:
{critiques}

Rewrite the system prompt so that the answers avoid these problems. Reply with the new prompt \
only, on one line."""

RESAMPLE_TEMPLATE = """Here are system prompts for answering Python course questions, sorted from \
best to worst by a grader's score (out of 10):
{ranked}

Find what the best prompts have in common, then write {n} new, different system prompts that \
should score even higher. Reply with a numbered list, one prompt per line."""

_ITEM = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|prompt\s*\d*\s*[:.)-])\s*", re.IGNORECASE)


def reflection_messages(prompt: str, critiques: Sequence[str]) -> list[dict[str, str]]:
  listed = "\n".join(f"- {c}" for c in critiques) or "- (no critique was given)"
  return [{"role": "user", "content": REFLECTION_TEMPLATE.format(prompt=prompt,
                                                                 critiques=listed)}]


def resample_messages(ranked: Sequence[tuple[str, float]], n: int) -> list[dict[str, str]]:
  listed = "\n".join(f"{i}. (score {score:.2f}) {text}"
                     for i, (text, score) in enumerate(ranked, start=1))
  return [{"role": "user", "content": RESAMPLE_TEMPLATE.format(ranked=listed, n=n)}]


def _clean(line: str) -> str:
  line = _ITEM.sub("", line.strip()).strip()
  line = re.sub(r"^\(score [^)]*\)\s*", "", line)
  line = re.sub(r"(?i)^(?:new|system|rewritten)?\s*prompt\s*:\s*", "", line)
  return line.strip().strip('"“”\'').strip()


def parse_prompt(text: str, min_words: int = 5) -> str | None:
  """The rewritten prompt of a reflection reply: its first line of at least ``min_words``."""
  for line in text.splitlines():
    line = _clean(line)
    if len(line.split()) >= min_words:
      return line
  return None


def parse_prompt_list(text: str, n: int, min_words: int = 5) -> list[str]:
  """Up to ``n`` distinct prompts from a numbered (or bulleted, or line-per-item) reply."""
  prompts = []
  for line in text.splitlines():
    line = _clean(line)
    if len(line.split()) >= min_words and line not in prompts:
      prompts.append(line)
  return prompts[:n]
