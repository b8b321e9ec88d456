"""Category-specific attention (paper section 3.3) and the baselines it extends, as
serializable Keras layers.

One code path covers the paper's Table 5: the category prior is an *option* of each module.

- `ChannelAttention` (eq. 10): M_c = sigmoid(MLP[AvgPool(F), A_c^k] + MLP[MaxPool(F), A_c^k]),
  one shared two-layer MLP (C + C' -> C/r -> C). With ``pooling=("avg",)`` and no prior this is
  SE (Hu et al.): sigmoid(MLP(AvgPool(F))); with avg+max and no prior, CBAM's channel gate.
- `SpatialAttention` (eq. 11): M_s = sigmoid(Conv7x7([MaxPool_c(F'), AvgPool_c(F'),
  resize(A_s^k)])), A_s^k in R^{H' x W'} bilinearly resized to H x W. Without the prior it is
  CBAM's spatial gate (eq. 3 of the CBAM paper).
- `ConvAttention`: the module attached to a conv layer: F' = M_c * F, F'' = M_s * F' (eq. 8-9).
  ``AttentionConfig`` names the variants: none, se, cbam_channel, cbam, each ``+prior``; cscnn is
  cbam with the category prior.

Category ids index the priors; they are the Transform ids of ``category_id`` (so unknown
categories share an OOV row). Priors start random (paper: "randomly initialized") and are
learned jointly with the CTR model.

Parameter counts follow the paper's formula (3.3.4): the MLP has no biases and the 7x7 conv
no bias, so a CSCNN channel module has C*C/r + (C+C')*C/r + C'*|K| parameters and a spatial
module 7*7*3 + H'*W'*|K|.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from spec.choices import ATTENTION_KINDS

_POOLS = ("avg", "max")


def _split_inputs(inputs):
  if isinstance(inputs, (list, tuple)):
    if len(inputs) != 2:
      raise ValueError(f"expected (features, category_ids), got {len(inputs)} inputs")
    return inputs[0], inputs[1]
  return inputs, None


def _feature_shape(input_shape, has_prior: bool, who: str):
  """The feature map's shape from a layer's input shape(s); checks the category is given."""
  paired = isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and \
      isinstance(input_shape[0], (list, tuple))
  if has_prior and not paired:
    raise ValueError(f"this {who} has a category prior: call it with (features, category_ids)")
  return tuple(input_shape[0]) if paired else tuple(input_shape)


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
  """(out_size, in_size) matrix of 1-D bilinear resizing with half-pixel centres and clamped
  edges (what ``tf.image.resize(..., "bilinear", antialias=False)`` computes). Resizing a map A
  is then M_h A M_w^T, computed as one matmul of the flattened A with kron(M_h, M_w)^T
  (`SpatialAttention`), cheaper on CPU than a resize op and its gradient."""
  m = np.zeros((out_size, in_size), np.float32)
  scale = in_size / out_size
  for i in range(out_size):
    x = min(max((i + 0.5) * scale - 0.5, 0.0), in_size - 1.0)
    lo = int(np.floor(x))
    hi = min(lo + 1, in_size - 1)
    m[i, lo] += 1.0 - (x - lo)
    m[i, hi] += x - lo
  return m


def _check_gate_scale(gate_scale):
  if isinstance(gate_scale, bool) or not isinstance(gate_scale, (int, float)) or not gate_scale > 0:
    raise ValueError(f"gate_scale must be a number > 0, got {gate_scale!r}")


def _category_index(category, num_categories):
  ids = ops.reshape(ops.cast(category, "int32"), (-1,))
  return ops.clip(ids, 0, num_categories - 1)


@keras.saving.register_keras_serializable(package="cscnn")
class ChannelAttention(keras.layers.Layer):
  """Channel attention map M_c in R^{B x 1 x 1 x C} (eq. 10; SE / CBAM-channel without prior).

  Call with ``features`` (B, H, W, C), or ``(features, category_ids)`` when
  ``prior_dim > 0``. Returns the attention map, not the refined features: ``gate_scale`` times
  the sigmoid (1 in the paper; 2 under ``ConvAttention(identity_start=True)``, which also starts
  the MLP's second layer, ``output_initializer``, at zero).
  """

  def __init__(self, reduction: int = 4, pooling: Sequence[str] = _POOLS, num_categories: int = 0,
               prior_dim: int = 0, use_bias: bool = False,
               prior_initializer="random_normal", kernel_initializer="glorot_uniform",
               output_initializer=None, gate_scale: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    pooling = tuple(pooling)
    _check_gate_scale(gate_scale)
    if reduction < 1:
      raise ValueError(f"reduction must be >= 1, got {reduction}")
    if not pooling or any(p not in _POOLS for p in pooling) or len(set(pooling)) != len(pooling):
      raise ValueError(f"pooling must be a non-empty subset of {_POOLS}, got {pooling}")
    if prior_dim < 0 or num_categories < 0:
      raise ValueError("prior_dim and num_categories must be >= 0")
    if prior_dim > 0 and num_categories < 1:
      raise ValueError("a category prior (prior_dim > 0) needs num_categories >= 1")
    self.reduction = reduction
    self.pooling = pooling
    self.num_categories = num_categories
    self.prior_dim = prior_dim
    self.use_bias = use_bias
    self.prior_initializer = keras.initializers.get(prior_initializer)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.output_initializer = (self.kernel_initializer if output_initializer is None
                               else keras.initializers.get(output_initializer))
    self.gate_scale = float(gate_scale)

  @property
  def has_prior(self) -> bool:
    return self.prior_dim > 0

  def build(self, input_shape):
    f_shape = _feature_shape(input_shape, self.has_prior, "ChannelAttention")
    channels = f_shape[-1]
    if channels is None:
      raise ValueError("ChannelAttention needs a known number of channels")
    self.channels = int(channels)
    hidden = max(1, self.channels // self.reduction)
    self.fc1 = keras.layers.Dense(hidden, activation="relu", use_bias=self.use_bias,
                                  kernel_initializer=self.kernel_initializer, name="mlp_0")
    self.fc2 = keras.layers.Dense(self.channels, use_bias=self.use_bias,
                                  kernel_initializer=self.output_initializer, name="mlp_1")
    self.fc1.build((None, self.channels + self.prior_dim))
    self.fc2.build((None, hidden))
    if self.has_prior:
      self.prior = self.add_weight(name="channel_prior", shape=(self.num_categories, self.prior_dim),
                                   initializer=self.prior_initializer)

  def call(self, inputs):
    features, category = _split_inputs(inputs)
    if self.has_prior and category is None:
      raise ValueError("this ChannelAttention has a category prior: call it with (features, category_ids)")
    pooled = {"avg": ops.mean(features, axis=(1, 2)), "max": ops.max(features, axis=(1, 2))}
    prior = (ops.take(self.prior, _category_index(category, self.num_categories), axis=0)
             if self.has_prior else None)
    total = 0.0
    for p in self.pooling:
      x = pooled[p] if prior is None else ops.concatenate([pooled[p], prior], axis=-1)
      total = total + self.fc2(self.fc1(x))
    return self.gate_scale * ops.sigmoid(total)[:, None, None, :]

  def compute_output_shape(self, input_shape):
    f_shape = _feature_shape(input_shape, self.has_prior, "ChannelAttention")
    return (f_shape[0], 1, 1, f_shape[-1])

  def flops(self, feature_shape) -> int:
    """Multiply-accumulates for one example with features of shape (H, W, C)."""
    h, w, c = feature_shape
    hidden = max(1, c // self.reduction)
    mlp = (c + self.prior_dim) * hidden + hidden * c
    return len(self.pooling) * (h * w * c + mlp)

  def get_config(self):
    return {**super().get_config(), "reduction": self.reduction, "pooling": list(self.pooling),
            "num_categories": self.num_categories, "prior_dim": self.prior_dim,
            "use_bias": self.use_bias, "gate_scale": self.gate_scale,
            "prior_initializer": keras.initializers.serialize(self.prior_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "output_initializer": keras.initializers.serialize(self.output_initializer)}


@keras.saving.register_keras_serializable(package="cscnn")
class SpatialAttention(keras.layers.Layer):
  """Spatial attention map M_s in R^{B x H x W x 1} (eq. 11; CBAM-spatial without prior).

  ``prior_size`` = (H', W') of the learned per-category map A_s^k, bilinearly resized to the
  feature map's H x W (half-pixel centres, as ``tf.image.resize``). ``normalize`` puts a batch
  norm between the conv and the sigmoid, as the official CBAM code does (neither paper's
  equation has it; off by default). The map is ``gate_scale`` times the sigmoid (1 in the paper;
  see ``ConvAttention``'s ``identity_start``).
  """

  def __init__(self, kernel_size: int = 7, num_categories: int = 0,
               prior_size: Tuple[int, int] = (0, 0), prior_initializer="random_normal",
               kernel_initializer="glorot_uniform", normalize: bool = False, gate_scale: float = 1.0,
               **kwargs):
    super().__init__(**kwargs)
    _check_gate_scale(gate_scale)
    if isinstance(prior_size, int):
      prior_size = (prior_size, prior_size)
    prior_size = tuple(int(s) for s in prior_size)
    if kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if any(s < 0 for s in prior_size) or (0 in prior_size and prior_size != (0, 0)):
      raise ValueError(f"prior_size must be (0, 0) or positive, got {prior_size}")
    if prior_size != (0, 0) and num_categories < 1:
      raise ValueError("a category prior needs num_categories >= 1")
    self.kernel_size = kernel_size
    self.num_categories = num_categories
    self.prior_size = prior_size
    self.normalize = bool(normalize)
    self.gate_scale = float(gate_scale)
    self.prior_initializer = keras.initializers.get(prior_initializer)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  @property
  def has_prior(self) -> bool:
    return self.prior_size != (0, 0)

  def build(self, input_shape):
    f_shape = _feature_shape(input_shape, self.has_prior, "SpatialAttention")
    self._resize_to, self._resize_matrix = None, None
    if self.has_prior and f_shape[1] is not None and f_shape[2] is not None:
      # resize(A)[h, w] = sum_ij M_h[h, i] A[i, j] M_w[w, j]: the flattened A times
      # kron(M_h, M_w)^T, of shape (H' W', H W), in one matmul. On CPU the extra time of the
      # spatial prior (ResNet-18's 16 modules at 32x32, batch 20, forward and backward) was 4.6
      # to 5.5 ms with the 3-operand einsum "hi,bij,wj->bhw", 3.7 ms with two matmuls and 1.4 to
      # 1.9 ms with this.
      self._resize_to = (f_shape[1], f_shape[2])
      self._resize_matrix = np.kron(bilinear_matrix(f_shape[1], self.prior_size[0]),
                                    bilinear_matrix(f_shape[2], self.prior_size[1])).T
    self.conv = keras.layers.Conv2D(1, self.kernel_size, padding="same", use_bias=False,
                                    kernel_initializer=self.kernel_initializer, name="conv")
    self.conv.build((None, None, None, 3 if self.has_prior else 2))
    self.norm = None
    if self.normalize:
      self.norm = keras.layers.BatchNormalization(momentum=0.9, name="bn")
      self.norm.build((None, None, None, 1))
    if self.has_prior:
      self.prior = self.add_weight(name="spatial_prior",
                                   shape=(self.num_categories,) + self.prior_size,
                                   initializer=self.prior_initializer)

  def resized_prior(self, category, height: int, width: int):
    """A_s^k bilinearly resized to (height, width): (B, H, W, 1)."""
    a = ops.take(self.prior, _category_index(category, self.num_categories), axis=0)
    if (height, width) == self._resize_to:
      flat = ops.matmul(ops.reshape(a, (-1, self._resize_matrix.shape[0])), self._resize_matrix)
      return ops.reshape(flat, (-1, height, width, 1))
    return ops.image.resize(a[..., None], (height, width), interpolation="bilinear", antialias=False)

  def call(self, inputs):
    features, category = _split_inputs(inputs)
    if self.has_prior and category is None:
      raise ValueError("this SpatialAttention has a category prior: call it with (features, category_ids)")
    parts = [ops.max(features, axis=-1, keepdims=True), ops.mean(features, axis=-1, keepdims=True)]
    if self.has_prior:
      h, w = features.shape[1], features.shape[2]
      if h is None or w is None:
        h, w = ops.shape(features)[1], ops.shape(features)[2]
      parts.append(ops.cast(self.resized_prior(category, h, w), features.dtype))
    logits = self.conv(ops.concatenate(parts, axis=-1))
    if self.norm is not None:
      logits = self.norm(logits)
    return self.gate_scale * ops.sigmoid(logits)

  def compute_output_shape(self, input_shape):
    f_shape = _feature_shape(input_shape, self.has_prior, "SpatialAttention")
    return f_shape[:-1] + (1,)

  def flops(self, feature_shape) -> int:
    """Multiply-accumulates for one example, the resize counted as bilinear interpolation (4 per
    output pixel, as the paper's Table 2); the dense matmul that computes it does H' W' per
    pixel, mostly on zeros (at 224x224, about 0.05% of ResNet-18's FLOPs over all 16 modules)."""
    h, w, c = feature_shape
    n_in = 3 if self.has_prior else 2
    resize = 4 * h * w if self.has_prior else 0
    return 2 * h * w * c + h * w * self.kernel_size ** 2 * n_in + resize

  def get_config(self):
    return {**super().get_config(), "kernel_size": self.kernel_size,
            "num_categories": self.num_categories, "prior_size": list(self.prior_size),
            "normalize": self.normalize, "gate_scale": self.gate_scale,
            "prior_initializer": keras.initializers.serialize(self.prior_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}




@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """Which attention a backbone gets and its hyperparameters (paper defaults).

  kind: none | se | se_prior | cbam_channel | cbam_channel_prior | cbam | cscnn
  (cscnn = cbam with the category prior, the paper's module).
  """

  kind: str = "cscnn"
  channel_prior: int = 20        # C'
  spatial_prior: int = 7         # H' = W'
  reduction: int = 4             # r
  kernel_size: int = 7
  spatial_norm: bool = False     # BN after the spatial gate's conv (official CBAM code)
  identity_start: Optional[bool] = None   # gates 2*sigmoid(z) with z = 0 at first, F'' = F until
                                          # trained (ConvAttention); None: when the backbone starts
                                          # from pretrained weights (build_visual_tower)

  def __post_init__(self):
    if self.kind not in ATTENTION_KINDS:
      raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {self.kind!r}")
    if self.channel_prior < 1 or self.spatial_prior < 1 or self.reduction < 1:
      raise ValueError("channel_prior, spatial_prior and reduction must be >= 1")

  @property
  def enabled(self) -> bool:
    return self.kind != "none"

  @property
  def category_prior(self) -> bool:
    return self.kind in ("se_prior", "cbam_channel_prior", "cscnn")

  @property
  def pooling(self) -> Tuple[str, ...]:
    return ("avg",) if self.kind.startswith("se") else _POOLS

  @property
  def spatial(self) -> bool:
    return self.kind in ("cbam", "cscnn")


@keras.saving.register_keras_serializable(package="cscnn")
class ConvAttention(keras.layers.Layer):
  """The attention module attached to one conv layer: F' = M_c * F, then F'' = M_s * F'
  (eq. 8-9; the spatial step only for cbam / cscnn). Call with ``(features, category_ids)``;
  the ids are ignored by variants without the category prior.

  With ``return_attention=True`` it returns ``(F'', M_s)`` (M_s = ones without a spatial gate),
  for attention-map images.

  ``identity_start`` is for a backbone with pretrained weights. The paper's gates start random:
  sigmoid(z) is about 0.5 per gate, so each module scales the features by about 0.25, and on
  EfficientNet-Lite0's 16 blocks the pooled ImageNet features of real posters come out all zero
  (the head's ReLU6 sees only negative inputs), so the pretrained encoder is lost before the
  first step. With ``identity_start`` each gate is 2 * sigmoid(z) (in (0, 2)) and the last
  layer before it (the channel MLP's second layer, the spatial conv) starts at zero, so z = 0,
  every gate is exactly 1 and F'' = F until training moves them; the gradient reaches those
  zero kernels at once (d gate / dz = 0.5 at z = 0).
  """

  def __init__(self, kind: str = "cscnn", num_categories: int = 0, channel_prior: int = 20,
               spatial_prior: int = 7, reduction: int = 4, kernel_size: int = 7,
               return_attention: bool = False, spatial_norm: bool = False, identity_start: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.spec = AttentionConfig(kind, channel_prior, spatial_prior, reduction, kernel_size, spatial_norm,
                                bool(identity_start))
    if not self.spec.enabled:
      raise ValueError("ConvAttention with kind='none': do not attach a module instead")
    if self.spec.category_prior and num_categories < 1:
      raise ValueError(f"attention {kind!r} uses the category prior: num_categories must be >= 1")
    self.num_categories = num_categories
    self.return_attention = return_attention

  def build(self, input_shape):
    c = self.spec
    prior = c.category_prior
    # identity start: gates 2 sigmoid(z), the layer before z at zero; otherwise the defaults (a
    # fresh initializer draws a seed, so none is made that the paper's start does not use)
    start = {"gate_scale": 2.0} if c.identity_start else {}
    self.channel = ChannelAttention(
        reduction=c.reduction, pooling=c.pooling, num_categories=self.num_categories if prior else 0,
        prior_dim=c.channel_prior if prior else 0, name="channel",
        **(dict(start, output_initializer="zeros") if start else {}))
    f_shape = _feature_shape(input_shape, True, "ConvAttention")
    self.channel.build(input_shape if prior else f_shape)
    self.spatial_gate = None
    if c.spatial:
      self.spatial_gate = SpatialAttention(
          kernel_size=c.kernel_size, num_categories=self.num_categories if prior else 0,
          prior_size=(c.spatial_prior, c.spatial_prior) if prior else (0, 0),
          normalize=c.spatial_norm, name="spatial", **(dict(start, kernel_initializer="zeros") if start else {}))
      self.spatial_gate.build(input_shape if prior else f_shape)

  def call(self, inputs):
    features, category = _split_inputs(inputs)
    prior = self.spec.category_prior
    refined = self.channel((features, category) if prior else features) * features
    if self.spatial_gate is not None:
      m_s = self.spatial_gate((refined, category) if prior else refined)
      refined = m_s * refined
    else:
      m_s = ops.ones_like(refined[..., :1])
    return (refined, m_s) if self.return_attention else refined

  def compute_output_shape(self, input_shape):
    f_shape = tuple(input_shape[0])
    return (f_shape, f_shape[:-1] + (1,)) if self.return_attention else f_shape

  def flops(self, feature_shape) -> int:
    h, w, c = feature_shape
    total = self.channel.flops(feature_shape) + h * w * c
    if self.spatial_gate is not None:
      total += self.spatial_gate.flops(feature_shape) + h * w * c
    return total

  def get_config(self):
    c = self.spec
    return {**super().get_config(), "kind": c.kind, "num_categories": self.num_categories,
            "channel_prior": c.channel_prior, "spatial_prior": c.spatial_prior,
            "reduction": c.reduction, "kernel_size": c.kernel_size,
            "return_attention": self.return_attention, "spatial_norm": c.spatial_norm,
            "identity_start": c.identity_start}
