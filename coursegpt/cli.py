"""``jaxrepro coursegpt distill | optimize-prompt | sft | eval``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from jaxrepro.bench import Report
from jaxrepro.cli import add_common_args

BACKEND_HELP = ("'local' (SmolLM2 served on 127.0.0.1 over HTTP) or an OpenAI-compatible base "
                "URL ending in /v1 (API key from $OPENAI_API_KEY)")


def register(subparsers: argparse._SubParsersAction) -> None:
  cg = subparsers.add_parser("coursegpt", help="CourseGPT-zh: QA distillation, LLM-as-judge "
                             "prompt optimization, LoRA SFT (arXiv 2405.04781)")
  sub = cg.add_subparsers(dest="coursegpt_command", metavar="COMMAND", required=True)

  d = sub.add_parser("distill", help="questions from a textbook, deduplicated, answered")
  d.add_argument("--textbook", default=None, metavar="PATH|embedded",
                 help="plain-text textbook, paragraphs separated by blank lines (default: "
                 "embedded Python documentation topics, pydoc_data.topics)")
  d.add_argument("--teacher", action="append", default=None, metavar="URL|local",
                 help="teacher backend, repeat for several teachers (default: local): "
                 + BACKEND_HELP)
  d.add_argument("--answerer", default=None, metavar="URL|local",
                 help="backend that writes the answers (default: the first teacher)")
  d.add_argument("--paragraphs", type=int, default=None, help="paragraphs to use")
  add_common_args(d, data_help="same as --textbook")
  d.set_defaults(func=_cmd_distill)

  o = sub.add_parser("optimize-prompt", help="reflection/resample prompt optimization "
                     "scored by an LLM judge with a length penalty")
  o.add_argument("--qa", required=True, metavar="DIR", help="QA directory from distill")
  o.add_argument("--rounds", type=int, default=None, help="optimization rounds (paper: 3)")
  o.add_argument("--prompts", type=int, default=None, help="hand-written prompts to start from")
  for role in ("judge", "answerer", "optimizer"):
    o.add_argument(f"--{role}", default="local", metavar="URL|local",
                   help=f"{role} backend (default local)")
  add_common_args(o)
  o.set_defaults(func=_cmd_optimize)

  s = sub.add_parser("sft", help="LoRA fine-tuning of SmolLM2 on the distilled QA pairs")
  s.add_argument("--qa", required=True, metavar="DIR", help="QA directory from distill")
  s.add_argument("--method", choices=["lora"], default="lora")
  s.add_argument("--steps", type=int, default=None, help="training steps")
  add_common_args(s)
  s.set_defaults(func=_cmd_sft)

  e = sub.add_parser("eval", help="BLEU-1..4, GLEU, ROUGE-1/2/L and judge score of the base "
                     "and LoRA-tuned students on held-out QA pairs")
  e.add_argument("--qa-test", required=True, metavar="PATH", help="test.jsonl from distill")
  e.add_argument("--adapters", default=None, metavar="DIR",
                 help="LoRA adapters from sft (default: lora/ beside --qa-test, if present)")
  e.add_argument("--judge", default="local", metavar="URL|local", help="judge backend")
  add_common_args(e)
  e.set_defaults(func=_cmd_eval)


def _positive(value: int | None, name: str) -> None:
  if value is not None and value < 1:
    raise ValueError(f"{name} must be >= 1, got {value}")


class _Ticker:
  """A progress bar over LLM calls (and SFT steps)."""

  def __init__(self, desc: str):
    from jaxrepro.progress import progress
    self.bar = progress(total=None, desc=desc, unit="call")

  def __call__(self) -> None:
    self.bar.update(1)

  def close(self) -> None:
    self.bar.close()


def _finish(report: Report, args: argparse.Namespace, backends, start: float) -> int:
  report.timings["total_seconds"] = time.perf_counter() - start
  report.metrics["llm_calls_made"] = backends.calls
  report.metrics["cache_hits"] = backends.cache.hits
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
  print(report.markdown())
  return 0


def _cmd_distill(args: argparse.Namespace) -> int:
  from coursegpt.pipeline import Backends, LOCAL, config_for
  from coursegpt.stages import run_distill
  from coursegpt.textbook import load_textbook, select_paragraphs
  if not args.out:
    raise ValueError("distill needs --out DIR (the QA directory it writes)")
  _positive(args.paragraphs, "--paragraphs")
  config = config_for(args.quick)
  paragraphs, source = load_textbook(args.textbook or args.data)
  paragraphs = select_paragraphs(paragraphs, args.paragraphs or config.paragraphs, args.seed)
  teachers = args.teacher or [LOCAL]
  out = Path(args.out)
  start, ticker = time.perf_counter(), _Ticker("distill")
  with Backends(out / "cache") as backends:
    metrics = run_distill(backends, paragraphs, out, config, teachers=teachers,
                          answerer=args.answerer or teachers[0], seed=args.seed, tick=ticker)
    ticker.close()
    report = Report("coursegpt-distill", "jaxrepro coursegpt distill",
                    {"quick": args.quick, "teachers": teachers, "seed": args.seed,
                     "distill": dataclasses.asdict(config.distill)}, source.describe(), metrics)
    return _finish(report, args, backends, start)


def _cmd_optimize(args: argparse.Namespace) -> int:
  from coursegpt.pipeline import Backends, config_for
  from coursegpt.stages import run_optimize
  _positive(args.rounds, "--rounds")
  _positive(args.prompts, "--prompts")
  config = config_for(args.quick)
  if args.rounds is not None:
    config = dataclasses.replace(config, optimize=dataclasses.replace(config.optimize,
                                                                      rounds=args.rounds))
  if args.prompts is not None:
    config = dataclasses.replace(config, initial_prompts=args.prompts)
  qa = Path(args.qa)
  start, ticker = time.perf_counter(), _Ticker("optimize-prompt")
  with Backends(qa / "cache") as backends:
    metrics = run_optimize(backends, qa, config, judge_spec=args.judge, answerer=args.answerer,
                           optimizer=args.optimizer, seed=args.seed, tick=ticker)
    ticker.close()
    report = Report("coursegpt-optimize-prompt", "jaxrepro coursegpt optimize-prompt",
                    {"quick": args.quick, "judge": args.judge, "answerer": args.answerer,
                     "optimizer": args.optimizer, "initial_prompts": config.initial_prompts,
                     "optimize": dataclasses.asdict(config.optimize)}, str(qa / "val.jsonl"), metrics)
    if args.out:
      _plot_trajectory(metrics["trajectory"], Path(args.out))
    return _finish(report, args, backends, start)


def _cmd_sft(args: argparse.Namespace) -> int:
  from coursegpt.pipeline import Backends, config_for
  from coursegpt.stages import run_sft
  _positive(args.steps, "--steps")
  config = config_for(args.quick)
  qa = Path(args.qa)
  start, ticker = time.perf_counter(), _Ticker("sft")
  with Backends(qa / "cache") as backends:
    metrics = run_sft(backends, qa, config, steps=args.steps, seed=args.seed, tick=ticker)
    ticker.close()
    report = Report("coursegpt-sft", "jaxrepro coursegpt sft",
                    {"quick": args.quick, "method": args.method}, str(qa / "train.jsonl"),
                    metrics)
    if args.out:
      from jaxrepro.metrics import plot_curves
      losses = metrics["losses"]
      plot_curves({"answer loss": (list(range(1, len(losses) + 1)), losses)},
                  Path(args.out) / "sft_loss.png", ylabel="cross-entropy", title="LoRA SFT")
    return _finish(report, args, backends, start)


def _cmd_eval(args: argparse.Namespace) -> int:
  from coursegpt.pipeline import Backends, config_for, read_jsonl
  from coursegpt.stages import judge_failure_notes, run_eval
  config = config_for(args.quick)
  test_path = Path(args.qa_test)
  test = read_jsonl(test_path)
  adapters = Path(args.adapters) if args.adapters else test_path.parent / "lora"
  if args.adapters and not adapters.is_dir():
    raise FileNotFoundError(f"--adapters {adapters}: no such directory")
  adapters = adapters if adapters.is_dir() else None
  start, ticker = time.perf_counter(), _Ticker("eval")
  with Backends(test_path.parent / "cache") as backends:
    metrics = run_eval(backends, test, config, judge_spec=args.judge, adapter_dir=adapters,
                       tick=ticker)
    ticker.close()
    report = Report("coursegpt-eval", "jaxrepro coursegpt eval",
                    {"quick": args.quick, "judge": args.judge,
                     "adapters": str(adapters) if adapters else None}, str(test_path), metrics,
                    notes=judge_failure_notes(metrics, args.judge))
    for note in report.notes:
      print(f"warning: {note}", file=sys.stderr)
    return _finish(report, args, backends, start)


def _plot_trajectory(trajectory, out: Path) -> None:
  from jaxrepro.metrics import plot_curves
  points = [(p["round"], p["best"], p["top_k_mean"]) for p in trajectory if p["best"] is not None]
  if points:
    rounds, best, mean = zip(*points)
    plot_curves({"best": (rounds, best), "top-k mean": (rounds, mean)},
                out / "prompt_scores.png", xlabel="round", ylabel="validation score",
                title="prompt optimization")
