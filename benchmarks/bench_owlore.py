"""OwLore headline (arXiv:2405.18380) and Q-GaLore's fine-tuning claim (arXiv:2407.08296):
full / LoRA / QLoRA / GaLore / Q-GaLore / LISA / OwLore fine-tuning side by side in one
process, same data, steps, tokens and seed.

Targets: OwLore held-out loss <= LISA's and <= LoRA's at equal steps; OwLore optimizer-state
bytes <= 25% of full AdamW's; the LLaMA-7B memory of OwLore's configuration (paper: 21 GB);
Q-GaLore total training memory below LoRA's and GaLore's (paper: up to 50% less) and held-out
quality better than QLoRA's at similar memory. Memory is measured from the state pytrees and
from ``jax.eval_shape`` (weights + gradients + optimizer state) for SmolLM2-135M (float32, as
trained here) and for a LLaMA-7B-shaped config (bfloat16, official ranks).

Full run: SmolLM2-135M-Instruct (real weights), 100 steps of 8 x 64 tokens (sized for a GPU:
on 2 shared CPU cores one SmolLM2 step takes ~10 s and one GaLore SVD of a 576 x 1536 kernel
~6 s). ``--quick``: a 4-block random-init LLaMA with SmolLM2's tokenizer, 6 steps: it checks
the pipeline and the memory tables (7B only for OwLore, Q-GaLore and LoRA); its quality
numbers mean nothing.

Run: ``python -m benchmarks.bench_owlore [--quick]`` or ``jaxrepro bench owlore``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxrepro.bench import Report, benchmark, benchmark_main

METHODS = ("full", "lora", "qlora", "galore", "qgalore", "lisa", "owlore")
GB = 1e9


def _finetune_all(quick: bool) -> dict:
  from flax import nnx

  import llm
  from jaxrepro.progress import progress
  from qgalore_jax import finetune as ft, qa
  from qgalore_jax.cli import QUICK_FINETUNE, load_finetune_model
  steps, batch, seq = (QUICK_FINETUNE["steps"], 4, QUICK_FINETUNE["seq"]) if quick else (100, 8, 64)
  gamma = 2 if quick else 5
  tokenizer = llm.tokenizer_from_gguf(llm.smollm2_path())
  train, heldout, source = qa.load_qa(None)
  evaluation = ft.eval_set(heldout, tokenizer, seq, 0)
  base, model_name = load_finetune_model(quick)
  base_cfg = ft.FinetuneConfig(method="full", steps=steps, batch=batch, seq=seq)
  before = ft.build_method(nnx.clone(base), base_cfg)
  rows = {"base (no fine-tuning)": ft.heldout_metrics(before, before.state, evaluation, 8)}
  bar = progress(total=steps * len(METHODS), desc="owlore bench")
  for method in METHODS:
    cfg = dataclasses.replace(base_cfg, method=method, gamma=gamma, lod_m=3.0 if quick else 5.0)
    rows[method] = ft.finetune(nnx.clone(base), tokenizer, cfg, train, evaluation,
                               progress_bar=bar)
  bar.close()
  return {"steps": steps, "batch": batch, "seq": seq, "tokens_per_method": steps * batch * seq,
          "model": model_name, "data": source.describe(), "rows": rows,
          "config": dataclasses.asdict(base_cfg) | {"method": "all seven", "gamma": gamma}}


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
  return {"smollm2_135m_float32": small, "llama_7b_bfloat16": big}


def _plots(rows: dict, out_dir: Path) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from jaxrepro.metrics import plot_curves
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  lod = rows["owlore"].get("lod")
  if lod:
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    ax[0].bar(range(len(lod)), lod)
    ax[0].set(xlabel="decoder block", ylabel="LOD (% outliers)", title="layerwise outlier "
              "distribution")
    width = 0.4
    for offset, name in ((-width / 2, "owlore"), (width / 2, "lisa")):
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
  curves = {m: (list(range(1, len(rows[m]["losses"]) + 1)), rows[m]["losses"]) for m in METHODS}
  plot_curves(curves, out_dir / "owlore_train_loss.png", xlabel="step", ylabel="train loss")
  written.append("owlore_train_loss.png")
  return written


@benchmark("owlore")
def run(quick: bool, out_dir: Path) -> Report:
  memory = _memory_tables(quick)
  results = _finetune_all(quick)
  rows = results["rows"]
  table = {}
  for name, row in rows.items():
    entry = {k: row[k] for k in ("heldout_loss", "heldout_ppl", "mc_accuracy")}
    if "memory" in row:
      entry |= {"final_train_loss": row["losses"][-1],
                "trainable_params": row["memory"]["trainable_params"],
                "optimizer_state_bytes": row["memory"]["optimizer_state_bytes"],
                "compiled_step_peak_bytes": row["memory"]["compiled_step"].get("peak_estimate"),
                "step_median_s": row["timings"]["step_median"],
                "compile_s": row["timings"]["compile"]}
    table[name] = entry
  full_opt = table["full"]["optimizer_state_bytes"]
  small, big = memory["smollm2_135m_float32"], memory["llama_7b_bfloat16"]
  ow, lisa, lo = table["owlore"], table["lisa"], table["lora"]
  targets = {
      "owlore_loss_le_lisa": ow["heldout_loss"] <= lisa["heldout_loss"],
      "owlore_loss_le_lora": ow["heldout_loss"] <= lo["heldout_loss"],
      "owlore_opt_state_fraction_of_full": ow["optimizer_state_bytes"] / full_opt,
      "owlore_opt_state_le_25pct_full": ow["optimizer_state_bytes"] <= 0.25 * full_opt,
      "owlore_7b_total_gb": big["owlore"]["total"] / GB,
      "owlore_7b_layerwise_gb": big["owlore"]["layerwise"] / GB,
      "qgalore_7b_total_vs_lora": big["qgalore"]["total"] / big["lora"]["total"],
      "qgalore_7b_total_vs_galore": (big["qgalore"]["total"] / big["galore"]["total"]
                                     if "galore" in big else None),
      "qgalore_loss_le_qlora": table["qgalore"]["heldout_loss"] <= table["qlora"]["heldout_loss"],
  }
  plots = _plots(rows, out_dir)
  lines = [f"{'method':>22} {'held-out loss':>13} {'ppl':>9} {'MC acc':>7} {'trainable':>12} "
           f"{'opt state MB':>12} {'135M total MB':>13} {'7B total GB':>11}"]
  for name, entry in table.items():
    mem = small.get(name, {}).get("total", float("nan")) / 1e6
    mem7 = big.get(name, {}).get("total", float("nan")) / GB
    lines.append(f"{name:>22} {entry['heldout_loss']:>13.4f} {entry['heldout_ppl']:>9.2f} "
                 f"{entry['mc_accuracy']:>7.3f} {entry.get('trainable_params', 0):>12,} "
                 f"{entry.get('optimizer_state_bytes', 0) / 1e6:>12.2f} {mem:>13.1f} "
                 f"{mem7:>11.2f}")
  print("\n".join(lines))
  notes = [
      "Quality at --quick comes from a random-init 4-block model: it checks the pipeline only."
      if quick else "SmolLM2-135M-Instruct, real weights.",
      "Hyper-parameters scaled to hidden 576 (official at 4096): GaLore-family rank 32 "
      "(OwLore 256), LoRA r 8 / alpha 16, OwLore gamma 5 of 30 blocks, K = steps/8 (50), "
      "T = steps/4 (100), LISA gamma 2, K 3 (official), LOD M = 5 (official file 13: at "
      "M = 13 most SmolLM2 blocks have no outliers).",
      "OwLore/LISA keep every block's optimizer state (frozen while inactive), so their "
      "optimizer bytes count all blocks; 'layerwise' in the memory table is the paper's "
      "accounting with only gamma blocks holding gradients and states.",
      "Timings on a CPU shared with other jobs.",
  ]
  return Report(
      name="owlore", command="python -m benchmarks.bench_owlore" + (" --quick" if quick else ""),
      config={k: results[k] for k in ("steps", "batch", "seq", "tokens_per_method", "model",
                                      "config")},
      data=results["data"],
      metrics={"table": table, "targets": targets, "memory_eval_shape": memory,
               "lod": rows["owlore"].get("lod"), "owlore_probs": rows["owlore"].get("probs"),
               "times_sampled": {m: rows[m]["times_sampled"] for m in ("lisa", "owlore")},
               "plots": plots},
      timings={m: rows[m]["timings"] for m in METHODS}, notes=notes)


if __name__ == "__main__":
  benchmark_main(run, __doc__.splitlines()[0])
