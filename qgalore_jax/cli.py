"""``jaxrepro qgalore pretrain|memory``: LLaMA pretraining with AdamW / GaLore / Q-GaLore /
8-bit Adam on the embedded CPython corpus (or ``--data``), and the training-state memory table."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrepro.bench import Report, compiled_memory, pytree_bytes
from jaxrepro.checkpoint import Checkpointer
from jaxrepro.cli import add_common_args
from jaxrepro.metrics import plot_curves
from jaxrepro.progress import progress
from llm.model import CONFIGS

QUICK = {"config": "tiny", "steps": 100, "batch": 8, "seq": 64, "vocab": 256, "rank": 16,
         "gap": 20, "chars": 400_000}


def run_pretrain(config_name: str, optimizer: str, steps: int, *, batch: int, seq: int,
                 vocab: int | None, rank: int, gap: int, lr: float, seed: int = 0,
                 data: str | None = None, max_chars: int = 2_000_000, ckpt: str | None = None,
                 save_every: int = 0, resume: bool = False, mesh_spec: str | None = None,
                 quiet: bool | None = None) -> dict[str, Any]:
  """Trains and returns losses, SVD counts, timings and the final state."""
  from qgalore_jax import corpus, pretrain
  from qgalore_jax.galore import svd_counts
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  base = CONFIGS.get(config_name)
  if base is None:
    raise ValueError(f"unknown --config {config_name!r}; choose from {sorted(CONFIGS)}")
  vocab = min(vocab or base.vocab_size, base.vocab_size)
  texts, source = corpus.load_texts(data, max_chars)
  tokenizer = corpus.train_tokenizer(texts, vocab)
  tokens = corpus.tokenize(texts, tokenizer)
  batches = corpus.TokenBatches(tokens, batch, seq, seed)
  model_config = pretrain.model_config(config_name, vocab_size=base.vocab_size, max_seq_len=seq)
  opt_config = pretrain.OptimizerConfig(name=optimizer, learning_rate=lr, rank=rank,
                                        update_proj_gap=gap)
  trainer = pretrain.build(model_config, opt_config, seed)
  state = trainer.init()
  mesh = None
  if mesh_spec:
    from jaxrepro.mesh import make_mesh, shard_fsdp
    mesh = make_mesh(mesh_spec)
    state = shard_fsdp(state, mesh)
  losses: list[float] = []
  checkpointer = Checkpointer(ckpt, save_every=save_every or steps) if ckpt else None
  if checkpointer and resume and checkpointer.latest_step() is not None:
    state, extra = checkpointer.restore(jax.eval_shape(lambda: state) if mesh is None else state)
    losses = list(extra.get("losses", []))
  start = int(state.step)
  step_times = []
  bar = progress(total=steps, initial=start, desc=f"{optimizer}", quiet=quiet)
  for step in range(start, steps):
    tokens_np = batches(step)
    if mesh is not None:
      from jaxrepro.mesh import shard_batch
      tokens_np = shard_batch(tokens_np, mesh)
    t0 = time.perf_counter()
    state, loss = trainer.step(state, tokens_np)
    loss = float(loss)
    step_times.append(time.perf_counter() - t0)
    losses.append(loss)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}")
    if checkpointer:
      checkpointer.save(step + 1, state, extra={"losses": losses})
  bar.close()
  if checkpointer:
    checkpointer.wait()
    checkpointer.close()
  counts = svd_counts(state.opt_state)
  return {
      "losses": losses, "state": state, "svd": counts, "data": source.describe(),
      "tokens": int(tokens.size), "vocab": int(tokenizer.get_vocab_size()),
      "step_seconds": step_times, "trainer": trainer,
      "state_bytes": pytree_bytes(state.params) + pytree_bytes(state.opt_state),
  }


def _cmd_pretrain(args: argparse.Namespace) -> int:
  if args.quick:
    for key, value in QUICK.items():
      if getattr(args, key, None) is None:
        setattr(args, key, value)
  config = args.config or "llama_60m"
  from qgalore_jax.pretrain import PAPER_RANKS
  rank = args.rank or PAPER_RANKS.get(config, 128)
  lr = args.lr or (0.015 if args.optimizer == "qgalore" else 0.01)
  if args.optimizer in ("adamw", "adam8bit") and not args.lr:
    lr = 1e-3
  result = run_pretrain(config, args.optimizer, args.steps or 1000, batch=args.batch or 16,
                        seq=args.seq or 256, vocab=args.vocab, rank=rank, gap=args.gap or 200,
                        lr=lr, seed=args.seed, data=args.data,
                        max_chars=args.chars or 2_000_000, ckpt=args.ckpt,
                        save_every=args.save_every, resume=args.resume, mesh_spec=args.mesh)
  losses = result["losses"]
  times = result["step_seconds"][1:] or result["step_seconds"]
  report = Report(
      name=f"qgalore_pretrain_{args.optimizer}", command="jaxrepro qgalore pretrain",
      config={"config": config, "optimizer": args.optimizer, "steps": len(losses),
              "batch": args.batch or 16, "seq": args.seq or 256, "rank": rank,
              "gap": args.gap or 200, "lr": lr, "seed": args.seed, "mesh": args.mesh,
              "vocab": result["vocab"], "tokens": result["tokens"]},
      data=result["data"],
      metrics={"first_loss": losses[0], "final_loss": losses[-1],
               "final_loss_mean10": float(np.mean(losses[-10:])),
               "svd_count": result["svd"]["total"], "svd_nonfinite": result["svd"]["nonfinite"],
               "state_bytes": result["state_bytes"], "losses": losses},
      timings={"step_median": float(np.median(times))})
  print(f"{args.optimizer}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps, "
        f"SVDs {result['svd']['total']}, state {result['state_bytes'] / 1e6:.2f} MB, "
        f"data {result['data']}")
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
    plot_curves({args.optimizer: (list(range(1, len(losses) + 1)), losses)},
                Path(args.out) / "pretrain_loss.png",
                xlabel="step", ylabel="loss")
  return 0


def _cmd_memory(args: argparse.Namespace) -> int:
  from qgalore_jax import memory
  config_name = "llama_60m" if args.quick and not args.config else (args.config or "llama_7b")
  if config_name not in CONFIGS:
    raise ValueError(f"unknown --config {config_name!r}; choose from {sorted(CONFIGS)}")
  config = memory.bf16(CONFIGS[config_name])
  names = args.optimizer or ["adamw", "galore", "qgalore"]
  table = {name: memory.training_state_bytes(config, memory.paper_optimizer(name, config_name),
                                             args.batch, args.seq) for name in names}
  compiled = {}
  if args.compiled:
    compiled = {name: _compiled_step_memory(config, memory.paper_optimizer(name, config_name),
                                            args.batch, args.seq) for name in names}
  unit, div = ("GB", 1e9) if max(r["total"] for r in table.values()) > 1e9 else ("MB", 1e6)
  print(f"{config_name}, batch {args.batch} x seq {args.seq}, bf16 + remat ({unit}):")
  keys = list(next(iter(table.values())))
  print(f"{'optimizer':>10} " + " ".join(f"{k:>17}" for k in keys))
  for name, row in table.items():
    print(f"{name:>10} " + " ".join(f"{row[k] / div:>17.3f}" for k in keys))
  report = Report(name="qgalore_memory", command="jaxrepro qgalore memory",
                  config={"config": config_name, "batch": args.batch, "seq": args.seq,
                          "optimizers": names, "dtype": "bfloat16", "remat": True},
                  data="none (shapes only)", metrics={"bytes": table, "compiled": compiled})
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
  return 0


def _compiled_step_memory(config, opt_config, batch, seq) -> dict[str, int]:
  from qgalore_jax import pretrain
  config = dataclasses.replace(config, max_seq_len=max(seq, config.max_seq_len))
  trainer = pretrain.build(config, opt_config)
  state = jax.eval_shape(trainer.init)
  tokens = jax.ShapeDtypeStruct((batch, seq + 1), np.int32)
  return compiled_memory(trainer.step, state, tokens)


def register(subparsers: argparse._SubParsersAction) -> None:
  from qgalore_jax.pretrain import OPTIMIZERS
  family = subparsers.add_parser("qgalore", help="GaLore / Q-GaLore LLaMA pretraining")
  commands = family.add_subparsers(dest="command", metavar="COMMAND")

  p = commands.add_parser("pretrain", help="pretrain a LLaMA (embedded CPython corpus)")
  add_common_args(p, data_help="text file, folder of text files or JSONL with 'text' "
                  "(default: the CPython standard library source + pydoc_data.topics)")
  p.add_argument("--config", choices=sorted(CONFIGS), default=None)
  p.add_argument("--optimizer", choices=OPTIMIZERS, default="qgalore")
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--seq", type=int, default=None)
  p.add_argument("--vocab", type=int, default=None, help="BPE vocabulary (<= the config's)")
  p.add_argument("--rank", type=int, default=None, help="default: the official script's")
  p.add_argument("--gap", type=int, default=None, help="projector refresh interval T (200)")
  p.add_argument("--lr", type=float, default=None)
  p.add_argument("--chars", type=int, default=None, help="corpus size cap in characters")
  p.add_argument("--ckpt", default=None, metavar="DIR", help="checkpoint directory")
  p.add_argument("--save-every", type=int, default=0, help="checkpoint interval (steps)")
  p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint")
  p.add_argument("--mesh", default=None, help="device mesh, e.g. data=2,fsdp=4")
  p.set_defaults(func=_cmd_pretrain)

  m = commands.add_parser("memory", help="training-state bytes by component (eval_shape)")
  add_common_args(m)
  m.add_argument("--config", choices=sorted(CONFIGS), default=None)
  m.add_argument("--optimizer", choices=OPTIMIZERS, action="append", default=None)
  m.add_argument("--batch", type=int, default=1)
  m.add_argument("--seq", type=int, default=256)
  m.add_argument("--compiled", action="store_true",
                 help="also compile one train step and report XLA's memory analysis")
  m.set_defaults(func=_cmd_memory)
  family.set_defaults(func=lambda args: family.print_help() or 2)
