"""GaLore (arXiv 2403.03507) and Q-GaLore (arXiv 2407.08296) as optax transformations, LoRA/QLoRA
adapters (arXiv 2106.09685, 2305.14314):
low-rank gradient projection, INT4 projectors, lazy layer-adaptive subspace refreshes,
INT8 weights with stochastic rounding, blockwise 8-bit Adam; LLaMA pretraining recipes."""

from qgalore_jax import lora
from qgalore_jax.adam import scale_by_adam_official
from qgalore_jax.adam8bit import adam_8bit, scale_by_adam_8bit
from qgalore_jax.galore import (LayerProjection, ScaleByGaLoreState, galore, qgalore,
                                scale_by_galore, scale_by_qgalore, svd_counts)
from qgalore_jax.nf4 import NF4Tensor, dequantize_nf4, quantize_nf4
from qgalore_jax.labels import is_projected, projected_labels, projected_mask
from qgalore_jax.qlinear import QLinear
from qgalore_jax.quantization import (QTensor, apply_updates_sr, dequantize, dequantize_params,
                                      pack_int4, quantize, quantize_params, stochastic_round,
                                      unpack_int4)

label_fn = projected_labels

__all__ = [
    "LayerProjection", "NF4Tensor", "QLinear", "QTensor", "ScaleByGaLoreState", "adam_8bit",
    "apply_updates_sr", "dequantize", "dequantize_nf4", "dequantize_params", "galore", "is_projected", "label_fn", "lora",
    "pack_int4", "projected_labels", "projected_mask", "qgalore", "quantize", "quantize_nf4", "quantize_params",
    "scale_by_adam_8bit", "scale_by_adam_official", "scale_by_galore", "scale_by_qgalore",
    "stochastic_round", "svd_counts", "unpack_int4",
]
