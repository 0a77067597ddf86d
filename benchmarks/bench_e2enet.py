"""E2ENet (DSFF sparsity 0.8) against the nnU-Net-style U-Net (arXiv:2312.04727, Table 1).

Parameters and FLOPs use the paper's architecture (1 input channel, 16 classes, 5 pools of
(2, 2, 2), channels 48..320) from shapes only. FLOPs come in two conventions: XLA's cost
analysis of the compiled forward (dense execution, 2 FLOPs per multiply-add, everything) and the
paper's analytic MACs over non-zero conv weights. Training step time, sliding-window
inference time and Dice after the same number of steps are measured on the real abdominal CT
(TotalSegmentator example) at the paper's width in the full run (``--width BASE MAX`` to change
it; ``--quick`` trains base 8, cap 64) and a 16x64x64 patch (4 pools). Trained on 15 organs
for 80 SGD steps, both models predicted only background (measured), so the Dice comparison
trains on the ``TRAIN_CLASSES - 1`` largest organs of the label map (values 5, 20, 1: liver,
colon, spleen in TotalSegmentator v2's numbering), with Adam (lr 3e-3, poly decay) instead of
nnU-Net's SGD with momentum 0.99, which needs far more steps; both models get the same recipe,
patches (a third of each batch, at least one patch, centred on foreground) and steps. Dice is
measured on the training volume, the only labelled one.

Run: ``python -m benchmarks.bench_e2enet [--quick]`` or ``jaxrepro bench e2enet [--quick]``.
The full run is sized for a GPU (it runs unmodified there); ``--quick`` for 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrepro.bench import Report, benchmark, benchmark_main, compiled_flops, time_fn

PAPER = {"param_reduction": 0.68, "flop_reduction": 0.29, "dice_gap_points": 1.0}
TRAIN_CLASSES = 4          # background + the 3 largest organs
LEARNING_RATE = 3e-3


def _abstract(cfg):
  from e2enet.model import build_model
  return nnx.split(nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0))))


def paper_scale_costs(patch: tuple[int, int, int], sparsity: float = 0.8) -> dict:
  """Params and FLOPs (both conventions) of the paper-size models, from shapes only."""
  from e2enet.flops import analytic_macs
  from e2enet.model import E2ENetConfig, dsff_granularity, param_counts, unet_config
  from jaxrepro import sparsity as sp
  out = {}
  x = jax.ShapeDtypeStruct((1,) + patch + (1,), jnp.float32)
  for name, cfg in (("e2enet", E2ENetConfig()), ("unet", unet_config())):
    graphdef, params = _abstract(cfg)
    masks = None
    if name == "e2enet":
      masks = jax.jit(lambda k: sp.init_masks(k, params, 1 - sparsity, dsff_granularity))(
          jax.random.key(0))
    apply = lambda p, x, graphdef=graphdef: nnx.merge(graphdef, p)(x)[0]
    counts = param_counts(params, masks)
    out[name] = {
        "params_dense": counts["dense"], "params_nonzero": counts["nonzero"],
        "xla_flops": compiled_flops(apply, params, x),
        "analytic_macs_dense": analytic_macs(apply, params, x),
        "analytic_macs_nonzero": analytic_macs(apply, params, x, masks),
    }
  e, u = out["e2enet"], out["unet"]
  out["reductions_vs_unet"] = {
      "params_nonzero": 1 - e["params_nonzero"] / u["params_dense"],
      "analytic_macs_nonzero": 1 - e["analytic_macs_nonzero"] / u["analytic_macs_dense"],
      "xla_flops_dense_execution": 1 - e["xla_flops"] / u["xla_flops"],
  }
  return out


def settings(quick: bool, steps: int | None = None,
             width: tuple[int, int] | None = None) -> dict:
  """The trained models' patch, width (base channels, cap), steps, and the FLOP patch."""
  s = ({"patch": (16, 32, 32), "base_channels": 8, "max_channels": 64, "steps": 12,
        "flop_patch": (32, 64, 64)} if quick else
       {"patch": (16, 64, 64), "base_channels": 48, "max_channels": 320, "steps": 400,
        "flop_patch": (64, 128, 128)})
  if steps is not None:
    s["steps"] = steps
  if s["steps"] < 1:
    raise ValueError(f"steps must be >= 1, got {s['steps']}")
  if width is not None:
    if len(width) != 2 or not 0 < width[0] <= width[1]:
      raise ValueError(f"width must be BASE MAX with 0 < BASE <= MAX, got {list(width)}")
    s["base_channels"], s["max_channels"] = map(int, width)
  return s


