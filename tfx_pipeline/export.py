"""SavedModel export of a serving model: the Keras model behind the Transform layer, with

- ``serving_default``: ``examples`` (serialized tf.Example, raw features, no label, no image)
  -> ``ctr`` [B, 1] (and ``visual_fallback`` [B, 1] for models with a visual table: 1 where the
  ad was not in the table and its category's mean x_v was used).
- ``serving_raw``: one raw tensor per column of the spec's `serving_columns`, shape [B]
  (strings; int64 for int features, float32 for float ones; token lists space-separated) -> the
  same outputs.
- ``transform_features``: ``examples`` -> transformed features (TFMA slices on them, e.g.
  ``ad_is_cold``).
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf
import tensorflow_transform as tft

from spec.features import FeatureSpec
from spec.names import EXAMPLES_INPUT, OUTPUT_KEY, SERVING_DEFAULT, SERVING_RAW, TRANSFORM_FEATURES



class ServingModule(tf.Module):
  """What the SavedModel tracks: the Keras model and the Transform layer."""

  def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput):
    super().__init__()
    self.model = model
    self.tft_layer = tf_transform_output.transform_features_layer()
    self.input_names = tuple(i.name for i in model.inputs)

  def score(self, raw_features) -> Dict[str, tf.Tensor]:
    transformed = self.tft_layer(raw_features)
    out = self.model({name: transformed[name] for name in self.input_names}, training=False)
    return dict(out) if isinstance(out, dict) else {OUTPUT_KEY: out}


def signatures(module: ServingModule, tf_transform_output: tft.TFTransformOutput, spec: FeatureSpec):
  raw_spec = dict(tf_transform_output.raw_feature_spec())
  for label in spec.labels:
    raw_spec.pop(label, None)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
  def serve_examples(examples):
    return module.score(tf.io.parse_example(examples, raw_spec))

  names = list(spec.serving_columns)
  specs = [tf.TensorSpec([None], spec.raw_tensor_dtype(n), name=n) for n in names]

  @tf.function(input_signature=specs)
  def serve_raw(*tensors):
    return module.score({n: tf.reshape(t, [-1, 1]) for n, t in zip(names, tensors)})

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
  def transform_features(examples):
    return module.tft_layer(tf.io.parse_example(examples, raw_spec))

  return {SERVING_DEFAULT: serve_examples, SERVING_RAW: serve_raw,
          TRANSFORM_FEATURES: transform_features}


def export_serving_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                         export_dir: str, spec: FeatureSpec) -> None:
  module = ServingModule(model, tf_transform_output)
  tf.saved_model.save(module, export_dir, signatures=signatures(module, tf_transform_output, spec))
