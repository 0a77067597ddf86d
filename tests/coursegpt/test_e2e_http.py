"""End to end through the real local HTTP server: SmolLM2 served by ``llm.server`` on 127.0.0.1,
reached by ``OpenAIBackend``; a tiny distillation yields non-empty, deduplicated QA pairs with
provenance, and a re-run is served entirely from the cache."""

import dataclasses

import pytest

from coursegpt.dedup import normalize
from coursegpt.pipeline import LOCAL, QUICK, Backends, read_jsonl
from coursegpt.seeds import SEED_QUESTIONS
from coursegpt.stages import run_distill
from coursegpt.textbook import embedded_paragraphs


@pytest.fixture(scope="module")
def smollm2_available():
  from llm.gguf_loader import smollm2_path
  try:
    smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_quick_distill_over_http(tmp_path, smollm2_available):
  # One short paragraph, one expansion round, two questions answered: 4 HTTP calls.
  paragraph = min(embedded_paragraphs(), key=lambda p: len(p.text))
  config = dataclasses.replace(QUICK, n_val=0, n_test=0, distill=dataclasses.replace(
      QUICK.distill, max_questions_per_paragraph=2))
  with Backends(tmp_path / "cache") as backends:
    metrics = run_distill(backends, [paragraph], tmp_path, config, teachers=[LOCAL],
                          answerer=LOCAL, seed=0)
    first_calls = backends.calls
    assert backends.local_url().startswith("http://127.0.0.1:")
    qa = read_jsonl(tmp_path / "qa.jsonl")
    assert 1 <= len(qa) <= 2 and metrics["qa_pairs"] == len(qa)
    assert first_calls == 2 + len(qa)  # question list + expansion + one answer per question
    normalized = [normalize(r["question"]) for r in qa]
    assert len(set(normalized)) == len(normalized)
    assert not set(normalized) & {normalize(s) for s in SEED_QUESTIONS}
    for record in qa:
      assert record["answer"].strip() and record["question"].strip()
      assert record["paragraph_id"] == paragraph.id
      assert record["teacher"] == "openai:http://127.0.0.1/v1/smollm2-135m"
      assert record["prompt_version"] == "seed-0" and record["stage"] in ("generate", "expand")
    removed = read_jsonl(tmp_path / "removed.jsonl")
    assert metrics["duplicates_removed"] == len(removed)
    # Generated = kept + duplicates + those over the per-paragraph cap.
    assert metrics["questions_generated"] >= metrics["questions_kept"] + len(removed)

    # Resume: the same run again makes no LLM call and writes the same QA pairs.
    run_distill(backends, [paragraph], tmp_path, config, teachers=[LOCAL], answerer=LOCAL,
                seed=0)
    assert backends.calls == first_calls
    assert read_jsonl(tmp_path / "qa.jsonl") == qa
