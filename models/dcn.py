"""The paper's modified Deep & Cross Network (eq. 3-6), with the seam where x_v joins h1.

    x_nv = [E_1 x_1, ..., E_n x_n]                 non-visual embedding (eq. 7), d_e each
    h_1  = [x_v, ReLU-MLP(x_nv)]                   deep layer 1 (eq. 3), 1024 units (+ |x_v|)
    h_2, h_3 = ReLU-MLP(h_1), ReLU-MLP(h_2)        512, 256 units (eq. 4)
    z_{l+1} = z_0 z_l^T w_l + b_l + z_l            cross net on x_nv, 3 layers (eq. 5)
    y_hat = sigmoid(ReLU-MLP[h_3, z_3])            output (eq. 6)

Without a visual tower this is the "DCN" row of the paper's Table 8. A visual tower (the
next stage: CSCNN) is a callable that receives the model's inputs and returns extra Keras
inputs plus the visual vector x_v; ``build_ctr_model`` concatenates x_v into h_1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import keras

from models.layers import CrossNet, HistoryMatch, IdDropout, PooledEmbedding, TargetAttention
from spec.features import TOKEN_KINDS, Feature, transformed_name
from spec.names import OUTPUT_KEY
from spec.strict import known_fields

# A visual tower: (model inputs) -> (extra inputs it needs, x_v).
VisualTower = Callable[[Dict[str, keras.KerasTensor]], Tuple[Dict[str, keras.KerasTensor], keras.KerasTensor]]


@dataclasses.dataclass(frozen=True)
class DCNConfig:
  """Hyperparameters of the CTR model; defaults are the paper's."""

  embedding_dim: int = 4                       # d_e
  cross_layers: int = 3                        # eq. 5, l in {0, 1, 2}
  deep_units: Tuple[int, ...] = (1024, 512, 256)  # eq. 3-4
  output_units: Tuple[int, ...] = (128,)       # hidden ReLU layers of the output MLP (eq. 6)
  learning_rate: float = 1e-3
  # (candidate feature, history feature) pairs pooled by target attention (models.layers.
  # TargetAttention) into x_nv; () = the paper's DCN.
  target_attention: Tuple[Tuple[str, str], ...] = ()
  # (candidate feature, history feature) pairs scored by models.layers.HistoryMatch (the
  # candidate's dot product with the mean of the history, dim history_match_dim) into x_nv.
  history_match: Tuple[Tuple[str, str], ...] = ()
  history_match_dim: int = 16
  # Every sequence feature of the spec (a behaviour sequence) is also scored against the
  # candidate ad by HistoryMatch (models.ctr.with_sequences).
  match_sequences: bool = True
  # Share of training rows whose candidate ad id is read as the id of unknown ads (models.layers.
  # IdDropout), so that content (category, title, image) learns to rank new ads; 0 = the paper's.
  ad_id_dropout: float = 0.0

  def __post_init__(self):
    if self.embedding_dim < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
    if self.cross_layers < 1:
      raise ValueError(f"cross_layers must be >= 1, got {self.cross_layers}")
    if not self.deep_units or any(u < 1 for u in self.deep_units):
      raise ValueError(f"deep_units must be positive, got {self.deep_units}")
    if any(u < 1 for u in self.output_units):
      raise ValueError(f"output_units must be positive, got {self.output_units}")
    if not self.learning_rate > 0 and self.learning_rate != 0:
      raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
    for name in ("target_attention", "history_match"):
      for pair in getattr(self, name):
        if len(pair) != 2:
          raise ValueError(f"{name} takes (candidate, history) feature pairs, got {pair!r}")
    if self.history_match_dim < 1:
      raise ValueError(f"history_match_dim must be >= 1, got {self.history_match_dim}")
    if not 0.0 <= self.ad_id_dropout < 1.0:
      raise ValueError(f"ad_id_dropout must be in [0, 1), got {self.ad_id_dropout}")

  @classmethod
  def from_dict(cls, d: Mapping[str, object]) -> "DCNConfig":
    d = known_fields(cls, d, "model hyperparameters")
    d = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
         for k, v in d.items()}
    return cls(**d)


def build_inputs(features: Sequence[Feature]) -> Dict[str, keras.KerasTensor]:
  """Keras inputs for every transformed feature: int64 ids ([B] or [B, max_len]), or a float32
  [B] for a numeric feature that is not bucketised."""
  return {transformed_name(f.name): keras.Input(shape=f.shape, dtype=f.transformed_dtype,
                                                name=transformed_name(f.name))
          for f in features}


