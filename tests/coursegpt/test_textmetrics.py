"""Metrics against hand computations."""

import math

import pytest

from coursegpt.textmetrics import bleu, gleu, reference_metrics, rouge

HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def test_gleu_hand_computed():
  # n = 1..4 n-grams: 18 in each sentence; matches 5 + 3 + 1 + 0 = 9 -> min(9/18, 9/18).
  assert gleu([HYP], [REF]) == pytest.approx(0.5)
  # "a b" vs "a b c d": 3 hypothesis n-grams, 10 reference n-grams, 3 matches -> recall 0.3.
  assert gleu(["a b"], ["a b c d"]) == pytest.approx(0.3)
  # Corpus GLEU pools the counts: 12 matches, 21 hypothesis and 28 reference n-grams.
  assert gleu([HYP, "a b"], [REF, "a b c d"]) == pytest.approx(12 / 28)
  assert gleu(["x y"], ["a b"]) == 0.0
  assert gleu([REF], [REF]) == pytest.approx(1.0)


def test_bleu_hand_computed():
  assert bleu([HYP], [REF], 1) == pytest.approx(5 / 6, abs=1e-4)
  assert bleu([HYP], [REF], 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-4)
  # Brevity penalty: 2 hypothesis tokens against 6 reference tokens.
  assert bleu(["the cat"], [REF], 1) == pytest.approx(math.exp(1 - 6 / 2), abs=1e-4)
  assert bleu([REF], [REF], 4) == pytest.approx(1.0)


def test_rouge_hand_computed():
  scores = rouge([HYP], [REF])
  assert scores["rouge1"] == pytest.approx(5 / 6)  # 5 shared unigrams of 6 each side
  assert scores["rouge2"] == pytest.approx(3 / 5)  # the cat, on the, the mat
  assert scores["rougeL"] == pytest.approx(5 / 6)  # LCS "the cat on the mat"


def test_reference_metrics_keys_and_errors():
  metrics = reference_metrics([HYP], [REF])
  assert set(metrics) == {"bleu1", "bleu2", "bleu3", "bleu4", "gleu", "rouge1", "rouge2",
                          "rougeL"}
  with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
    reference_metrics([HYP], [REF, REF])
  with pytest.raises(ValueError, match="no hypotheses"):
    gleu([], [])
