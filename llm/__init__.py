"""LLaMA-family Flax NNX decoder (SmolLM2-135M weights), KV-cache generation, FFN-SkipLLM (arXiv 2404.03865)."""

from llm.ffnskip import SkipRule, adaptive_rule, random_rule, static_rule
from llm.generate import Generation, Generator, SamplingParams, sample, teacher_forced
from llm.gguf_loader import config_from_gguf, dequantize_tensor, load_gguf, load_smollm2, smollm2_path
from llm.model import CONFIGS, FFNGate, ForwardOutput, KVCache, Llama, LlamaConfig, count_params
from llm.tokenizer import Tokenizer, tokenizer_from_gguf

__all__ = [
    "CONFIGS", "FFNGate", "ForwardOutput", "Generation", "Generator", "KVCache", "Llama",
    "LlamaConfig", "SamplingParams", "SkipRule", "Tokenizer", "adaptive_rule",
    "config_from_gguf", "count_params", "dequantize_tensor", "load_gguf", "load_smollm2",
    "random_rule", "sample", "smollm2_path", "static_rule", "teacher_forced",
    "tokenizer_from_gguf",
]
