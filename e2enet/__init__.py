"""E2ENet (Wu et al. 2024, arXiv:2312.04727): 3D medical segmentation with dynamic sparse
feature fusion (DSFF) and restricted depth-shift convolutions, an nnU-Net-style baseline,
nnU-Net v1 sliding-window inference, Dice/HD95, NIfTI data handling."""

from e2enet.data import Case, load_case, load_nifti, mni_tissue_case, resolve_case, save_nifti
from e2enet.flops import analytic_macs
from e2enet.inference import mirrored_softmax, segment, sliding_window_predict
from e2enet.losses import deep_supervision_loss, dice_ce_loss, soft_dice_loss
from e2enet.metrics import dice_per_class, hd95, mean_dice
from e2enet.model import (E2ENet, E2ENetConfig, UNet3D, UpConv, build_model, config_for,
                          dsff_granularity, init_params, paper_parameter_counts, param_counts,
                          unet_config)
from e2enet.shift import OFFICIAL_SHIFTS, depth_shift
from e2enet.train import TrainConfig, load_trained, plan_pools, train

__all__ = [
    "Case", "load_case", "load_nifti", "mni_tissue_case", "resolve_case", "save_nifti",
    "analytic_macs", "mirrored_softmax", "segment", "sliding_window_predict",
    "deep_supervision_loss", "dice_ce_loss", "soft_dice_loss", "dice_per_class", "hd95",
    "mean_dice", "E2ENet", "E2ENetConfig", "UNet3D", "UpConv", "build_model", "config_for",
    "dsff_granularity", "init_params", "paper_parameter_counts", "param_counts", "unet_config",
    "OFFICIAL_SHIFTS", "depth_shift", "TrainConfig", "load_trained", "plan_pools", "train",
]
