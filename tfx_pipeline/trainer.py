"""The TFX Trainer's `run_fn`: trains the CTR model on transformed examples and exports a
SavedModel that applies Transform itself, with two signatures:

- ``serving_default``: ``examples`` (serialized tf.Example with the raw features, no label)
  -> ``ctr`` (P(click), shape [B, 1]). What TFMA and TF Serving's Classify/Predict clients use.
- ``serving_raw``: one raw tensor per feature, shape [B] (strings for str features and the
  space-separated multi-valued ones, int64 for int features) -> ``ctr``. For clients that do
  not build tf.Examples.

Hyperparameters arrive in ``fn_args.custom_config`` (see `tfx_pipeline.pipeline`).
"""

from __future__ import annotations

import json
import logging

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models.dcn import OUTPUT_KEY, DCNConfig, build_ctr_model
from tfx_pipeline import configs
from tfx_pipeline import features as F
from tfx_pipeline.preprocessing import id_space

SERVING_RAW = "serving_raw"


def _input_fn(file_pattern, data_accessor, tf_transform_output, batch_size, input_names):
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size,
                                     label_key=F.transformed_name(F.LABEL_KEY)),
      tf_transform_output.transformed_metadata.schema)
  return dataset.map(lambda x, y: ({k: x[k] for k in input_names}, y)).repeat()


def _build_model(tf_transform_output, config: DCNConfig) -> keras.Model:
  sizes = {f.name: id_space(f, tf_transform_output) for f in F.FEATURES}
  logging.info("id spaces: %s", sizes)
  return build_ctr_model(F.FEATURES, sizes, config)


class _ExportModule(tf.Module):
  """What the SavedModel tracks: the Keras model and the Transform layer."""

  def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput):
    super().__init__()
    self.model = model
    self.tft_layer = tf_transform_output.transform_features_layer()
    self.input_names = tuple(i.name for i in model.inputs)

  def score(self, raw_features):
    transformed = self.tft_layer(raw_features)
    inputs = {name: transformed[name] for name in self.input_names}
    return {OUTPUT_KEY: self.model(inputs, training=False)}


def _signatures(module: _ExportModule, tf_transform_output):
  raw_spec = dict(tf_transform_output.raw_feature_spec())
  raw_spec.pop(F.LABEL_KEY)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve_examples(examples):
    return module.score(tf.io.parse_example(examples, raw_spec))

  names = [f.name for f in F.FEATURES]
  specs = [tf.TensorSpec([None], tf.string if f.dtype is str else tf.int64, name=f.name)
           for f in F.FEATURES]

  @tf.function(input_signature=specs)
  def serve_raw(*tensors):
    return module.score({n: tf.reshape(t, [-1, 1]) for n, t in zip(names, tensors)})

  return {"serving_default": serve_examples, SERVING_RAW: serve_raw}


def export_serving_model(model, tf_transform_output, export_dir: str) -> None:
  module = _ExportModule(model, tf_transform_output)
  tf.saved_model.save(module, export_dir, signatures=_signatures(module, tf_transform_output))


def run_fn(fn_args: tfx.components.FnArgs):
  """Called by the TFX Trainer."""
  custom = fn_args.custom_config or {}
  config = DCNConfig.from_dict(custom.get("model", {}))
  batch_size = int(custom.get("batch_size", configs.TRAIN_BATCH_SIZE))
  epochs = max(1, int(custom.get("epochs", 3)))
  keras.utils.set_random_seed(int(custom.get("seed", 0)))
  logging.info("model config: %s", json.dumps(config.__dict__, default=list))

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  model = _build_model(tf_transform_output, config)
  input_names = [i.name for i in model.inputs]
  train = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                    batch_size, input_names)
  evaluation = _input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                         configs.EVAL_BATCH_SIZE, input_names)
  steps = max(1, fn_args.train_steps // epochs)
  model.fit(train, epochs=epochs, steps_per_epoch=steps,
            validation_data=evaluation, validation_steps=max(1, fn_args.eval_steps),
            callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq=50)],
            verbose=2)
  export_serving_model(model, tf_transform_output, fn_args.serving_model_dir)
