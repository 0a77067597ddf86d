"""Discrete prompt optimization with an LLM judge (CourseGPT-zh, arXiv 2405.04781, Sec. 3.2).

Start from hand-written role-play prompts and score each on a validation sample: an answerer
LLM answers every validation question under the prompt, the judge grades the answer against the
reference, and the length penalty applies (:func:`coursegpt.judge.penalized_score`). Each round
keeps the top ``k`` prompts, then
  * reflection: for each of them, ``critiques`` random judge critiques are fed back to an
    optimizer LLM, which rewrites the prompt;
  * resample: the sorted (prompt, score) list is given to the optimizer LLM, which extracts the
    patterns of the good ones and writes as many new prompts;
and the new prompts are scored. After the last round the best prompt on validation wins.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
from typing import Any, Callable, Sequence

from coursegpt.backends import Backend, GenParams
from coursegpt.distill import answer_messages
from coursegpt.judge import LENGTH_ALPHA, JudgeParseError, judge, penalized_score
from coursegpt.prompts import parse_prompt, parse_prompt_list, reflection_messages, \
    resample_messages

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Candidate:
  """One prompt of the population and its validation record."""
  id: str  # "seed-0", "r1-reflect-seed-0", "r1-resample-2", ...
  text: str
  origin: str  # "seed", "reflection" or "resample"
  round: int
  parent: str | None = None  # reflection: the prompt it rewrote
  score: float | None = None  # mean length-penalized judge score (None: no valid judgement)
  raw_scores: list[float] = dataclasses.field(default_factory=list)
  critiques: list[str] = dataclasses.field(default_factory=list)
  judge_failures: int = 0

  def summary(self) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(self).items() if k != "critiques"}


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
  rounds: int = 3
  top_k: int = 5
  critiques: int = 5  # random critiques fed to each reflection
  answer_max_tokens: int = 192
  judge_max_tokens: int = 160
  rewrite_max_tokens: int = 192
  judge_attempts: int = 3
  judge_reasoning_first: bool = True  # the paper's chain of thought; False for tiny judges
  alpha: float = LENGTH_ALPHA
  with_paragraph: bool = True  # answer with the source paragraph as reference, as in distill


@dataclasses.dataclass
class OptimizeResult:
  candidates: list[Candidate]
  trajectory: list[dict[str, Any]]  # per round: best and top-k mean validation scores
  best: Candidate


def score_candidate(candidate: Candidate, validation: Sequence[dict[str, Any]],
                    paragraphs: dict[str, str], answerer: Backend, judge_backend: Backend,
                    config: OptimizeConfig, on_call: Callable[[], None] | None = None) -> None:
  """Fills ``candidate``'s score and critiques from the validation set; judge replies that
  cannot be parsed are counted in ``judge_failures`` and left out of the mean."""
  params = GenParams(config.answer_max_tokens, 0.0)
  for qa in validation:
    paragraph = paragraphs.get(qa["paragraph_id"]) if config.with_paragraph else None
    response = answerer.chat(answer_messages(candidate.text, paragraph, qa["question"]),
                             params).strip()
    try:
      verdict = judge(judge_backend, qa["question"], qa["answer"], response,
                      max_tokens=config.judge_max_tokens, attempts=config.judge_attempts,
                      reasoning_first=config.judge_reasoning_first)
    except JudgeParseError as e:
      candidate.judge_failures += 1
      log.warning("judge failed on prompt %s: %s", candidate.id, e)
    else:
      candidate.raw_scores.append(penalized_score(verdict, response, qa["answer"],
                                                  config.alpha))
      if verdict.critique:
        candidate.critiques.append(verdict.critique)
    if on_call:
      on_call()
  candidate.score = statistics.fmean(candidate.raw_scores) if candidate.raw_scores else None


def top_k(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
  """The ``k`` best scored candidates (unscored ones never); on a tie the earlier one wins, so
  a new prompt replaces an incumbent only by scoring strictly higher."""
  scored = [c for c in candidates if c.score is not None]
  return sorted(scored, key=lambda c: -c.score)[:k]  # sorted() is stable


def reflect(candidate: Candidate, optimizer: Backend, config: OptimizeConfig,
            rng: random.Random, round_: int) -> Candidate | None:
  """Rewrites ``candidate`` from up to ``config.critiques`` random critiques of it."""
  critiques = rng.sample(candidate.critiques, min(config.critiques, len(candidate.critiques)))
  reply = optimizer.chat(reflection_messages(candidate.text, critiques),
                         GenParams(config.rewrite_max_tokens, 0.0))
  text = parse_prompt(reply)
  if text is None:
    log.warning("reflection on %s gave no usable prompt", candidate.id)
    return None
  return Candidate(f"r{round_}-reflect-{candidate.id}", text, "reflection", round_,
                   parent=candidate.id)


def resample(ranked: Sequence[Candidate], optimizer: Backend, config: OptimizeConfig,
             round_: int) -> list[Candidate]:
  """As many new prompts as ``ranked`` from the sorted (prompt, score) list."""
  reply = optimizer.chat(resample_messages([(c.text, c.score) for c in ranked], len(ranked)),
                         GenParams(config.rewrite_max_tokens, 0.0))
  return [Candidate(f"r{round_}-resample-{i}", text, "resample", round_)
          for i, text in enumerate(parse_prompt_list(reply, len(ranked)))]


def _trajectory_point(round_: int, candidates: Sequence[Candidate], k: int,
                      new: Sequence[Candidate]) -> dict[str, Any]:
  best = top_k(candidates, k)
  new_scores = [c.score for c in new if c.score is not None]
  return {"round": round_, "best": best[0].score if best else None,
          "best_id": best[0].id if best else None,
          "top_k_mean": statistics.fmean(c.score for c in best) if best else None,
          "new_prompts": len(new), "new_best": max(new_scores) if new_scores else None}


def optimize_prompts(initial: Sequence[str], validation: Sequence[dict[str, Any]],
                     paragraphs: dict[str, str], *, answerer: Backend, judge_backend: Backend,
                     optimizer: Backend, config: OptimizeConfig, seed: int = 0,
                     on_call: Callable[[], None] | None = None) -> OptimizeResult:
  """Runs the reflection/resample loop; see the module docstring."""
  if not initial:
    raise ValueError("prompt optimization needs at least one initial prompt")
  if not validation:
    raise ValueError("prompt optimization needs a non-empty validation set")
  rng = random.Random(seed)
  candidates = [Candidate(f"seed-{i}", text, "seed", 0) for i, text in enumerate(initial)]
  for c in candidates:
    score_candidate(c, validation, paragraphs, answerer, judge_backend, config, on_call)
  trajectory = [_trajectory_point(0, candidates, config.top_k, candidates)]
  for round_ in range(1, config.rounds + 1):
    best = top_k(candidates, config.top_k)
    if not best:
      raise JudgeParseError("no prompt received a parseable judgement; the judge cannot grade "
                            "(see the warnings); use a stronger judge (--judge URL)")
    new = [r for r in (reflect(c, optimizer, config, rng, round_) for c in best) if r]
    new += resample(best, optimizer, config, round_)
    known = {c.text for c in candidates}
    new = [c for i, c in enumerate(new) if c.text not in known
           and c.text not in {d.text for d in new[:i]}]
    for c in new:
      score_candidate(c, validation, paragraphs, answerer, judge_backend, config, on_call)
    candidates += new
    trajectory.append(_trajectory_point(round_, candidates, config.top_k, new))
  best = top_k(candidates, 1)
  return OptimizeResult(candidates, trajectory, best[0])
