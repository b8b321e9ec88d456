"""Builds the CNN-free serving model (paper 3.4.2-3.4.3) from a trained end-to-end model and
a visual table: the same DCN weights, with x_v looked up by the ad's image key in a
`VisualTable` instead of computed by the CNN."""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np

from models.ctr import with_sequences
from models.dcn import DCNConfig, build_ctr_model
from models.visual_table import VisualTable
from spec.features import IMAGE_KEY, FeatureSpec, transformed_name
from spec.names import OUTPUT_KEY, VISUAL_FALLBACK_KEY as FALLBACK_KEY

TABLE_LAYER = "visual_table"


def build_serving_model(end_to_end: keras.Model, spec: FeatureSpec, dcn: DCNConfig, id_space: Mapping[str, int],
                        keys: np.ndarray, vectors: np.ndarray, row_categories: np.ndarray) -> keras.Model:
  """Inputs: the transformed features and ``image_key``; outputs ``ctr`` and ``visual_fallback``.

  `row_categories` are the table rows' category ids as the model sees them (Transform ids)."""
  captured = {}

  def table_tower(inputs):
    key = keras.Input((), dtype="int64", name=IMAGE_KEY)
    table = VisualTable(len(keys), vectors.shape[1], id_space[spec.category], name=TABLE_LAYER)
    x_v, fallback = table((key, inputs[transformed_name(spec.category)]))
    captured["fallback"], captured["table"] = fallback, table
    return {IMAGE_KEY: key}, x_v

  dcn_model = build_ctr_model(spec.features, id_space, with_sequences(dcn, spec), table_tower, ad=spec.ad)
  captured["table"].set_table(keys, vectors, row_categories)
  for layer in dcn_model.layers:
    if layer.weights and layer.name != TABLE_LAYER:
      layer.set_weights(end_to_end.get_layer(layer.name).get_weights())
  inputs = {t.name: t for t in dcn_model.inputs}
  return keras.Model(inputs, {OUTPUT_KEY: dcn_model.outputs[0], FALLBACK_KEY: captured["fallback"]},
                     name="dcn_with_visual_table")
