"""LLaMA-family Flax NNX decoder (SmolLM2-135M weights), KV-cache generation, FFN-SkipLLM (arXiv 2404.03865)."""
