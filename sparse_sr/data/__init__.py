"""Speech data: espeak-ng synthesis, synthetic mouth video, corpora manifests, batching."""

from sparse_sr.data.audio import read_wav, write_wav
from sparse_sr.data.corpus import (EspeakCorpusConfig, Utterance, load_lrs3_style,
                                   make_espeak_corpus, make_fsdd_corpus, read_manifest,
                                   write_manifest)
from sparse_sr.data.loader import (BatchIterator, Dataset, Padding, Sampler, ShuffleSampler,
                                   collate, eval_batches)

__all__ = [
    "BatchIterator", "Dataset", "EspeakCorpusConfig", "Padding", "Sampler", "ShuffleSampler",
    "Utterance", "collate", "eval_batches", "load_lrs3_style", "make_espeak_corpus",
    "make_fsdd_corpus", "read_manifest", "read_wav", "write_manifest", "write_wav",
]