def build_embedding(inputs: Mapping[str, keras.KerasTensor], features: Sequence[Feature],
                    id_space: Mapping[str, int], config: DCNConfig) -> keras.KerasTensor:
  """x_nv: the concatenated d_e-dimensional embeddings of all features (eq. 7), and the
  normalised value of each numeric feature that is not bucketised (x_0 = [embeddings, dense])."""
  parts = []
  for f in features:
    x = inputs[transformed_name(f.name)]
    if not f.embedded:
      parts.append(keras.layers.Reshape((1,), name=f"dense_{f.name}")(x))
      continue
    dim = f.embedding_dim or config.embedding_dim
    if f.name not in id_space:
      raise ValueError(f"no id-space size for feature {f.name!r}")
    if f.kind in TOKEN_KINDS:
      parts.append(PooledEmbedding(id_space[f.name], dim, padding_id=f.padding_id,
                                   name=f"emb_{f.name}")(x))
    else:
      parts.append(keras.layers.Embedding(id_space[f.name], dim, name=f"emb_{f.name}")(x))
  by_name = {f.name: f for f in features}
  pairs = [("target_attention", q, h) for q, h in config.target_attention]
  pairs += [("history_match", q, h) for q, h in config.history_match]
  for what, query, history in pairs:
    for name, kinds in ((query, None), (history, TOKEN_KINDS)):
      if (name not in by_name or not by_name[name].embedded
          or (kinds is not None and by_name[name].kind not in kinds)):
        raise ValueError(f"{what} ({query!r}, {history!r}): {name!r} is not "
                         f"{'a token-list' if kinds else 'an embedded'} feature of this model")
    if what == "target_attention":
      layer = TargetAttention(id_space[query], id_space[history], padding_id=by_name[history].padding_id,
                              name=f"target_attention_{query}_{history}")
    else:
      layer = HistoryMatch(id_space[query], id_space[history], dim=config.history_match_dim,
                           padding_id=by_name[history].padding_id, name=f"history_match_{query}_{history}")
    parts.append(layer((inputs[transformed_name(query)], inputs[transformed_name(history)])))
  return keras.layers.Concatenate(name="x_nv")(parts)


def _drop_ad_id(inputs: Dict[str, keras.KerasTensor], features: Sequence[Feature], id_space: Mapping[str, int],
                rate: float, ad: Optional[str]) -> Dict[str, keras.KerasTensor]:
  """`inputs` with the ad id read through `IdDropout` towards its first OOV id (rate > 0)."""
  if rate == 0.0:
    return inputs
  f = {x.name: x for x in features}.get(ad)
  if f is None or f.hash_buckets is not None or not f.embedded:
    raise ValueError(f"ad_id_dropout needs the ad feature (an exact vocabulary with an OOV bucket), got {ad!r}")
  key = transformed_name(f.name)
  replacement = id_space[f.name] - f.oov_buckets   # Transform's first OOV bucket: rare and unseen ads
  return {**inputs, key: IdDropout(rate, replacement, name=f"id_dropout_{f.name}")(inputs[key])}


def build_ctr_model(features: Sequence[Feature], id_space: Mapping[str, int],
                    config: DCNConfig = DCNConfig(),
                    visual_tower: Optional[VisualTower] = None, ad: Optional[str] = None) -> keras.Model:
  """The CTR model of eq. 3-6: returns a Keras model from transformed ids to P(click).

  Args:
    features: the feature descriptions (a `spec.FeatureSpec`'s ``features``).
    id_space: per embedded feature's name, the number of distinct ids Transform can emit.
    config: hyperparameters.
    visual_tower: optional; builds x_v from the inputs (the seam of eq. 3).
    ad: the ad feature's name (the spec's ``ad`` role), needed with ``config.ad_id_dropout``.
  """
  inputs = build_inputs(features)
  x_nv = build_embedding(_drop_ad_id(inputs, features, id_space, config.ad_id_dropout, ad), features, id_space, config)

  h = keras.layers.Dense(config.deep_units[0], activation="relu", name="deep_0")(x_nv)
  if visual_tower is not None:
    extra_inputs, x_v = visual_tower(inputs)
    inputs = {**inputs, **extra_inputs}
    h = keras.layers.Concatenate(name="h1")([x_v, h])          # eq. 3: h1 = [x_v, MLP(x_nv)]
  for i, units in enumerate(config.deep_units[1:], start=1):
    h = keras.layers.Dense(units, activation="relu", name=f"deep_{i}")(h)

  z = CrossNet(config.cross_layers, name="cross_net")(x_nv)
  o = keras.layers.Concatenate(name="deep_and_cross")([h, z])
  for i, units in enumerate(config.output_units):
    o = keras.layers.Dense(units, activation="relu", name=f"output_{i}")(o)
  logit = keras.layers.Dense(1, name="logit")(o)
  y = keras.layers.Activation("sigmoid", name=OUTPUT_KEY, dtype="float32")(logit)
  model = keras.Model(inputs=inputs, outputs=y, name="dcn")
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                loss=keras.losses.BinaryCrossentropy(),
                metrics=[keras.metrics.AUC(name="auc")])
  return model
