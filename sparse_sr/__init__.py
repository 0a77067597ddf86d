"""sparse_sr: speech recognition stack for MSRS (arXiv:2406.17614) and DDP-ASR
(arXiv:2406.18373).

Log-mel front end and SpecAugment in JAX (``features``), Conformer encoder, Transformer
decoder, ResNet-18 visual front end and audio-visual fusion (``conformer``, ``decoder``,
``visual``, ``model``), hybrid CTC/attention loss with per-utterance losses (``losses``),
greedy CTC and joint CTC/attention beam search with WER/CER (``decoding``), characters or
SentencePiece (``tokenizer``), corpora (espeak-ng synthesis with synthetic mouth video,
FSDD, pocketsphinx-testdata, LRS3-style folders) and resumable batching with a pluggable
sampler (``data``), and the training loop (``train``). MSRS continuous sparsification
(``msrs``) with its SET/RigL/magnitude baselines (``sparse_methods``, over
``jaxrepro.sparsity``), and DDP-ASR dynamic data pruning (``ddp``).
"""

from sparse_sr.ddp import DataPruningSampler, TimeDrop
from sparse_sr.decoding import CTCPrefixScorer, beam_search, error_rates, greedy_ctc
from sparse_sr.features import FeatureConfig, SpecAugmentConfig, log_mel, spec_augment
from sparse_sr.losses import attention_losses, ctc_losses, hybrid_loss
from sparse_sr.model import PRESETS, ModelConfig, SpeechRecognizer, preset
from sparse_sr.msrs import MSRS, MaskStability
from sparse_sr.sparse_methods import sparse_training
from sparse_sr.tokenizer import CharTokenizer, SentencePieceTokenizer
from sparse_sr.train import TrainConfig, evaluate, restore_model, train

__all__ = [
    "CTCPrefixScorer", "CharTokenizer", "DataPruningSampler", "FeatureConfig", "MSRS",
    "MaskStability", "ModelConfig", "PRESETS", "SentencePieceTokenizer", "SpecAugmentConfig",
    "SpeechRecognizer", "TimeDrop", "TrainConfig", "attention_losses", "beam_search",
    "ctc_losses", "error_rates", "evaluate", "greedy_ctc", "hybrid_loss", "log_mel", "preset",
    "restore_model", "spec_augment", "sparse_training", "train",
]
