"""The full CTR model: the DCN of eq. 3-6 with the visual tower of the chosen variant."""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from models.dcn import DCNConfig, build_ctr_model
from models.visual import VisualConfig, make_visual_tower
from tfx_pipeline.features import CATEGORY_KEY, Feature


def build_model(features: Sequence[Feature], id_space: Mapping[str, int],
                dcn: DCNConfig = DCNConfig(), visual: VisualConfig = VisualConfig()) -> keras.Model:
  """DCN (+ fixed / fine-tuned CNN, + CBAM, + CSCNN): Table 8's rows by `visual.variant`."""
  tower = make_visual_tower(visual, id_space[CATEGORY_KEY])
  return build_ctr_model(features, id_space, dcn, tower)
