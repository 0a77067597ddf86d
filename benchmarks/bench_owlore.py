"""OwLore headline (arXiv:2405.18380) and Q-GaLore's fine-tuning claim (arXiv:2407.08296):
full / LoRA / QLoRA / GaLore / Q-GaLore / LISA / OwLore fine-tuning side by side in one
process, same data, steps, tokens and seed.

Targets: OwLore held-out loss <= LISA's and <= LoRA's at equal steps; OwLore optimizer-state
bytes <= 25% of full AdamW's; the LLaMA-7B memory of OwLore's configuration (paper: 21 GB);
Q-GaLore total training memory below LoRA's and GaLore's (paper: up to 50% less) and held-out
quality better than QLoRA's at similar memory. Memory is measured from the state pytrees and
from ``jax.eval_shape`` (weights + gradients + optimizer state) for SmolLM2-135M (float32, as
trained here) and for a LLaMA-7B-shaped config (bfloat16, official ranks).

Default: SmolLM2-135M-Instruct (real weights), 100 steps of 8 x 64 tokens, sized for a GPU.
On 2 shared CPU cores one SmolLM2 step takes several seconds and one GaLore SVD of a
576 x 1536 kernel 3-7 s (GaLore and Q-GaLore do 210 at their first step), so the CPU
comparison uses ``--steps 24 --batch 4 --seq 48 --interval 4``. ``--quick``: a 4-block
random-init LLaMA with SmolLM2's tokenizer, 6 steps: it checks the pipeline and the memory
tables (7B only for OwLore, Q-GaLore and LoRA); its quality numbers mean nothing.

Every finished method is appended to ``<out>/owlore_rows.jsonl`` at once; ``--resume`` reuses
the rows there that were made with the same configuration, so a crash loses at most the method
in progress.

Run: ``python -m benchmarks.bench_owlore [--quick] [--methods full,lora,...] [--steps N]
[--batch B] [--seq S] [--interval K] [--resume]`` or ``jaxrepro bench owlore``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main

METHODS = ("full", "lora", "qlora", "galore", "qgalore", "lisa", "owlore")
BASE = "base (no fine-tuning)"
ROWS_FILE = "owlore_rows.jsonl"
PROJECTOR_GAP = 100  # official OwLore T; >= the steps run here, so one SVD per matrix
GB = 1e9


def _load_rows(path: Path, key: dict) -> dict:
  """Rows of ``path`` made with configuration ``key``."""
  rows = {}
  if path.exists():
    for line in path.read_text().splitlines():
      record = json.loads(line)
      if record["key"] == key:
        rows[record["method"]] = record["row"]
  return rows


def _finetune_all(quick: bool, out_dir: Path, methods: tuple[str, ...], steps: int | None,
                  batch: int | None, seq: int | None, interval: int | None,
                  resume: bool) -> dict:
  from flax import nnx

  import llm
  from jaxrepro.progress import progress
  from qgalore_jax import finetune as ft, qa
  from qgalore_jax.cli import QUICK_FINETUNE, load_finetune_model
  default_steps, default_batch, default_seq = ((QUICK_FINETUNE["steps"], 4, QUICK_FINETUNE["seq"])
                                               if quick else (100, 8, 64))
  steps, batch, seq = steps or default_steps, batch or default_batch, seq or default_seq
  gamma = 2 if quick else 5
  tokenizer = llm.tokenizer_from_gguf(llm.smollm2_path())
  train, heldout, source = qa.load_qa(None)
  evaluation = ft.eval_set(heldout, tokenizer, seq, 0)
  base, model_name = load_finetune_model(quick)
  base_cfg = ft.FinetuneConfig(method="full", steps=steps, batch=batch, seq=seq, gamma=gamma,
                               interval=interval, update_proj_gap=PROJECTOR_GAP,
                               lod_m=3.0 if quick else 5.0)
  key = dataclasses.asdict(base_cfg) | {"model": model_name, "data": source.describe()}
  del key["method"], key["lr"]
  out_dir.mkdir(parents=True, exist_ok=True)
  rows_path = out_dir / ROWS_FILE
  rows = _load_rows(rows_path, key) if resume else {}
  if not resume:
    rows_path.write_text("")

  def record(name, row):
    rows[name] = row
    with rows_path.open("a") as f:
      f.write(json.dumps({"key": key, "method": name, "row": row}) + "\n")

  if BASE not in rows:
    before = ft.build_method(nnx.clone(base), base_cfg)
    record(BASE, ft.heldout_metrics(before, before.state, evaluation, 8))
  todo = [m for m in methods if m not in rows]
  bar = progress(total=steps * len(todo), desc="owlore bench")
  for method in todo:
    cfg = dataclasses.replace(base_cfg, method=method)
    record(method, ft.finetune(nnx.clone(base), tokenizer, cfg, train, evaluation,
                               progress_bar=bar) | {"learning_rate": cfg.learning_rate})
  bar.close()
  return {"steps": steps, "batch": batch, "seq": seq, "tokens_per_method": steps * batch * seq,
          "model": model_name, "data": source.describe(),
          "rows": {name: rows[name] for name in (BASE, *methods)},
          "config": key | {"methods": list(methods),
                           "resample_interval": base_cfg.resample_interval,
                           "learning_rates": {m: ft.LEARNING_RATES[m] for m in methods}}}


def _memory_tables(quick: bool) -> dict:
  from llm.model import CONFIGS
  from qgalore_jax import finetune as ft
  from qgalore_jax.memory import bf16
  small = {m: ft.abstract_training_memory(CONFIGS["smollm2_135m"], ft.FinetuneConfig(method=m))
           for m in METHODS}
  # LLaMA-7B with the official values: OwLore rank 256, gamma 5 of 32; QLoRA's LoRA r = 64
  official = dict(rank=256, lora_rank=64, lora_alpha=16.0, gamma=5, steps=1000)
  big = {m: ft.abstract_training_memory(bf16(CONFIGS["llama_7b"]),
                                        ft.FinetuneConfig(method=m, **official))
         for m in (("owlore", "qgalore", "lora") if quick else METHODS)}
  # why rank 16 on SmolLM2: the dense (embedding) AdamW state is a fixed 21% of full AdamW's
  sweep = {r: ft.abstract_training_memory(CONFIGS["smollm2_135m"],
                                          ft.FinetuneConfig(method="owlore", rank=r))
           for r in (() if quick else (32, 256))}
  full_opt = small["full"]["optimizer"]
  sweep = {r: {"optimizer": m["optimizer"], "optimizer_blocks": m["optimizer_blocks"],
               "fraction_of_full_adamw": m["optimizer"] / full_opt} for r, m in sweep.items()}
  return {"smollm2_135m_float32": small, "llama_7b_bfloat16": big, "owlore_rank_sweep": sweep}


def _plots(rows: dict, out_dir: Path) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from jaxrepro.metrics import plot_curves
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  lod = rows.get("owlore", {}).get("lod")
  if lod:
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    ax[0].bar(range(len(lod)), lod)
    ax[0].set(xlabel="decoder block", ylabel="LOD (% outliers)", title="layerwise outlier "
              "distribution")
    width = 0.4
    for offset, name in ((-width / 2, "owlore"), (width / 2, "lisa")):
      if name in rows:
        counts = np.asarray(rows[name]["times_sampled"], float)
        ax[1].bar(np.arange(len(counts)) + offset, counts / max(counts.sum(), 1), width,
                  label=f"{name} observed")
    ax[1].plot(rows["owlore"]["probs"], "k.", label="OwLore p_l")
    ax[1].set(xlabel="decoder block", ylabel="share of draws", title="sampling frequency")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "owlore_lod_sampling.png", dpi=120)
    plt.close(fig)
    written.append("owlore_lod_sampling.png")
  curves = {m: (list(range(1, len(row["losses"]) + 1)), row["losses"])
            for m, row in rows.items() if "losses" in row}
  plot_curves(curves, out_dir / "owlore_train_loss.png", xlabel="step", ylabel="train loss")
  written.append("owlore_train_loss.png")
  return written


def _targets(table: dict, small: dict, big: dict) -> dict:
  """The issue's targets among the methods that were run (None where one side is missing)."""
  def compare(a, b, op):
    if a in table and b in table:
      return bool(op(table[a]["heldout_loss"], table[b]["heldout_loss"]))
    return None

  def ratio(a, b, tables):
    return tables[a]["total"] / tables[b]["total"] if a in tables and b in tables else None

  le = lambda x, y: x <= y
  targets = {"owlore_loss_le_lisa": compare("owlore", "lisa", le),
             "owlore_loss_le_lora": compare("owlore", "lora", le),
             "owlore_loss_le_full": compare("owlore", "full", le),
             "qgalore_loss_le_qlora": compare("qgalore", "qlora", le),
             "qgalore_loss_le_lora": compare("qgalore", "lora", le),
             "qgalore_loss_le_galore": compare("qgalore", "galore", le),
             "owlore_7b_total_gb": big["owlore"]["total"] / GB,
             "owlore_7b_layerwise_gb": big["owlore"]["layerwise"] / GB}
  if "owlore" in table and "full" in table:  # the runs' state pytrees
    ow_opt, full_opt = (table[m]["optimizer_state_bytes"] for m in ("owlore", "full"))
  else:  # SmolLM2-135M from eval_shape (the runs may use the --quick model)
    ow_opt, full_opt = small["owlore"]["optimizer"], small["full"]["optimizer"]
  targets |= {"owlore_opt_state_fraction_of_full": ow_opt / full_opt,
              "owlore_opt_state_le_25pct_full": ow_opt <= 0.25 * full_opt}
  for other in ("lora", "qlora", "galore"):
    targets[f"qgalore_135m_total_vs_{other}"] = ratio("qgalore", other, small)
    targets[f"qgalore_7b_total_vs_{other}"] = ratio("qgalore", other, big)
  return targets


