"""LLaMA-family Flax NNX decoder (SmolLM2-135M weights), KV-cache generation, FFN-SkipLLM (arXiv 2404.03865)."""

from llm.model import CONFIGS, KVCache, Llama, LlamaConfig, count_params

__all__ = ["CONFIGS", "KVCache", "Llama", "LlamaConfig", "count_params"]
