"""Reference-based metrics of the SFT evaluation (CourseGPT-zh Sec. 4): corpus BLEU-1..4
(sacrebleu), GLEU (Google-BLEU, Wu et al. 2016, arXiv:1609.08144, Sec. 7) and ROUGE-1/2/L
F-measures (rouge-score), all in [0, 1]."""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  if not hypotheses:
    raise ValueError("no hypotheses to score")


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int) -> float:
  """Corpus BLEU with n-grams up to ``max_order`` (uniform weights, brevity penalty) from
  sacrebleu with its standard 13a tokenization and exponential smoothing."""
  from sacrebleu.metrics import BLEU
  _check(hypotheses, references)
  metric = BLEU(max_ngram_order=max_order)
  return metric.corpus_score(list(hypotheses), [list(references)]).score / 100.0


def _tokens(text: str) -> list[str]:
  from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
  return Tokenizer13a()(text).split()


def _ngram_counts(tokens: Sequence[str], min_n: int, max_n: int) -> Counter:
  return Counter(tuple(tokens[i:i + n]) for n in range(min_n, max_n + 1)
                 for i in range(len(tokens) - n + 1))


def gleu(hypotheses: Sequence[str], references: Sequence[str], min_n: int = 1,
         max_n: int = 4) -> float:
  """Corpus GLEU: all n-grams (``min_n``..``max_n``) of the corpus pooled; the score is
  min(matches / hypothesis n-grams, matches / reference n-grams). Tokens as sacrebleu's 13a."""
  _check(hypotheses, references)
  matches = hyp_total = ref_total = 0
  for hypothesis, reference in zip(hypotheses, references):
    hyp = _ngram_counts(_tokens(hypothesis), min_n, max_n)
    ref = _ngram_counts(_tokens(reference), min_n, max_n)
    matches += sum((hyp & ref).values())
    hyp_total += sum(hyp.values())
    ref_total += sum(ref.values())
  if hyp_total == 0 or ref_total == 0:
    return 0.0
  return min(matches / hyp_total, matches / ref_total)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1/2/L F-measures (rouge-score, Porter stemming)."""
  from rouge_score import rouge_scorer
  _check(hypotheses, references)
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
  totals = Counter()
  for hypothesis, reference in zip(hypotheses, references):
    for name, score in scorer.score(reference, hypothesis).items():
      totals[name] += score.fmeasure
  return {name: totals[name] / len(hypotheses) for name in ("rouge1", "rouge2", "rougeL")}


def reference_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """BLEU-1..4, GLEU and ROUGE-1/2/L in one dict."""
  out = {f"bleu{n}": bleu(hypotheses, references, n) for n in range(1, 5)}
  out["gleu"] = gleu(hypotheses, references)
  out.update(rouge(hypotheses, references))
  return out
