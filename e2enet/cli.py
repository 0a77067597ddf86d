"""``jaxrepro e2enet train|predict|count``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from jaxrepro.cli import add_common_args

PAPER_PARAMS = {"dense": 23.90e6, "sparsity_0.8": 9.44e6, "sparsity_0.7": 11.25e6}
QUICK = {"steps": 20, "patch": (16, 48, 48), "base_channels": 8, "max_channels": 32,
         "update_frequency": 5}


def register(subparsers: argparse._SubParsersAction) -> None:
  family = subparsers.add_parser("e2enet", help="E2ENet 3D segmentation (arXiv:2312.04727)")
  commands = family.add_subparsers(dest="command", metavar="COMMAND", required=True)

  train = commands.add_parser("train", help="train E2ENet or the nnU-Net baseline on a volume")
  add_common_args(train, data_help="folder with the TotalSegmentator examples (default "
                  "../shared/data/medical/totalsegmentator), or 'embedded' for the MNI152 tissues")
  train.add_argument("--model", default="e2enet",
                     choices=["e2enet", "e2enet-noshift", "e2enet-333", "unet"])
  train.add_argument("--sparsity", type=float, default=0.8, help="DSFF sparsity (default 0.8)")
  train.add_argument("--steps", type=int, default=None, help="training steps (default 250)")
  train.add_argument("--patch", type=int, nargs=3, default=None, metavar=("D", "H", "W"))
  train.add_argument("--batch-size", type=int, default=2)
  train.add_argument("--base-channels", type=int, default=None, help="default 48 (8 quick)")
  train.add_argument("--num-classes", type=int, default=16)
  train.add_argument("--modality", choices=["CT", "MR"], default="CT")
  train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                     help="sgd: nnU-Net's Nesterov 0.99 (default); adam: learns in fewer steps")
  train.add_argument("--lr", type=float, default=None,
                     help="initial learning rate, poly-decayed (default 0.01)")
  train.add_argument("--update-frequency", type=int, default=None,
                     help="steps between prune/regrow (default: steps // 5)")
  train.add_argument("--ckpt", metavar="DIR", default=None, help="checkpoint directory (resumes)")
  train.set_defaults(func=_cmd_train)

  predict = commands.add_parser("predict", help="segment a NIfTI volume with a checkpoint",
                                conflict_handler="resolve")
  add_common_args(predict)
  predict.add_argument("--out", required=True, metavar="PATH.nii.gz",
                       help="where to write the predicted label map")
  predict.add_argument("--ckpt", required=True, metavar="DIR")
  predict.add_argument("--image", required=True, metavar="PATH")
  predict.add_argument("--label", default=None, metavar="PATH", help="reference, for Dice/HD95")
  predict.add_argument("--mirror", action="store_true", help="mirror test-time augmentation")
  predict.set_defaults(func=_cmd_predict)

  count = commands.add_parser("count", help="parameter counts against the paper (no weights)")
  add_common_args(count)
  count.set_defaults(func=_cmd_count)


def _train_config(args: argparse.Namespace):
  from e2enet.train import TrainConfig
  values = dict(QUICK) if args.quick else {}
  for key in ("steps", "base_channels", "update_frequency"):
    if getattr(args, key) is not None:
      values[key] = getattr(args, key)
  if args.patch is not None:
    values["patch"] = tuple(args.patch)
  if not 0 <= args.sparsity < 1:
    raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
  steps = values.get("steps", TrainConfig.steps)
  if steps < 1:
    raise ValueError("--steps must be >= 1")
  values.setdefault("update_frequency", max(1, steps // 5))
  if args.lr is not None:
    if args.lr <= 0:
      raise ValueError(f"--lr must be positive, got {args.lr}")
    values["learning_rate"] = args.lr
  return TrainConfig(model=args.model, sparsity=args.sparsity, batch_size=args.batch_size,
                     optimizer=args.optimizer,
                     num_classes=args.num_classes, seed=args.seed, **values)


def evaluate(result, case, *, mirror_axes=(), quiet=None, batch_size: int = 4) -> dict:
  """Sliding-window segmentation of ``case`` with Dice/HD95 per class and timings."""
  from e2enet import metrics
  from e2enet.inference import segment
  t0 = time.perf_counter()
  pred = segment(result.graphdef, result.params, case.image, result.config.patch,
                 result.model_config.num_classes, mirror_axes=mirror_axes, quiet=quiet,
                 batch_size=batch_size)
  seconds = time.perf_counter() - t0
  k = result.model_config.num_classes
  dice = metrics.dice_per_class(pred, case.label, k)
  hd = metrics.hd95_per_class(pred, case.label, k, case.spacing)
  return {"mean_dice": float(np.nanmean(dice)), "dice_per_class": dice.tolist(),
          "mean_hd95_mm": float(np.nanmean(hd)) if np.isfinite(hd).any() else None,
          "hd95_per_class_mm": hd.tolist(), "inference_seconds": seconds, "prediction": pred}


def _cmd_train(args: argparse.Namespace) -> int:
  from e2enet.data import resolve_case
  from e2enet.model import param_counts
  from e2enet.train import train
  from jaxrepro.bench import Report
  from jaxrepro.metrics import plot_curves
  cfg = _train_config(args)
  case, source = resolve_case(args.data, modality=args.modality, num_classes=cfg.num_classes)
  if source.origin == "embedded":
    cfg = dataclasses.replace(cfg, num_classes=3)
  print(f"data: {source.describe()} ({case.image.shape[:3]} voxels, {cfg.num_classes} classes)")
  result = train(cfg, [case], ckpt_dir=args.ckpt, extra={
      "label_values": list(case.label_values), "modality": args.modality})
  counts = param_counts(result.params, result.masks)
  scores = evaluate(result, case)
  scores.pop("prediction")
  inference_seconds = scores.pop("inference_seconds")
  report = Report(name="e2enet_train", command="jaxrepro e2enet train", config=dataclasses.asdict(cfg),
                  data=source.describe(),
                  metrics={"params_dense": counts["dense"], "params_nonzero": counts["nonzero"],
                           "final_loss": result.losses[-1] if result.losses else None,
                           "evaluated_on": "the training volume (one labelled volume)",
                           **scores},
                  timings={"train_seconds": result.seconds,
                           "inference_seconds": inference_seconds})
  print(f"{cfg.model}: loss {report.metrics['final_loss']}, mean Dice {scores['mean_dice']:.4f}, "
        f"params {counts['nonzero']:,} non-zero of {counts['dense']:,}")
  if args.out:
    report.write(args.out)
    steps = list(range(len(result.losses)))
    plot_curves({"loss": (steps, result.losses)}, Path(args.out) / "e2enet_train_loss.png",
                xlabel="step", ylabel="CE + Dice")
  if args.json:
    report.write_json(args.json)
  return 0


def _cmd_predict(args: argparse.Namespace) -> int:
  from e2enet import data, metrics
  from e2enet.inference import segment
  from e2enet.train import load_trained
  from jaxrepro.bench import Report
  if not str(args.out).endswith((".nii", ".nii.gz")):
    raise ValueError(f"--out must name a .nii or .nii.gz file, got {args.out}")
  result, run = load_trained(args.ckpt)
  values = [int(v) for v in run.get("label_values", [])]
  case = data.load_case(args.image, args.label, modality=run.get("modality", "CT"),
                        label_values=values)
  k = result.model_config.num_classes
  if case.image.shape[-1] != result.model_config.in_channels:
    raise ValueError(f"the model expects {result.model_config.in_channels} channel(s)")
  t0 = time.perf_counter()
  pred = segment(result.graphdef, result.params, case.image, result.config.patch, k,
                 mirror_axes=(0, 1, 2) if args.mirror else ())
  seconds = time.perf_counter() - t0
  original = np.zeros_like(pred)
  for i, v in enumerate(values):       # back to the label values of the training data
    original[pred == i + 1] = v
  path = data.save_nifti(args.out, original if values else pred, case.affine)
  print(f"wrote {path} ({seconds:.1f} s)")
  scores = {"voxels": int(pred.size), "classes_predicted": int(len(np.unique(pred)))}
  if case.label is not None:
    scores["mean_dice"] = metrics.mean_dice(pred, case.label, k)
    scores["dice_per_class"] = metrics.dice_per_class(pred, case.label, k).tolist()
    print(f"mean Dice {scores['mean_dice']:.4f}")
  report = Report(name="e2enet_predict", command="jaxrepro e2enet predict",
                  config={"ckpt": str(args.ckpt), "mirror": args.mirror}, data=str(args.image),
                  metrics=scores, timings={"inference_seconds": seconds})
  if args.json:
    report.write_json(args.json)
  return 0


def _cmd_count(args: argparse.Namespace) -> int:
  from e2enet.model import paper_parameter_counts
  from jaxrepro.bench import Report
  counts = paper_parameter_counts()
  e2e = counts["e2enet"]
  for variant, c in counts.items():
    print(f"{variant:>15}: " + ", ".join(f"{k} {v:,} ({v / 1e6:.3f}M)" for k, v in c.items()))
  print("paper: dense 23.90M, sparsity 0.8 9.44M, sparsity 0.7 11.25M")
  report = Report(name="e2enet_count", command="jaxrepro e2enet count",
                  config={"in_channels": 1, "num_classes": 16, "pools": "5 x (2, 2, 2)"},
                  data="none (shapes only, jax.eval_shape)",
                  metrics={"counts": counts, "paper": PAPER_PARAMS,
                           "matches_paper": {k: abs(e2e[k] - v) <= 0.01e6
                                             for k, v in PAPER_PARAMS.items()}})
  if args.json:
    report.write_json(args.json)
  if args.out:
    report.write(args.out)
  return 0