def training_case():
  """``(case, source, num_classes)``: the real CT restricted to its largest organs, or the
  embedded 3-class default on a fresh machine."""
  from e2enet.data import resolve_case
  case, source = resolve_case(None, modality="CT", num_classes=TRAIN_CLASSES)
  return case, source, TRAIN_CLASSES if source.origin != "embedded" else 3


def _train_and_score(model: str, s: dict, num_classes: int, seed: int, case) -> tuple:
  from e2enet.cli import evaluate
  from e2enet.train import TrainConfig, train
  cfg = TrainConfig(model=model, sparsity=0.8, steps=s["steps"], patch=s["patch"],
                    batch_size=2, num_classes=num_classes, base_channels=s["base_channels"],
                    max_channels=s["max_channels"], update_frequency=max(1, s["steps"] // 5),
                    optimizer="adam", learning_rate=LEARNING_RATE, seed=seed)
  result = train(cfg, [case], quiet=True)
  return cfg, result, evaluate(result, case, quiet=True)


def _mean_over_seeds(rows: list[dict]) -> dict:
  dice = np.array([r["mean_dice"] for r in rows])
  per_class = np.array([r["dice_per_class"] for r in rows])
  hd = [r["mean_hd95_mm"] for r in rows if r["mean_hd95_mm"] is not None]
  return {"mean_dice": float(dice.mean()), "mean_dice_std": float(dice.std(ddof=1)) if len(rows) > 1
          else 0.0, "mean_dice_per_seed": dice.tolist(),
          "dice_per_class": np.nanmean(per_class, axis=0).tolist(),
          "mean_hd95_mm": float(np.mean(hd)) if hd else None,
          "final_loss_per_seed": [r["final_loss"] for r in rows]}


@benchmark("e2enet")
def run(quick: bool, out_dir: Path, seeds: int | None = None, steps: int | None = None,
        width: tuple[int, int] | None = None) -> Report:
  """``seeds`` models of each kind (init, masks and patches differ by seed; default 1 quick,
  3 full): one seed's Dice on one volume moves by about a point, the size of the target.
  ``width`` = (base, cap) channels of the trained models; ``(48, 320)`` is the paper's."""
  from e2enet.cli import evaluate
  from e2enet.model import param_counts
  from e2enet.train import compiled_train_step
  from jaxrepro.metrics import plot_curves

  s = settings(quick, steps, width)
  seeds = seeds or (1 if quick else 3)
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  costs = paper_scale_costs(s["flop_patch"])
  case, source, num_classes = training_case()
  results, metrics, timings = {}, {"paper_scale": costs}, {}
  rng = np.random.default_rng(0)
  for model in ("e2enet", "unet"):
    rows = []
    for seed in range(seeds):
      cfg, result, scores = _train_and_score(model, s, num_classes, seed, case)
      rows.append({**scores, "final_loss": float(np.mean(result.losses[-10:]))})
      # One line per model and seed: a run cut short by a device time limit still tells
      # how far it got.
      print(f"{model} seed {seed}: mean Dice {scores['mean_dice']:.4f}, training "
            f"{result.seconds:.1f} s incl. compile", file=sys.stderr, flush=True)
      if seed == 0:
        results[model], first_cfg, first_scores = result, cfg, scores
    result = results[model]
    step = compiled_train_step(result.graphdef, first_cfg)
    x = jnp.asarray(rng.normal(size=(2,) + s["patch"] + (1,)), jnp.float32)
    y = jnp.zeros((2,) + s["patch"], jnp.int32)
    step_time = time_fn(step, result.params, result.opt_state, x, y, warmup=1, repeats=3)
    counts = param_counts(result.params, result.masks)
    metrics[model] = {"params_dense": counts["dense"], "params_nonzero": counts["nonzero"],
                      **_mean_over_seeds(rows)}
    timings[model] = {"train_step": step_time.as_dict(),
                      "sliding_window_volume_seconds_incl_compile":
                          first_scores["inference_seconds"],
                      "train_total_seconds_incl_compile_seed0": result.seconds}
    # Inference once more, compiled: the per-volume time.
    timings[model]["sliding_window_volume_seconds"] = evaluate(result, case, quiet=True)[
        "inference_seconds"]
  e, u = metrics["e2enet"], metrics["unet"]
  red = costs["reductions_vs_unet"]
  paired_gaps = 100 * (np.array(u["mean_dice_per_seed"]) - np.array(e["mean_dice_per_seed"]))
  metrics["comparison"] = {
      "dice_gap_points": 100 * (u["mean_dice"] - e["mean_dice"]),
      "dice_gap_points_per_seed": paired_gaps.tolist(),
      "dice_gap_points_std": float(paired_gaps.std(ddof=1)) if seeds > 1 else 0.0,
      "seeds": seeds,
      "param_reduction_met": red["params_nonzero"] >= PAPER["param_reduction"],
      "flop_reduction_met": red["analytic_macs_nonzero"] >= PAPER["flop_reduction"],
      "dice_within_1_point": 100 * (u["mean_dice"] - e["mean_dice"]) <= PAPER["dice_gap_points"],
      # Below this both models still segment (almost) nothing and the gap says nothing.
      "dice_comparison_meaningful": min(u["mean_dice"], e["mean_dice"]) >= 0.1,
      "train_step_ratio_e2enet_over_unet": (timings["e2enet"]["train_step"]["median"]
                                           / timings["unet"]["train_step"]["median"]),
      "inference_ratio_e2enet_over_unet": (timings["e2enet"]["sliding_window_volume_seconds"]
                                          / timings["unet"]["sliding_window_volume_seconds"]),
  }
  notes = []
  if jax.default_backend() != "cpu":
    notes.append("xla_flops on this backend leave out convolutions lowered to library calls "
                 "(measured far below the analytic MACs on an H200): use the CPU figure or the "
                 "analytic MACs")
  try:
    plot_curves({m: (list(range(1, len(r.losses) + 1)), r.losses) for m, r in results.items()},
                Path(out_dir) / "e2enet_loss.png", xlabel="step", ylabel="CE + Dice",
                title="E2ENet (S=0.8) vs U-Net, same budget")
  except ImportError:   # a bare accelerator machine may lack matplotlib: figures still come
    notes.append("matplotlib absent: loss plot skipped")
  return Report(
      name="e2enet", command=(f"python -m benchmarks.bench_e2enet{' --quick' if quick else ''}"
                              f" --seeds {seeds} --steps {s['steps']}"
                              f" --width {s['base_channels']} {s['max_channels']}"),
      config={**{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
              "train_volume": list(case.image.shape[:3]), "num_classes": num_classes,
              "label_values": list(case.label_values), "optimizer": "adam",
              "learning_rate": LEARNING_RATE, "device": jax.devices()[0].device_kind,
              "paper_targets": PAPER},
      data=source.describe(), metrics=metrics, timings=timings,
      notes=notes + ["paper_scale: 1 input channel, 16 classes, 5 pools of (2,2,2), channels 48..320; "
             f"FLOPs at patch {s['flop_patch']}",
             "xla_flops: XLA cost analysis of the dense compiled forward (2 per MAC, all ops); "
             "analytic_macs: conv MACs over non-zero weights (paper convention)",
             "Dice is measured on the training volume (only one labelled CT); training uses "
             f"width {s['base_channels']} (cap {s['max_channels']}) and {s['steps']} steps per "
             "model; Dice, HD95 and loss "
             f"are means over {seeds} seed(s) (init, masks, patches), times are seed 0's",
             f"timings on {jax.devices()[0].device_kind} (a shared 2-core machine when CPU); "
             "ratios measured in the same process"])


def cpu_inference(quick: bool, out_dir: Path, width: tuple[int, int] | None = None,
                  repeats: int = 3) -> Report:
  """CPU time of sliding-window inference of the whole CT per model, without training: the
  work does not depend on the weights' values (E2ENet's masked kernels run dense), so untrained
  models at the benchmark's width (the paper's in the full configuration) stand in. Answers
  the issue's "CPU inference time per volume" where the trained comparison runs on a GPU."""
  del out_dir  # no figures
  from e2enet.inference import full_resolution_predictor, sliding_window_predict
  from e2enet.model import init_params
  from e2enet.train import TrainConfig

  s = settings(quick, width=width)
  case, source, num_classes = training_case()
  cpu = jax.devices("cpu")[0]
  timings = {}
  for model in ("e2enet", "unet"):
    cfg = TrainConfig(model=model, num_classes=num_classes, patch=s["patch"],
                      base_channels=s["base_channels"], max_channels=s["max_channels"])
    with jax.default_device(cpu):
      graphdef, params = init_params(cfg.model_config(case.image.shape[-1]))
      predict = full_resolution_predictor(graphdef, jax.device_put(params, cpu))
      timing = time_fn(sliding_window_predict, predict, case.image, s["patch"], num_classes,
                       batch_size=4, quiet=True, warmup=1, repeats=repeats)
    timings[model] = timing.as_dict()
  ratio = timings["e2enet"]["median"] / timings["unet"]["median"]
  return Report(
      name="e2enet_cpu_inference",
      command=(f"python -m benchmarks.bench_e2enet --cpu-inference{' --quick' if quick else ''}"
               f" --width {s['base_channels']} {s['max_channels']} --repeats {repeats}"),
      config={"patch": list(s["patch"]), "base_channels": s["base_channels"],
              "max_channels": s["max_channels"], "window_batch": 4, "step": 0.5,
              "volume": list(case.image.shape[:3]), "num_classes": num_classes},
      data=source.describe(), metrics={"ratio_e2enet_over_unet": ratio},
      timings={"sliding_window_volume_seconds": timings},
      notes=["untrained weights at the given width; compilation excluded (one warm-up "
             f"volume), median of {repeats}; CPU: {jax.devices('cpu')[0].device_kind}"])


def _main() -> None:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--seeds", type=int, default=None)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--width", type=int, nargs=2, default=None, metavar=("BASE", "MAX"))
  parser.add_argument("--cpu-inference", action="store_true")
  parser.add_argument("--repeats", type=int, default=None)
  extra, rest = parser.parse_known_args()
  usage = (__doc__.splitlines()[0] + " Also: --seeds N (default 1 quick, 3 full), --steps N "
           "(training steps per model), --width BASE MAX (channels of the trained models; the "
           "paper's: 48 320); --cpu-inference [--repeats N] (default 3) times only the CPU "
           "sliding-window inference of untrained models at that width.")
  if extra.cpu_inference:
    if extra.seeds is not None or extra.steps is not None:
      raise SystemExit("--cpu-inference trains nothing: --seeds and --steps do not apply")
    fn = functools.partial(cpu_inference, width=extra.width, repeats=extra.repeats or 3)
  else:
    if extra.repeats is not None:
      raise SystemExit("--repeats applies to --cpu-inference only")
    fn = functools.partial(run, seeds=extra.seeds, steps=extra.steps, width=extra.width)
  benchmark_main(fn, usage, rest)


if __name__ == "__main__":
  _main()
