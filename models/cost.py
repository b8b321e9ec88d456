"""Parameters and FLOPs of a visual tower (paper Table 2 and 3.3.4).

FLOPs are counted as multiply-accumulates, as the paper's Table 2 does (plain ResNet18 at
224x224: 1.82 G): conv and dense layers, plus each attention module's own work (pooling, the
MLP, the 7x7 conv, the resize of the prior, the two element-wise products). Batch-norm, ReLU and
pooling layers of the backbone are not counted (they fold into the convs or are negligible).
Parameters are the learnable weights; batch-norm moving statistics are not counted (as in
PyTorch, whose counts the paper uses).
"""

from __future__ import annotations

from typing import Dict, List

import keras
import numpy as np

from models.attention import AttentionConfig, ConvAttention
from models.backbones import BackboneConfig, attention_layers, build_visual_tower

# The paper's setting of Table 2 and 3.3.4 (`cscnn models summary` counts it by default):
# ResNet-18 at 224x224, |K| = 3310 categories.
PAPER_BACKBONE = "resnet18"
PAPER_IMAGE_SIZE = 224
PAPER_CATEGORIES = 3310


def _size(w) -> int:
  return int(np.prod(w.shape))


def count_params(layer) -> int:
  return sum(_size(w) for w in layer.weights if "moving_" not in w.path)


def count_flops(model: keras.Model) -> int:
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += count_flops(layer)
    elif isinstance(layer, keras.layers.Conv2D):
      _, h, w, c_out = layer.output.shape
      k_h, k_w, c_in, _ = layer.kernel.shape
      total += h * w * k_h * k_w * c_in * c_out
    elif isinstance(layer, keras.layers.DepthwiseConv2D):    # one k x k filter per channel
      _, h, w, c_out = layer.output.shape
      k_h, k_w, _, _ = layer.kernel.shape
      total += h * w * k_h * k_w * c_out
    elif isinstance(layer, keras.layers.Dense):
      total += _size(layer.kernel)
    elif isinstance(layer, ConvAttention):
      features = layer.input[0]
      total += layer.flops(tuple(features.shape[1:]))
  return int(total)


def module_params(layer: ConvAttention) -> Dict[str, int]:
  spatial = count_params(layer.spatial_gate) if layer.spatial_gate is not None else 0
  return {"channels": int(layer.input[0].shape[-1]), "channel": count_params(layer.channel),
          "spatial": spatial}


def paper_formula(channels: int, num_categories: int, channel_prior: int, spatial_prior: int,
                  reduction: int = 4, kernel_size: int = 7) -> Dict[str, int]:
  """Paper 3.3.4: CSCNN channel C*C/r + (C+C')*C/r + C'*|K|; spatial H'*W'*|K| + the 7x7 conv
  (7*7*3 here: max, mean and the prior map in, one map out)."""
  c, h = channels, channels // reduction
  return {"channel": c * h + (c + channel_prior) * h + channel_prior * num_categories,
          "spatial": spatial_prior * spatial_prior * num_categories + kernel_size ** 2 * 3}


def cost_report(backbone: BackboneConfig, attention: AttentionConfig, num_categories: int) -> Dict:
  tower = build_visual_tower(backbone, attention, num_categories)
  modules: List[Dict[str, int]] = [module_params(layer) for layer in attention_layers(tower)]
  return {
      "backbone": backbone.name, "attention": attention.kind, "placement": backbone.placement,
      "image_size": backbone.image_size, "categories": num_categories,
      "channel_prior": attention.channel_prior, "spatial_prior": attention.spatial_prior,
      "reduction": attention.reduction, "output_dim": backbone.output_dim,
      "params": count_params(tower), "flops": count_flops(tower),
      "attention_modules": len(modules), "attention_params": sum(m["channel"] + m["spatial"] for m in modules),
      "modules": modules,
  }


def served_macs_per_row(variables) -> Dict[str, object]:
  """Multiply-adds per scored row of a served CTR model, from its variables (a loaded SavedModel
  has no Keras layers): every 2-d ``kernel`` is a dense layer (in x out), every 1-d cross-layer
  kernel of width d costs 2 d (the dot product z_l . w and the product with z_0). Embedding and
  table lookups are gathers, not multiply-adds. Returns the total and the dense kernel shapes in
  the order of the variables."""
  dense, cross = [], 0
  for v in variables:
    name = (getattr(v, "path", None) or v.name).split(":")[0]   # Keras "deep_0/kernel", TF "deep_0/kernel:0"
    if not name.endswith("/kernel"):
      continue
    if len(v.shape) == 2:
      dense.append(tuple(int(d) for d in v.shape))
    elif len(v.shape) == 1 and "cross" in name:
      cross += 2 * int(v.shape[0])
  return {"macs": sum(i * o for i, o in dense) + cross, "dense_kernels": dense, "cross_macs": cross}
