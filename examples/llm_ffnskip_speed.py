"""Batch-1 decode speed of SmolLM2-135M: full model vs adaptive/static/random FFN skipping at ~25%
(5 interleaved rounds of 128 tokens). Run: .venv/bin/python examples/llm_ffnskip_speed.py"""
import numpy as np
from flax import nnx
from llm.gguf_loader import load_smollm2, smollm2_path
from llm.tokenizer import tokenizer_from_gguf
from llm.generate import Generator
from llm.corpus import load_corpus
from llm import skip_eval as se
m = load_smollm2(); tok = tokenizer_from_gguf(smollm2_path()); c = load_corpus()
cal = se.calibrate(nnx.split(m), se.token_chunks(tok, c.calibration, 128, 2), [0.25], warmup=16, iters=10)
g = Generator(m, pad_id=tok.pad_id, stop_ids=tok.stop_ids)
prompt = se.prompt_ids(tok, c.prompts, 32, 1)[0]
res = se.decode_throughput(g, prompt, 128, {"full": None, "adaptive@0.25": cal.rules["adaptive"][0.25],
                                           "static@0.25": cal.rules["static"][0.25],
                                           "random@0.25": cal.rules["random"][0.25]}, 16, rounds=5)
share = se.ffn_weight_share(m.config)
for k, v in res.items():
  print(k, round(v["tokens_per_s"], 3), "tok/s", "skip(all tokens)", round(v["skip_ratio"], 3),
        "speedup wall", round(v["speedup"], 3), "cpu", round(v["cpu_speedup"], 3),
        "weight-read bound", round(1 / (1 - v["skip_ratio"] * share), 3))
print("threshold", cal.thresholds, "cold", cal.cold_start, cal.cold_end)
