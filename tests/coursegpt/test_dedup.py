import pytest

from coursegpt.dedup import deduplicate, jaccard, ngrams, normalize


def test_normalize():
  assert normalize("  What IS a *list*?\n") == "what is a list"
  assert normalize("ﬁle—names!") == normalize("file names")


def test_ngram_jaccard_hand_computed():
  a = ngrams("What is a list in Python?", 2)
  b = ngrams("What is a tuple in Python?", 2)
  # {what is, is a, a list, list in, in python} vs {..., a tuple, tuple in, ...}: 3 shared of 7.
  assert jaccard(a, b) == pytest.approx(3 / 7)
  assert ngrams("Why?", 2) == {("why",)}


def test_deduplicate_exact_near_and_existing():
  texts = [
      "What is a list?",  # kept
      "what is a LIST ?",  # exact after normalization
      "What is the difference between a list and a tuple in Python?",  # copies the seed
      "How does a for loop know when to stop iterating?",  # kept
      "How does a for loop know when to stop iterating over it?",  # near duplicate of 3
      "",  # empty
  ]
  seeds = ["What is the difference between a list and a tuple in Python?"]
  keep, removed = deduplicate(texts, existing=seeds, n=2, threshold=0.6)
  assert keep == [0, 3]
  reasons = [(r.text, r.reason, r.duplicate_of) for r in removed]
  assert reasons[0] == (texts[1], "exact", texts[0])
  assert reasons[1] == (texts[2], "exact", seeds[0])
  assert reasons[2][1:] == ("near", texts[3])
  # 9 bigrams of the kept question (10 words), 11 of the longer one (12 words), 9 shared.
  assert removed[2].similarity == pytest.approx(9 / 11)
  assert reasons[3][1] == "empty"
  with pytest.raises(ValueError, match="threshold"):
    deduplicate(texts, threshold=0)
