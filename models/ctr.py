"""The full CTR model: the DCN of eq. 3-6 with the visual tower of the chosen variant."""

from __future__ import annotations

import dataclasses
from typing import Mapping

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
                dcn: DCNConfig = DCNConfig(), visual: VisualConfig = VisualConfig()) -> keras.Model:
  """DCN (+ fixed / fine-tuned CNN, + CBAM, + CSCNN): Table 8's rows by `visual.variant`.

  The visual tower's category is the spec's ``category`` role."""
  tower = make_visual_tower(visual, id_space[spec.category], spec.category)
  return build_ctr_model(spec.features, id_space, with_sequences(dcn, spec), tower)
