"""CourseGPT-zh (arXiv 2405.04781): QA corpus distillation, LLM-as-judge prompt optimization, LoRA SFT."""

from coursegpt.backends import Backend, BackendError, CachedBackend, GenParams, LocalBackend, \
    OpenAIBackend
from coursegpt.cache import DiskCache, atomic_write_text, cache_key
from coursegpt.dedup import deduplicate, normalize
from coursegpt.distill import DistillConfig, answer_questions, distill_questions, \
    parse_questions, split_qa
from coursegpt.judge import Judgement, JudgeParseError, judge, length_penalized, parse_judgement
from coursegpt.optimize import Candidate, OptimizeConfig, OptimizeResult, optimize_prompts, top_k
from coursegpt.seeds import SEED_QUESTIONS
from coursegpt.textbook import Paragraph, load_textbook
from coursegpt.textmetrics import bleu, gleu, reference_metrics, rouge

__all__ = [
    "Backend", "BackendError", "CachedBackend", "Candidate", "DiskCache", "DistillConfig",
    "GenParams", "Judgement", "JudgeParseError", "LocalBackend", "OpenAIBackend",
    "OptimizeConfig", "OptimizeResult", "Paragraph", "SEED_QUESTIONS", "answer_questions",
    "atomic_write_text", "bleu", "cache_key", "deduplicate", "distill_questions", "gleu", "judge",
    "length_penalized", "load_textbook", "normalize", "optimize_prompts", "parse_judgement",
    "parse_questions", "reference_metrics", "rouge", "split_qa", "top_k",
]
