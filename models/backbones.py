"""Image backbones that map (image, category) -> x_v, with attention on chosen conv layers.

- ``resnet18``: BasicBlock [2, 2, 2, 2] (He et al.), the paper's production backbone.
  Attention placement ``per-block`` puts one module per block after the last BN, before the
  residual addition (as the official CBAM, 8 modules); ``per-conv`` puts one after the BN of
  every conv layer in the blocks (the paper's count of 16 layers). The stem conv never gets one.
- ``cnnf``: CNN-F (Chatfield et al. 2014; VBPR's CNN): 5 conv + 2 fc layers (LRN omitted),
  the paper's ablation backbone; attention on conv2..conv5, never conv1.
- ``light``: a small residual net for 2 CPU cores and small images (the sample pipeline's
  default): a 3x3 stem and three one-conv residual blocks (3x3 conv-BN on the branch; identity
  shortcut, or 1x1 conv-BN where the shape changes; ReLU after the addition). Attention sits on
  each branch after its BN, before the addition, as in the official CBAM, so that a module
  re-weights the block's update and never gates the whole signal.

Attention goes on the last ``attention_layers`` (L') eligible layers (default: all).
Every tower ends with global average pooling (flatten for CNN-F) and a linear projection to
``output_dim`` (150 in the paper). ``freeze=True`` fixes every backbone layer but the attention
modules and the projection (the "fixed CNN" of Table 8).

Images enter as float pixel values in [0, 255], shape (S, S, 3); category ids as int64 (B,).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import keras

from models.attention import AttentionConfig, ConvAttention
from tfx_pipeline.configs import BACKBONES

PLACEMENTS = ("per-conv", "per-block")
IMAGE_INPUT = "image"
CATEGORY_INPUT = "category"


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
  name: str = "light"
  image_size: int = 32
  output_dim: int = 150                   # |x_v|
  placement: str = "per-conv"             # resnet18 only
  attention_layers: Optional[int] = None  # L'; None = every eligible layer
  freeze: bool = False
  bn_momentum: float = 0.9                # PyTorch's default (0.1 there): BN statistics that keep up
                                          # with short training budgets (Keras' 0.99 lags by ~100 steps)
  light_channels: Tuple[int, ...] = (16, 32, 64, 64)
  cnnf_fc_units: Tuple[int, ...] = (4096, 4096)

  def __post_init__(self):
    if self.name not in BACKBONES:
      raise ValueError(f"backbone must be one of {BACKBONES}, got {self.name!r}")
    if self.placement not in PLACEMENTS:
      raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
    if self.image_size < 8:
      raise ValueError(f"image_size must be >= 8, got {self.image_size}")
    if self.output_dim < 1:
      raise ValueError(f"output_dim must be >= 1, got {self.output_dim}")
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
    if self.attention_layers is not None and self.attention_layers < 0:
      raise ValueError(f"attention_layers must be >= 0, got {self.attention_layers}")
    if self.name == "light" and len(self.light_channels) < 2:
      raise ValueError("light_channels needs a stem and at least one layer")

  def eligible_layers(self) -> int:
    """How many conv layers can carry attention (conv1 / the stem never does)."""
    if self.name == "resnet18":
      return 16 if self.placement == "per-conv" else 8
    if self.name == "cnnf":
      return 4
    return len(self.light_channels) - 1


class _Builder:
  """Builds a tower, numbering attention sites and attaching modules to the last L'."""

  def __init__(self, cfg: BackboneConfig, attention: AttentionConfig, num_categories: int, category):
    self.cfg, self.attention, self.num_categories, self.category = cfg, attention, num_categories, category
    n = cfg.eligible_layers()
    last = n if cfg.attention_layers is None else min(cfg.attention_layers, n)
    self.first_attended = n - last
    self.site = 0
    self.frozen: List[keras.layers.Layer] = []

  def layer(self, layer):
    """A backbone layer: frozen when the config says so."""
    self.frozen.append(layer)
    return layer

  def attend(self, x, name):
    site, self.site = self.site, self.site + 1
    if not self.attention.enabled or site < self.first_attended:
      return x
    a = self.attention
    refined, _ = ConvAttention(a.kind, self.num_categories, a.channel_prior, a.spatial_prior,
                               a.reduction, a.kernel_size, return_attention=True, spatial_norm=a.spatial_norm,
                               name=f"attention_{name}")((x, self.category))
    return refined

  def conv_bn(self, x, filters, kernel, stride, name):
    x = self.layer(keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                       name=f"{name}_conv"))(x)
    return self.layer(keras.layers.BatchNormalization(momentum=self.cfg.bn_momentum, name=f"{name}_bn"))(x)

  def residual(self, x, branch, filters, stride, name):
    """ReLU(shortcut(x) + branch(x)); the shortcut is the identity, or a 1x1 conv-BN projection
    (``<name>_down``) where the stride or the width changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
      shortcut = self.conv_bn(x, filters, 1, stride, f"{name}_down")
    y = branch(x)
    return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _resnet18(b: _Builder, x):
  x = b.conv_bn(x, 64, 7, 2, "stem")
  x = keras.layers.ReLU(name="stem_relu")(x)
  x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
  per_conv = b.cfg.placement == "per-conv"
  for stage, (filters, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
    for block in range(2):
      s = stride if block == 0 else 1
      name = f"res{stage}_{block}"

      def branch(x, name=name, filters=filters, s=s):
        y = b.conv_bn(x, filters, 3, s, f"{name}_a")
        if per_conv:
          y = b.attend(y, f"{name}_a")
        y = keras.layers.ReLU(name=f"{name}_a_relu")(y)
        y = b.conv_bn(y, filters, 3, 1, f"{name}_b")
        return b.attend(y, f"{name}_b" if per_conv else name)   # after the last BN, before the add

      x = b.residual(x, branch, filters, s, name)
  return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def _cnnf(b: _Builder, x):
  x = b.layer(keras.layers.Conv2D(64, 11, 4, padding="same", activation="relu", name="conv1"))(x)
  x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
  x = b.layer(keras.layers.Conv2D(256, 5, 1, padding="same", activation="relu", name="conv2"))(x)
  x = b.attend(x, "conv2")
  x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)
  for i in (3, 4, 5):
    x = b.layer(keras.layers.Conv2D(256, 3, 1, padding="same", activation="relu", name=f"conv{i}"))(x)
    x = b.attend(x, f"conv{i}")
  x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool5")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  for i, units in enumerate(b.cfg.cnnf_fc_units, start=6):
    x = b.layer(keras.layers.Dense(units, activation="relu", name=f"fc{i}"))(x)
  return x


def _light(b: _Builder, x):
  channels = b.cfg.light_channels
  x = keras.layers.ReLU(name="stem_relu")(b.conv_bn(x, channels[0], 3, 1, "stem"))
  for i, filters in enumerate(channels[1:], start=1):
    stride = 2 if i < len(channels) - 1 else 1
    name = f"conv{i}"

    def branch(x, name=name, filters=filters, stride=stride):
      return b.attend(b.conv_bn(x, filters, 3, stride, name), name)   # after the BN, before the add

    x = b.residual(x, branch, filters, stride, name)
  return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def build_visual_tower(cfg: BackboneConfig = BackboneConfig(),
                       attention: AttentionConfig = AttentionConfig(),
                       num_categories: int = 1, name: Optional[str] = None) -> keras.Model:
  """Keras model {image: (B, S, S, 3) float in [0, 255], category: (B,) int64} -> x_v (B, output_dim)."""
  if attention.category_prior and num_categories < 1:
    raise ValueError("the category prior needs num_categories >= 1")
  s = cfg.image_size
  image = keras.Input((s, s, 3), dtype="float32", name=IMAGE_INPUT)
  category = keras.Input((), dtype="int64", name=CATEGORY_INPUT)
  b = _Builder(cfg, attention, num_categories, category)
  x = keras.layers.Rescaling(1.0 / 255, name="rescale")(image)
  x = {"resnet18": _resnet18, "cnnf": _cnnf, "light": _light}[cfg.name](b, x)
  x_v = keras.layers.Dense(cfg.output_dim, name="x_v")(x)
  if cfg.freeze:
    for layer in b.frozen:
      layer.trainable = False
  return keras.Model({IMAGE_INPUT: image, CATEGORY_INPUT: category}, x_v,
                     name=name or f"{cfg.name}_{attention.kind}")


def attention_layers(tower: keras.Model) -> List[ConvAttention]:
  return [l for l in tower.layers if isinstance(l, ConvAttention)]


def attention_maps_model(tower: keras.Model) -> keras.Model:
  """Same inputs as `tower`; outputs the spatial attention map M_s of every attention module."""
  layers = attention_layers(tower)
  if not layers:
    raise ValueError(f"{tower.name} has no attention modules")
  return keras.Model(tower.inputs, {l.name: l.output[1] for l in layers}, name=f"{tower.name}_maps")
