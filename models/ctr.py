"""The full CTR model: the DCN of eq. 3-6 with the visual tower of the chosen variant."""

from __future__ import annotations

from typing import Mapping

import keras

from models.dcn import DCNConfig, build_ctr_model
from models.visual import VisualConfig, make_visual_tower
from spec.features import FeatureSpec


def build_model(spec: FeatureSpec, id_space: Mapping[str, int],
                dcn: DCNConfig = DCNConfig(), visual: VisualConfig = VisualConfig()) -> keras.Model:
  """DCN (+ fixed / fine-tuned CNN, + CBAM, + CSCNN): Table 8's rows by `visual.variant`.

  The visual tower's category is the spec's ``category`` role."""
  tower = make_visual_tower(visual, id_space[spec.category], spec.category)
  return build_ctr_model(spec.features, id_space, dcn, tower)
