"""``jaxrepro qgalore pretrain|finetune|memory``: LLaMA pretraining with AdamW / GaLore / Q-GaLore /
8-bit Adam on the embedded CPython corpus (or ``--data``), SmolLM2-135M fine-tuning with seven
methods on a QA task, and the training-state memory table."""

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
  state = trainer.init(jax.random.key(seed))
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
  state = jax.eval_shape(trainer.init, jax.random.key(0))
  tokens = jax.ShapeDtypeStruct((batch, seq + 1), np.int32)
  return compiled_memory(trainer.step, state, tokens)


# --quick: a small random-init LLaMA with SmolLM2's tokenizer and vocabulary (SmolLM2-135M's
# GaLore SVDs alone take minutes per refresh on 2 shared CPU cores); the default is SmolLM2.
QUICK_FINETUNE = {"steps": 6, "batch": 4, "seq": 48, "layers": 4, "hidden": 64}


def quick_model_config():
  from llm.model import CONFIGS, LlamaConfig
  base = CONFIGS["smollm2_135m"]
  return LlamaConfig(vocab_size=base.vocab_size, hidden_size=QUICK_FINETUNE["hidden"],
                     intermediate_size=2 * QUICK_FINETUNE["hidden"],
                     num_layers=QUICK_FINETUNE["layers"], num_heads=4, num_kv_heads=2,
                     tie_embeddings=True, max_seq_len=256)


def load_finetune_model(quick: bool, seed: int = 0):
  """(model, description): SmolLM2-135M-Instruct (real weights), or the --quick model."""
  import llm
  from flax import nnx
  if quick:
    return llm.Llama(quick_model_config(), rngs=nnx.Rngs(seed)), "random-init quick LLaMA"
  return llm.load_smollm2(max_seq_len=512), f"SmolLM2-135M-Instruct ({llm.smollm2_path().name})"


def _cmd_finetune(args: argparse.Namespace) -> int:
  import llm
  from qgalore_jax import finetune as ft, qa
  quick = QUICK_FINETUNE if args.quick else {}
  steps = args.steps or quick.get("steps", 100)
  batch = args.batch or quick.get("batch", 8)
  seq = args.seq or quick.get("seq", 64)
  cfg = ft.FinetuneConfig(method=args.method, steps=steps, batch=batch, seq=seq, lr=args.lr,
                          rank=args.rank, lora_rank=args.lora_rank,
                          gamma=min(args.gamma, quick.get("layers", args.gamma)),
                          lod_m=args.lod_m, seed=args.seed)
  tokenizer = llm.tokenizer_from_gguf(llm.smollm2_path())
  train, heldout, source = qa.load_qa(args.data, seed=args.seed)
  evaluation = ft.eval_set(heldout, tokenizer, seq, args.seed)
  model, model_name = load_finetune_model(args.quick, args.seed)
  bar = progress(total=steps, desc=args.method)
  result = ft.finetune(model, tokenizer, cfg, train, evaluation, progress_bar=bar)
  bar.close()
  memory = result["memory"]
  print(f"{args.method}: train loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}, "
        f"held-out loss {result['heldout_loss']:.4f} (ppl {result['heldout_ppl']:.2f}), "
        f"MC accuracy {result['mc_accuracy']:.3f}, trainable {memory['trainable_params']:,}, "
        f"optimizer state {memory['optimizer_state_bytes'] / 1e6:.2f} MB; model {model_name}; "
        f"data {source.describe()}")
  report = Report(
      name=f"qgalore_finetune_{args.method}", command="jaxrepro qgalore finetune",
      config={**dataclasses.asdict(cfg), "model": model_name, "train_items": len(train),
              "heldout_items": len(heldout)},
      data=source.describe(),
      metrics={k: result[k] for k in ("heldout_loss", "heldout_ppl", "mc_accuracy", "losses",
                                      "memory")}
      | {k: result[k] for k in ("lod", "times_sampled", "probs") if k in result},
      timings=result["timings"])
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
    plot_curves({args.method: (list(range(1, steps + 1)), result["losses"])},
                Path(args.out) / f"finetune_{args.method}_loss.png", xlabel="step",
                ylabel="train loss")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  from qgalore_jax.pretrain import OPTIMIZERS
  family = subparsers.add_parser("qgalore", help="GaLore / Q-GaLore LLaMA pretraining, "
                                 "LoRA/QLoRA/LISA/OwLore fine-tuning")
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

  f = commands.add_parser("finetune", help="fine-tune SmolLM2-135M on QA (full, LoRA, QLoRA, "
                          "GaLore, Q-GaLore, LISA, OwLore)")
  add_common_args(f, data_help="JSONL of {'question', 'answer'} (default: pydoc_data.topics "
                  "'Explain <topic>' -> first paragraph)")
  f.add_argument("--method", choices=("full", "lora", "qlora", "galore", "qgalore", "lisa",
                                      "owlore"), default="owlore")
  f.add_argument("--steps", type=int, default=None, help="training steps (100; --quick 6)")
  f.add_argument("--batch", type=int, default=None, help="sequences per step (8)")
  f.add_argument("--seq", type=int, default=None, help="tokens per sequence (64)")
  f.add_argument("--lr", type=float, default=None, help="default: finetune.LEARNING_RATES "
                 "(full/LISA 3e-5, LoRA/QLoRA 2e-4, GaLore/Q-GaLore 1e-4, OwLore 3e-4)")
  f.add_argument("--rank", type=int, default=16, help="GaLore/Q-GaLore/OwLore rank")
  f.add_argument("--lora-rank", type=int, default=8)
  f.add_argument("--gamma", type=int, default=5, help="OwLore blocks per draw")
  f.add_argument("--lod-m", type=float, default=5.0, help="LOD outlier threshold M")
  f.set_defaults(func=_cmd_finetune)

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
