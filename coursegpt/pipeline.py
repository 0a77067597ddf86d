"""The CourseGPT pipeline's stages, shared by the CLI and the benchmark: backends by spec
("local" or an OpenAI-compatible URL), the quick/full configurations, and QA-directory I/O.

A QA directory holds ``paragraphs.jsonl``, ``questions.jsonl`` (kept, with provenance),
``removed.jsonl`` (duplicates and why), ``qa.jsonl`` and its ``train/val/test.jsonl`` split,
``prompt.json`` once a prompt is optimized, and ``cache/`` (every LLM call, see
:mod:`coursegpt.cache`), which makes a re-run resume where a killed one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from coursegpt.backends import CachedBackend, OpenAIBackend
from coursegpt.cache import DiskCache, atomic_write_text
from coursegpt.distill import DistillConfig
from coursegpt.optimize import OptimizeConfig
from coursegpt.prompts import ROLE_PROMPTS

LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  paragraphs: int
  distill: DistillConfig
  optimize: OptimizeConfig
  initial_prompts: int
  n_val: int
  n_test: int
  eval_max_tokens: int
  sft_steps: int
  sft_batch_size: int
  sft_max_len: int
  sft_learning_rate: float
  sft_rank: int = 64
  sft_alpha: float = 128.0


# Paper-like: 3 rounds, top 5, 5 critiques, all hand-written prompts, rank 64 / alpha 128 / 1e-4.
FULL = PipelineConfig(
    paragraphs=40, distill=DistillConfig(), optimize=OptimizeConfig(),
    initial_prompts=len(ROLE_PROMPTS), n_val=10, n_test=20, eval_max_tokens=192,
    sft_steps=200, sft_batch_size=4, sft_max_len=384, sft_learning_rate=1e-4)

# Minutes on 2 shared CPU cores: one max_tokens for every call (one compiled decode shape),
# scores before the critique (SmolLM2 reasoning first does not reach the scores in 64 tokens),
# 4 paragraphs (2 questions kept from each; SmolLM2 yields 0-3 new ones from a 64-token list),
# 1 round from 2 prompts keeping the top 1 (one reflection, one resampled prompt), a few SFT
# steps at a larger learning rate.
_Q = 64
QUICK = PipelineConfig(
    paragraphs=4,
    distill=DistillConfig(questions_per_call=4, expansion_rounds=1,
                          max_questions_per_paragraph=2, max_tokens=_Q, answer_max_tokens=_Q),
    optimize=OptimizeConfig(rounds=1, top_k=1, critiques=5, answer_max_tokens=_Q,
                            judge_max_tokens=_Q, rewrite_max_tokens=_Q, judge_attempts=2,
                            judge_reasoning_first=False),
    initial_prompts=2, n_val=1, n_test=2, eval_max_tokens=_Q,
    sft_steps=4, sft_batch_size=2, sft_max_len=128, sft_learning_rate=1e-3)


def config_for(quick: bool) -> PipelineConfig:
  return QUICK if quick else FULL


class Backends(contextlib.ExitStack):
  """Backends by spec, all cached in one :class:`DiskCache`; "local" starts SmolLM2 behind
  ``llm.server`` on 127.0.0.1 once (in a thread) and reaches it over HTTP."""

  def __init__(self, cache_dir: str | Path):
    super().__init__()
    self.cache = DiskCache(cache_dir)
    self._engine = None
    self._local_url: str | None = None
    self._backends: list[CachedBackend] = []
    self.model_source: str | None = None

  @property
  def engine(self):
    """The in-process SmolLM2 engine (loaded on first use)."""
    if self._engine is None:
      from coursegpt.serving import load_default_engine
      self._engine, self.model_source = load_default_engine()
    return self._engine

  def fresh_model(self):
    """A copy of the engine's model, free to be adapted or updated: ``nnx.merge`` alone would
    share the engine's Variable objects, so updating its weights would change the engine's."""
    from flax import nnx
    return nnx.clone(nnx.merge(self.engine.generator.graphdef, self.engine.generator.state))

  def local_url(self) -> str:
    if self._local_url is None:
      from coursegpt.serving import local_server
      self._local_url = self.enter_context(local_server(self.engine))
    return self._local_url

  def get(self, spec: str, model: str | None = None) -> CachedBackend:
    url = self.local_url() if spec == LOCAL else spec
    return self.cached(OpenAIBackend(url, model))

  def cached(self, backend) -> CachedBackend:
    """``backend`` behind the shared cache, its calls counted in :attr:`calls`."""
    cached = CachedBackend(backend, self.cache)
    self._backends.append(cached)
    return cached

  @property
  def calls(self) -> int:
    """LLM calls actually made (cache misses) through every backend handed out."""
    return sum(b.calls for b in self._backends)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
  atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
  return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
  from jaxrepro.metrics import read_jsonl as read
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found (run `jaxrepro coursegpt distill` first)")
  return read(path)


def require_fields(records: Sequence[dict[str, Any]], fields: Sequence[str], where: str) -> None:
  for i, record in enumerate(records):
    missing = [f for f in fields if not isinstance(record.get(f), str)]
    if missing:
      raise ValueError(f"{where}: record {i} lacks string field(s) {missing}")


def read_paragraphs(qa_dir: Path) -> dict[str, str]:
  return {r["id"]: r["text"] for r in read_jsonl(qa_dir / "paragraphs.jsonl")}


def read_role_prompt(qa_dir: Path) -> tuple[str, str]:
  """(version id, text) of the optimized prompt in ``qa_dir/prompt.json``, else the first
  hand-written one."""
  path = qa_dir / "prompt.json"
  if path.is_file():
    best = json.loads(path.read_text())["best"]
    return best["id"], best["text"]
  return "seed-0", ROLE_PROMPTS[0]