@benchmark("owlore")
def run(quick: bool, out_dir: Path, *, methods: tuple[str, ...] = METHODS,
        steps: int | None = None, batch: int | None = None, seq: int | None = None,
        interval: int | None = None, resume: bool = False) -> Report:
  unknown = set(methods) - set(METHODS)
  if unknown or not methods:
    raise ValueError(f"--methods must name some of {METHODS}, got {sorted(unknown) or 'none'}")
  cpu0, wall0 = time.process_time(), time.perf_counter()
  # the runs first: their rows are on disk before the (slower to trace) memory tables
  results = _finetune_all(quick, out_dir, tuple(methods), steps, batch, seq, interval, resume)
  memory = _memory_tables(quick)
  rows = results["rows"]
  table = {}
  for name, row in rows.items():
    entry = {k: row[k] for k in ("heldout_loss", "heldout_ppl", "mc_accuracy")}
    if "memory" in row:
      entry |= {"learning_rate": row["learning_rate"],
                "final_train_loss": row["losses"][-1],
                "trainable_params": row["memory"]["trainable_params"],
                "optimizer_state_bytes": row["memory"]["optimizer_state_bytes"],
                "compiled_step_peak_bytes": row["memory"]["compiled_step"].get("peak_estimate"),
                "step_median_s": row["timings"]["step_median"],
                "compile_s": row["timings"]["compile"]}
    table[name] = entry
  small, big = memory["smollm2_135m_float32"], memory["llama_7b_bfloat16"]
  targets = _targets(table, small, big)
  plots = _plots(rows, out_dir)
  full_opt = table.get("full", {}).get("optimizer_state_bytes", float("nan"))
  lines = [f"{'method':>22} {'held-out loss':>13} {'ppl':>9} {'MC acc':>7} {'trainable':>12} "
           f"{'opt state MB':>12} {'% of full':>9} {'135M total MB':>13} {'7B total GB':>11}"]
  for name, entry in table.items():
    mem = small.get(name, {}).get("total", float("nan")) / 1e6
    mem7 = big.get(name, {}).get("total", float("nan")) / GB
    opt = entry.get("optimizer_state_bytes", 0)
    lines.append(f"{name:>22} {entry['heldout_loss']:>13.4f} {entry['heldout_ppl']:>9.2f} "
                 f"{entry['mc_accuracy']:>7.3f} {entry.get('trainable_params', 0):>12,} "
                 f"{opt / 1e6:>12.2f} {100 * opt / full_opt:>9.1f} {mem:>13.1f} {mem7:>11.2f}")
  print("\n".join(lines))
  cfg = results["config"]
  notes = [
      "Quality at --quick comes from a random-init 4-block model: it checks the pipeline only."
      if quick else "SmolLM2-135M-Instruct, real weights.",
      f"Scaled to hidden 576 (official at 4096): GaLore-family rank {cfg['rank']} (7B table: "
      f"256), LoRA r {cfg['lora_rank']} / alpha {cfg['lora_alpha']:g} (7B: 64 / 16), OwLore "
      f"gamma {cfg['gamma']} of 30 blocks every K = {cfg['resample_interval']} steps "
      f"(official K = 50 over thousands of steps; scaled so it resamples several times), "
      f"T = {cfg['update_proj_gap']} (official), LISA gamma {cfg['lisa_gamma']}, K "
      f"{cfg['lisa_interval']} (official), LOD M = {cfg['lod_m']:g} (official file 13: at "
      "M = 13 most SmolLM2 blocks have no outliers).",
      "Rank 16, not the width-scaled 36: the tied 49152 x 576 embedding (always trained with "
      "AdamW) is 21% of full AdamW's state by itself and OwLore keeps every block's GaLore "
      "state; see memory_eval_shape.owlore_rank_sweep.",
      "Learning rates (constant): " + ", ".join(f"{m} {lr:g}" for m, lr in
                                                 cfg["learning_rates"].items()) + ".",
      "OwLore/LISA keep every block's optimizer state (frozen while inactive), so their "
      "optimizer bytes count all blocks; 'layerwise' in the memory table is the paper's "
      "accounting with only gamma blocks holding gradients and states.",
      "Timings on a CPU shared with other jobs.",
  ]
  command = "python -m benchmarks.bench_owlore" + (" --quick" if quick else "")
  if tuple(methods) != METHODS:
    command += " --methods " + ",".join(methods)
  for flag, value in (("steps", steps), ("batch", batch), ("seq", seq), ("interval", interval)):
    if value is not None:
      command += f" --{flag} {value}"
  return Report(
      name="owlore", command=command,
      config={k: results[k] for k in ("steps", "batch", "seq", "tokens_per_method", "model",
                                      "config")},
      data=results["data"],
      metrics={"table": table, "targets": targets, "memory_eval_shape": memory,
               "lod": rows.get("owlore", {}).get("lod"),
               "owlore_probs": rows.get("owlore", {}).get("probs"),
               "times_sampled": {m: rows[m]["times_sampled"] for m in ("lisa", "owlore")
                                 if m in rows},
               "plots": plots},
      timings={m: rows[m]["timings"] for m in methods}
      | {"process_cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0},
      notes=notes)


def _main() -> None:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--methods", type=lambda s: tuple(s.split(",")), default=METHODS)
  for flag in ("steps", "batch", "seq", "interval"):
    parser.add_argument(f"--{flag}", type=int, default=None)
  parser.add_argument("--resume", action="store_true")
  extra, rest = parser.parse_known_args()
  description = (__doc__.splitlines()[0] + " Also: --methods a,b (default all seven), --steps, "
                 "--batch, --seq, --interval K (OwLore resampling), --resume.")
  benchmark_main(functools.partial(run, **vars(extra)), description, rest)


if __name__ == "__main__":
  _main()
