"""The visual side of the CTR model: Table 8's variants, image de-duplication in a batch
(paper 3.4.1), and the tower that plugs into the DCN's seam (x_v joins h1).

Variants (paper Table 8): ``none`` (DCN without image), ``fixed`` (a CNN whose conv layers
are frozen; only the projection to x_v learns), ``finetune`` (the CNN trained end to end),
``cbam`` (+ CBAM attention), ``cscnn`` (+ category-specific attention). ``attention`` can
override the variant's attention kind for the Table 5 baselines (se, se_prior, ...).

Beyond Table 8, ``transfer`` is the multimodal transfer of JD's recommender (seed
jd_rec_multiobjective_sequence_multimodal, "Multimodal Features"): the backbone is frozen as in
``fixed`` (meant to start from pretrained weights, ``--visual-init``), a learnt linear map takes
its pooled features to a ``transfer_dim``-d image embedding (64, the seed's width), and
`CategoryGatedTransfer` (``transfer_experts`` shared experts, one softmax gate per category id)
maps that embedding to x_v. The 64-d map is learnt with the click loss, not taken from the
pretraining: CataloguePretrain's artifact holds the backbone only (its 64-d contrastive head is
a training device, discarded), and ImageNet or a user's file have no such head, so a learnt map
keeps one model for every ``--visual-init``. The whole head lives in the tower, so the offline
visual table holds its output per ad (with the ad's category) and serving stays CNN-free.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import keras
import tensorflow as tf

from models.attention import AttentionConfig
from models.backbones import PROJECTION, BackboneConfig, build_visual_tower
from models.defaults import IMAGE_SIZE
from models.transfer import CategoryGatedTransfer
from spec import choices
from spec.features import transformed_name
from spec.names import CATEGORY_INPUT, IMAGE_INPUT, IMAGE_KEY_INPUT
from spec.strict import known_fields


@dataclasses.dataclass(frozen=True)
class VisualConfig:
  variant: str = choices.VISUAL_VARIANT
  backbone: str = choices.BACKBONE
  image_size: int = IMAGE_SIZE
  output_dim: int = 150
  placement: str = "per-conv"
  attention_layers: Optional[int] = None   # L'
  channel_prior: int = 20                  # C'
  spatial_prior: int = 7                   # H' = W'
  reduction: int = 4
  attention: Optional[str] = None          # override of the variant's attention kind
  spatial_norm: bool = False
  dedup: bool = True
  backbone_weights: Optional[str] = None   # "imagenet", a Keras weights file, or "catalogue" (the
                                           # pipeline's CataloguePretrain file; BackboneConfig.weights)
  transfer_dim: int = 64                   # variant transfer: width of the image embedding (the seed's 64)
  transfer_experts: int = 4                # variant transfer: shared experts of CategoryGatedTransfer

  def __post_init__(self):
    if self.variant not in choices.VISUAL_VARIANTS:
      raise ValueError(f"visual variant must be one of {choices.VISUAL_VARIANTS}, got {self.variant!r}")
    for name in ("transfer_dim", "transfer_experts"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"visual {name} must be an integer >= 1, got {value!r}")
    self.backbone_config()
    self.attention_config()

  @property
  def enabled(self) -> bool:
    return self.variant != "none"

  def attention_config(self) -> AttentionConfig:
    kind = self.attention or {"fixed": "none", "finetune": "none", "none": "none",
                              choices.TRANSFER: "none"}.get(self.variant, self.variant)
    return AttentionConfig(kind, self.channel_prior, self.spatial_prior, self.reduction,
                           spatial_norm=self.spatial_norm)

  def backbone_config(self) -> BackboneConfig:
    return BackboneConfig(self.backbone, self.image_size, self.output_dim, self.placement,
                          self.attention_layers, freeze=self.variant in choices.FROZEN_VARIANTS,
                          weights=self.backbone_weights)

  @classmethod
  def from_dict(cls, d) -> "VisualConfig":
    return cls(**known_fields(cls, d, "visual hyperparameters"))


@keras.saving.register_keras_serializable(package="cscnn")
class DedupApply(keras.layers.Layer):
  """Runs ``tower`` once per unique ``key`` in the batch and gathers its output back to every
  row (paper 3.4.1: the CNN embeds each ad image once per batch; impressions of the same ad
  share the result). Gradients equal those without de-duplication (gather's gradient sums the
  contributions of duplicate rows), except that batch-norm statistics in training mode are
  taken over the unique images.

  Call with ``{"image": (B,S,S,3), "category": (B,), "key": (B,) int64}``.
  """

  def __init__(self, tower: keras.Model, enabled: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.tower = tower
    self.enabled = enabled

  def build(self, input_shape):
    if not self.tower.built:
      self.tower.build({IMAGE_INPUT: input_shape[IMAGE_INPUT], CATEGORY_INPUT: input_shape[CATEGORY_INPUT]})
    self.built = True

  def call(self, inputs, training=None):
    image, category = inputs[IMAGE_INPUT], inputs[CATEGORY_INPUT]
    if not self.enabled:
      return self.tower({IMAGE_INPUT: image, CATEGORY_INPUT: category}, training=training)
    key = tf.reshape(inputs["key"], [-1])
    unique, index = tf.unique(key)
    first = tf.math.unsorted_segment_min(tf.range(tf.shape(key)[0]), index, tf.shape(unique)[0])
    out = self.tower({IMAGE_INPUT: tf.gather(image, first),
                      CATEGORY_INPUT: tf.gather(category, first)}, training=training)
    return tf.gather(out, index)

  def compute_output_shape(self, input_shape):
    return (input_shape[IMAGE_INPUT][0], self.tower.output.shape[-1])

  def get_config(self):
    return {**super().get_config(), "tower": keras.saving.serialize_keras_object(self.tower),
            "enabled": self.enabled}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["tower"] = keras.saving.deserialize_keras_object(config["tower"])
    return cls(**config)


VISUAL_LAYER = "visual"             # the CTR model's DedupApply layer, which holds the tower
TRANSFER_EMBED = "transfer_embed"   # the learnt linear map to the transfer_dim-d image embedding
TRANSFER = "transfer"               # the CategoryGatedTransfer layer, whose output is x_v


def build_tower(cfg: VisualConfig, num_categories: int, name: Optional[str] = None) -> keras.Model:
  """The variant's tower: {image, category} -> x_v (B, output_dim).

  For ``transfer``: the frozen backbone's pooled features (the input of its x_v projection,
  which the tower leaves out) -> Dense(transfer_dim) -> CategoryGatedTransfer(output_dim,
  transfer_experts, num_categories) keyed by the category input. One flat functional model, so
  the offline table (VisualEmbeddingGen) and the saved model see it like any other tower."""
  backbone = build_visual_tower(cfg.backbone_config(), cfg.attention_config(), num_categories, name=name)
  if cfg.variant != choices.TRANSFER:
    return backbone
  features = backbone.get_layer(PROJECTION).input
  embedding = keras.layers.Dense(cfg.transfer_dim, name=TRANSFER_EMBED)(features)
  x_v = CategoryGatedTransfer(cfg.output_dim, cfg.transfer_experts, num_categories, name=TRANSFER)(
      (embedding, backbone.input[CATEGORY_INPUT]))
  return keras.Model(backbone.input, x_v, name=backbone.name)


def _head_layers(cnn: keras.Model, cfg: VisualConfig) -> Tuple[keras.layers.Layer, ...]:
  names = (TRANSFER_EMBED, TRANSFER) if cfg.variant == choices.TRANSFER else (PROJECTION,)
  return tuple(cnn.get_layer(n) for n in names)


def split_frozen_tower(cnn: keras.Model, cfg: VisualConfig) -> Optional[Tuple[keras.Model, keras.Model]]:
  """For a tower whose every layer before its head is frozen (``fixed`` and ``transfer``
  without attention): ``(features, head)``. ``features`` maps {image, category} to the pooled
  features, a fixed function of the image; ``head`` maps {image: features (B, F), category}
  to x_v with the tower's own head layers (PROJECTION; or TRANSFER_EMBED and TRANSFER), so that
  training ``head`` trains ``cnn``. None when anything before the head trains (fine-tuned and
  attention variants), since then the features change with training."""
  if cfg.variant not in choices.FROZEN_VARIANTS:
    return None
  head_layers = _head_layers(cnn, cfg)
  features = keras.Model(cnn.inputs, head_layers[0].input, name=f"{cnn.name}_features")
  if features.trainable_weights:
    return None
  f = keras.Input((features.output.shape[-1],), dtype="float32", name=IMAGE_INPUT)
  category = keras.Input((), dtype="int64", name=CATEGORY_INPUT)
  if cfg.variant == choices.TRANSFER:
    x_v = head_layers[1]((head_layers[0](f), category))
  else:
    x_v = head_layers[0](f)
  return features, keras.Model({IMAGE_INPUT: f, CATEGORY_INPUT: category}, x_v, name=f"{cnn.name}_head")


def make_visual_tower(cfg: VisualConfig, num_categories: int, category_feature: str,
                      head: Optional[keras.Model] = None):
  """The DCN seam's callable: builds the CNN and returns ({image, image_key inputs}, x_v).

  The category comes from the transformed input of `category_feature`, so the priors are
  indexed by Transform ids (``num_categories`` = its id space, OOV included).

  With ``head`` (`split_frozen_tower`'s), the image input carries the ad's precomputed pooled
  features instead of its pixels and the tower is that head: the training model of a frozen
  backbone, whose every other layer has the name it has in the image model.
  """
  if not cfg.enabled:
    return None

  def tower(inputs):
    s = cfg.image_size
    shape = (s, s, 3) if head is None else head.input[IMAGE_INPUT].shape[1:]
    image = keras.Input(shape, dtype="float32", name=IMAGE_INPUT)
    key = keras.Input((), dtype="int64", name=IMAGE_KEY_INPUT)
    cnn = build_tower(cfg, num_categories, name="cnn") if head is None else head
    x_v = DedupApply(cnn, enabled=cfg.dedup, name=VISUAL_LAYER)(
        {IMAGE_INPUT: image, CATEGORY_INPUT: inputs[transformed_name(category_feature)], "key": key})
    return {IMAGE_INPUT: image, IMAGE_KEY_INPUT: key}, x_v

  return tower
