"""EfficientNet-Lite0's PyTorch state dict -> the Keras backbone of ``models/efficientnet_lite.py``.

Every tensor of the state dict goes to exactly one Keras variable (``torch_modules`` names the
module of each Keras layer): conv kernels OIHW -> HWIO, depthwise kernels (C, 1, kh, kw) ->
(kh, kw, C, 1), dense (out, in) -> (in, out), batch norm weight / bias / running_mean /
running_var -> gamma / beta / moving_mean / moving_variance. The BN step counters
(``num_batches_tracked``) have no Keras counterpart and are the only tensors left out. A tensor
whose shape differs from its variable's, a layer without its tensors, and a tensor that no
layer takes stop the conversion with a ``ValueError`` naming the key and the shapes.
"""

from __future__ import annotations

import collections
from typing import Dict, Mapping, Tuple

import keras
import numpy as np

from models import efficientnet_lite as E
from models.attention import AttentionConfig
from models.backbones import BackboneConfig, build_visual_tower
from spec.names import IMAGE_INPUT

SKIPPED_SUFFIX = ".num_batches_tracked"
BN_FIELDS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
             ("running_var", "moving_variance"))


class _Tensors:
  """The state dict, handing out each tensor once."""

  def __init__(self, state_dict: Mapping[str, np.ndarray]):
    self.state_dict = state_dict
    self.uses: Dict[str, int] = collections.Counter()

  def take(self, key: str) -> np.ndarray:
    if key not in self.state_dict:
      raise ValueError(f"the state dict has no tensor {key!r}")
    if self.uses[key]:
      raise ValueError(f"tensor {key!r} is used twice")
    self.uses[key] += 1
    return np.asarray(self.state_dict[key])

  def unused(self):
    return [k for k in self.state_dict if not self.uses[k] and not k.endswith(SKIPPED_SUFFIX)]


def _assign(layer, attr: str, key: str, value: np.ndarray):
  var = getattr(layer, attr)
  if tuple(value.shape) != tuple(var.shape):
    raise ValueError(f"{key}: shape {tuple(value.shape)} (after layout change) does not fit "
                     f"{layer.name}.{attr} of shape {tuple(var.shape)}")
  var.assign(value.astype(var.dtype))


def _convert_layer(layer, prefix: str, tensors: _Tensors):
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    key = prefix + ".weight"
    w = tensors.take(key)
    if w.ndim != 4 or w.shape[1] != 1:
      raise ValueError(f"{key}: depthwise kernel of shape {w.shape}, expected (C, 1, kh, kw)")
    _assign(layer, "kernel", key, w.transpose(2, 3, 0, 1))
  elif isinstance(layer, keras.layers.Conv2D):
    key = prefix + ".weight"
    w = tensors.take(key)
    if w.ndim != 4:
      raise ValueError(f"{key}: conv kernel of shape {w.shape}, expected (O, I, kh, kw)")
    _assign(layer, "kernel", key, w.transpose(2, 3, 1, 0))
  elif isinstance(layer, keras.layers.BatchNormalization):
    for torch_field, attr in BN_FIELDS:
      _assign(layer, attr, f"{prefix}.{torch_field}", tensors.take(f"{prefix}.{torch_field}"))
  elif isinstance(layer, keras.layers.Dense):
    key = prefix + ".weight"
    w = tensors.take(key)
    if w.ndim != 2:
      raise ValueError(f"{key}: dense weight of shape {w.shape}, expected (out, in)")
    _assign(layer, "kernel", key, w.T)
    _assign(layer, "bias", prefix + ".bias", tensors.take(prefix + ".bias"))
  else:
    raise ValueError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def build_imagenet_model(image_size: int = 32) -> Tuple[keras.Model, keras.Model, keras.layers.Dense]:
  """(tower, classifier model, classifier layer): an efficientnet_lite0 tower without attention
  and, on its pooled features, the 1000-class ImageNet classifier (``classifier``; the model maps
  an image in [0, 255] to logits)."""
  tower = build_visual_tower(BackboneConfig(E.NAME, image_size), AttentionConfig("none"))
  classifier = keras.layers.Dense(E.IMAGENET_CLASSES, name="classifier")
  image = tower.input[IMAGE_INPUT]
  model = keras.Model(image, classifier(tower.get_layer("pool").output), name="efficientnet_lite0_imagenet")
  return tower, model, classifier


def assign_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> Dict[str, int]:
  """Assigns the state dict's tensors to the classifier model of ``build_imagenet_model``;
  returns the number of times each key was taken (1 for every key but the BN step counters, 0
  for those). Raises ``ValueError`` on any mismatch (a layer may then be partly assigned)."""
  tensors = _Tensors(state_dict)
  modules = E.torch_modules()
  layers = {layer.name: layer for layer in model.layers if layer.weights}
  if set(layers) != set(modules):
    raise ValueError(f"Keras layers and state-dict modules differ: only in Keras "
                     f"{sorted(set(layers) - set(modules))}, only in the mapping {sorted(set(modules) - set(layers))}")
  for name, prefix in modules.items():
    _convert_layer(layers[name], prefix, tensors)
  unused = tensors.unused()
  if unused:
    raise ValueError(f"{len(unused)} tensors of the state dict were not used: {unused[:8]}")
  return {k: tensors.uses[k] for k in state_dict}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], image_size: int = 32):
  """``build_imagenet_model`` + ``assign_state_dict``: returns ``(tower, classifier model,
  classifier layer, uses)``."""
  tower, model, classifier = build_imagenet_model(image_size)
  return tower, model, classifier, assign_state_dict(model, state_dict)


def write_imagenet_weights(state_dict: Mapping[str, np.ndarray], path: str) -> Dict[str, int]:
  """Converts and writes the classifier model (backbone + classifier) with Keras' ``save_weights``
  to ``path`` (a ``.weights.h5`` name); returns the uses per key. ``load_backbone_weights``
  loads its backbone into any efficientnet_lite0 tower, ``build_imagenet_model()[1].load_weights``
  the whole classifier."""
  _, model, _, uses = convert_state_dict(state_dict)
  model.save_weights(path)
  return uses
