"""The small-vocabulary lip-reading corpus of the MSRS benchmark: espeak-ng speech of a closed
set of texts (the digit words) with synthetic mouth video."""

import numpy as np

from sparse_sr.data import corpus


def test_closed_text_set_corpus_speaks_only_those_texts_with_aligned_video(tmp_path):
  config = corpus.EspeakCorpusConfig(hours=0.004, test_utterances=6, texts=corpus.DIGIT_WORDS,
                                     video=True)
  assert config.phrases() == list(corpus.DIGIT_WORDS)
  paths = corpus.make_espeak_corpus(tmp_path, config)
  train = corpus.read_manifest(paths["train"])
  test = corpus.read_manifest(paths["test"])
  assert len(test) == 6 and sum(u.duration for u in train) >= 0.004 * 3600
  for u in train + test:
    assert u.text in corpus.DIGIT_WORDS
    frames = np.load(u.video)
    # 25 fps over the whole utterance (the manifest rounds durations to 0.1 ms)
    assert abs(frames.shape[0] - u.duration * 25) < 1.01 and frames.dtype == np.uint8
  train_voices = {u.speaker.split("+")[-1] for u in train}
  test_voices = {u.speaker.split("+")[-1] for u in test}
  assert not train_voices & test_voices  # held-out voices, hence held-out lip geometries
  # without a text set, phrases of the reference manual as before
  default = corpus.EspeakCorpusConfig(max_words=2, vocab_size=50)
  assert default.phrases() == corpus.topic_phrases(2, 50, 0)
