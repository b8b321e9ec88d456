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
- ``efficientnet_lite0``: EfficientNet-Lite0 (``models/efficientnet_lite.py``), with ImageNet
  weights converted at setup (``weights="imagenet"``). Attention sits on each of the 16 MBConv
  blocks after its projection BN, before the residual addition (where the block has one).

Attention goes on the last ``attention_layers`` (L') eligible layers (default: all).
Every tower ends with global average pooling (flatten for CNN-F) and a linear projection to
``output_dim`` (150 in the paper). ``freeze=True`` fixes every backbone layer but the attention
modules and the projection (the "fixed CNN" of Table 8).

``weights`` starts the backbone from saved weights: ``"imagenet"`` (efficientnet_lite0 only: the
file ``efficientnet_lite.imagenet_weights_path()`` that ``make setup`` converts), or the path of
a Keras weights file (``load_backbone_weights``: ``save_weights`` of a tower with the same
backbone). Attention modules and the projection keep their initial values.

Images enter as float pixel values in [0, 255], shape (S, S, 3); category ids as int64 (B,).
The first layer rescales them: to [0, 1], or for efficientnet_lite0 to (pixel - 127) / 128, the
input its ImageNet weights expect.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Dict, List, Optional, Tuple

import h5py
import keras
import numpy as np

from models import efficientnet_lite
from models.attention import AttentionConfig, ConvAttention
from spec.choices import BACKBONES, CATALOGUE, PLACEMENTS
from spec.names import CATEGORY_INPUT, IMAGE_INPUT

PROJECTION = "x_v"
IMAGENET = "imagenet"
LAYER_KEYS_ATTR = "cscnn_layer_keys"   # save_backbone_weights: layer name -> its entry in the file


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
  name: str = "light"
  image_size: int = 32
  output_dim: int = 150                   # |x_v|
  placement: str = "per-conv"             # resnet18 only
  attention_layers: Optional[int] = None  # L'; None = every eligible layer
  freeze: bool = False
  bn_momentum: float = 0.9                # PyTorch's default (0.1 there): BN statistics that keep up
                                          # with short training budgets (Keras' 0.99 lags by ~100 steps);
                                          # efficientnet_lite0 keeps its reference's 0.99
  light_channels: Tuple[int, ...] = (16, 32, 64, 64)
  cnnf_fc_units: Tuple[int, ...] = (4096, 4096)
  weights: Optional[str] = None           # None (random), "imagenet", a Keras weights file, or
                                          # "catalogue" (the pipeline's CataloguePretrain file; the
                                          # Trainer puts its path here before building)

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
    if self.weights == IMAGENET and self.name != efficientnet_lite.NAME:
      raise ValueError(f"weights={IMAGENET!r} exist for {efficientnet_lite.NAME} only, not {self.name!r}")

  def eligible_layers(self) -> int:
    """How many conv layers can carry attention (conv1 / the stem never does)."""
    if self.name == "resnet18":
      return 16 if self.placement == "per-conv" else 8
    if self.name == "cnnf":
      return 4
    if self.name == efficientnet_lite.NAME:
      return efficientnet_lite.NUM_BLOCKS
    return len(self.light_channels) - 1

  def weights_path(self) -> Optional[str]:
    """The file ``weights`` names (None without weights)."""
    if self.weights == IMAGENET:
      return efficientnet_lite.imagenet_weights_path()
    if self.weights == CATALOGUE:
      raise ValueError(f"weights={CATALOGUE!r} names CataloguePretrain's artifact, which the pipeline's Trainer "
                       "resolves to its weights file; outside the pipeline give the file's path")
    return self.weights


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
    identity_start = self.cfg.weights is not None if a.identity_start is None else a.identity_start
    refined, _ = ConvAttention(a.kind, self.num_categories, a.channel_prior, a.spatial_prior,
                               a.reduction, a.kernel_size, return_attention=True, spatial_norm=a.spatial_norm,
                               identity_start=identity_start, name=f"attention_{name}")((x, self.category))
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


def _efficientnet_lite0(b: _Builder, x):
  return efficientnet_lite.build_features(x, b.layer, b.attend)


_BUILDERS = {"resnet18": _resnet18, "cnnf": _cnnf, "light": _light, efficientnet_lite.NAME: _efficientnet_lite0}


def build_visual_tower(cfg: BackboneConfig = BackboneConfig(),
                       attention: AttentionConfig = AttentionConfig(),
                       num_categories: int = 1, name: Optional[str] = None) -> keras.Model:
  """Keras model {image: (B, S, S, 3) float in [0, 255], category: (B,) int64} -> x_v (B, output_dim).

  With ``cfg.weights``, attention modules start as the identity unless ``attention.identity_start``
  says otherwise (``ConvAttention``: the paper's random gates would wash the pretrained features
  out before the first step)."""
  if attention.category_prior and num_categories < 1:
    raise ValueError("the category prior needs num_categories >= 1")
  s = cfg.image_size
  image = keras.Input((s, s, 3), dtype="float32", name=IMAGE_INPUT)
  category = keras.Input((), dtype="int64", name=CATEGORY_INPUT)
  b = _Builder(cfg, attention, num_categories, category)
  if cfg.name == efficientnet_lite.NAME:
    x = efficientnet_lite.normalization_layer()(image)
  else:
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(image)
  x = _BUILDERS[cfg.name](b, x)
  x_v = keras.layers.Dense(cfg.output_dim, name=PROJECTION)(x)
  if cfg.freeze:
    for layer in b.frozen:
      layer.trainable = False
  tower = keras.Model({IMAGE_INPUT: image, CATEGORY_INPUT: category}, x_v,
                      name=name or f"{cfg.name}_{attention.kind}")
  if cfg.weights is not None:
    load_backbone_weights(tower, cfg.weights_path())
  return tower


def backbone_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """The layers of ``model`` that hold backbone weights: every layer with variables but the
  attention modules and the projection to x_v."""
  return [layer for layer in model.layers
          if layer.weights and not isinstance(layer, ConvAttention) and layer.name != PROJECTION]


def _snake_case(name: str) -> str:
  name = re.sub(r"\W+", "", name)
  name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
  return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weights_file_keys(model: keras.Model) -> Dict[str, str]:
  """Layer name -> its entry in a Keras ``.weights.h5`` file of ``model``: Keras 3 stores the
  layers of a functional model under ``layers/<class in snake case>[_<n>]``, numbered per class
  in the order of ``model.layers`` (``conv2d``, ``conv2d_1``, ...), not under their names."""
  keys, used = {}, {}
  for layer in model.layers:
    key = _snake_case(type(layer).__name__)
    if key in used:
      used[key] += 1
      key = f"{key}_{used[key]}"
    else:
      used[key] = 0
    keys[layer.name] = key
  return keys


def save_backbone_weights(model: keras.Model, path: str) -> None:
  """``model.save_weights(path)`` plus, as the file's attribute ``cscnn_layer_keys``, the entry
  of every layer by name (``weights_file_keys``), so that ``load_backbone_weights`` finds each
  backbone layer by its name: the file then loads into a tower of the same backbone with any
  attention placement (Keras' own class-and-order keys shift when attention reorders layers)."""
  model.save_weights(path)
  with h5py.File(path, "a") as f:
    f.attrs[LAYER_KEYS_ATTR] = json.dumps(weights_file_keys(model))


def load_backbone_weights(model: keras.Model, path: str) -> List[str]:
  """Loads the backbone layers of ``model`` (``backbone_layers``) from ``path``, a Keras weights
  file that ``save_weights`` wrote from a model with the same backbone (a tower with any
  attention, or the ImageNet converter's classifier model); returns the names of the layers
  loaded. Layers are matched by name in a file that ``save_backbone_weights`` wrote, otherwise
  as Keras matches them (``weights_file_keys``: by class and order).
  efficientnet_lite0 is a chain, so its files load into towers with any attention; where a
  backbone has parallel branches (the projection shortcuts of light and resnet18), attaching
  attention reorders same-class layers, and a file loads into a tower with the same attention
  placement (a mismatch stops as below).

  Every backbone layer must be in the file with variables of the same shapes; otherwise a
  ``ValueError`` names the first layer whose shapes differ, its variable and both shapes (or
  else the layers the file lacks), and nothing is loaded. The attention modules and the
  projection keep their values; what else the file holds (their weights, a classifier) is
  ignored."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(f"cannot read backbone weights from {path}: {e}") from e
  keys = weights_file_keys(model)
  with f:
    if LAYER_KEYS_ATTR in f.attrs:   # saved by save_backbone_weights: the entries by layer name
      saved = json.loads(f.attrs[LAYER_KEYS_ATTR])
      keys = {name: saved.get(name, f"no layer named {name!r}") for name in keys}
    entries = f["layers"] if "layers" in f else {}
    layers = backbone_layers(model)
    stores, missing = [], []
    for layer in layers:
      entry = keys[layer.name]
      if entry not in entries:
        missing.append(f"{layer.name} ({entry})")
        continue
      own: Dict[str, object] = {}
      layer.save_own_variables(own)
      group = entries[entry].get("vars", {})
      if sorted(group.keys()) != sorted(own):
        raise ValueError(f"layer {layer.name!r} ({entry} in {path}): the file holds "
                         f"{len(group)} variables, the model {len(own)}")
      store = {}
      for key, var in own.items():
        value = np.asarray(group[key])
        if tuple(value.shape) != tuple(var.shape):
          raise ValueError(f"layer {layer.name!r} variable {key} ({var.path}): shape {tuple(value.shape)} "
                           f"in {path} ({entry}), {tuple(var.shape)} in the model")
        store[key] = value
      stores.append((layer, store))
    if missing:
      raise ValueError(f"{path} has no weights for {len(missing)} of the {len(layers)} backbone layers "
                       f"of {model.name}: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
  for layer, store in stores:
    layer.load_own_variables(store)
  return [layer.name for layer, _ in stores]


def attention_layers(tower: keras.Model) -> List[ConvAttention]:
  return [layer for layer in tower.layers if isinstance(layer, ConvAttention)]


def attention_maps_model(tower: keras.Model) -> keras.Model:
  """Same inputs as `tower`; outputs the spatial attention map M_s of every attention module."""
  layers = attention_layers(tower)
  if not layers:
    raise ValueError(f"{tower.name} has no attention modules")
  return keras.Model(tower.inputs, {layer.name: layer.output[1] for layer in layers}, name=f"{tower.name}_maps")
