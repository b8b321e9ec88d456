"""The full CTR model: the DCN of eq. 3-6 with the visual tower of the chosen variant."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import keras

from models.dcn import DCNConfig, build_ctr_model
from models.visual import VisualConfig, make_visual_tower
from spec.features import SEQUENCE, FeatureSpec


def with_sequences(dcn: DCNConfig, spec: FeatureSpec) -> DCNConfig:
  """`dcn` with a HistoryMatch pair (candidate feature, sequence) for every sequence feature of
  `spec` when ``dcn.match_sequences``: a behaviour sequence is read against the candidate's
  feature it names in ``against`` (by default the ad)."""
  if not dcn.match_sequences:
    return dcn
  pairs = tuple(tuple(p) for p in dcn.history_match)
  pairs += tuple((spec.against(f), f.name) for f in spec.features
                 if f.kind == SEQUENCE and (spec.against(f), f.name) not in pairs)
  return dataclasses.replace(dcn, history_match=pairs)


def build_model(spec: FeatureSpec, id_space: Mapping[str, int],
                dcn: DCNConfig = DCNConfig(), visual: VisualConfig = VisualConfig(),
                visual_head: Optional[keras.Model] = None) -> keras.Model:
  """DCN (+ fixed / fine-tuned CNN, + CBAM, + CSCNN): Table 8's rows by `visual.variant`.

  The visual tower's category is the spec's ``category`` role. With ``visual_head``
  (`models.visual.split_frozen_tower`) the model reads precomputed image features through that
  head: the training twin of a frozen-backbone model (`copy_weights` carries its weights back)."""
  tower = make_visual_tower(visual, id_space[spec.category], spec.category, head=visual_head)
  return build_ctr_model(spec.features, id_space, with_sequences(dcn, spec), tower, ad=spec.ad)


def copy_weights(source: keras.Model, target: keras.Model, skip: Sequence[str] = ()) -> int:
  """Sets every layer of ``target`` that holds weights, but those named in ``skip``, to the
  weights of ``source``'s layer of the same name; returns how many layers it set. A layer
  missing from ``source`` or with other shapes stops with its name."""
  n = 0
  for layer in target.layers:
    if not layer.weights or layer.name in skip:
      continue
    try:
      values = source.get_layer(layer.name).get_weights()
    except ValueError as e:
      raise ValueError(f"layer {layer.name!r} of {target.name!r} has no counterpart in {source.name!r}") from e
    shapes = [tuple(w.shape) for w in layer.weights]
    if [v.shape for v in values] != shapes:
      raise ValueError(f"layer {layer.name!r}: shapes {[v.shape for v in values]} in {source.name!r}, "
                       f"{shapes} in {target.name!r}")
    layer.set_weights(values)
    n += 1
  return n
