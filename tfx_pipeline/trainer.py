"""The TFX Trainer's `run_fn` (used by the stock Trainer and by VisualTrainer).

``fn_args.custom_config``: ``settings`` (`tfx_pipeline.settings.TrainerSettings.to_dict()`),
``spec`` (`spec.FeatureSpec.to_dict()`: the data set's features, label and roles) and, set by
VisualTrainer, ``catalog_uri`` and (after CataloguePretrain) ``pretrained_uri``: the backbone
then starts from that artifact's weights file (``visual.backbone_weights`` is ``catalogue`` in
the settings and becomes the file's path). The train / eval step counts come from the Trainer's
TrainArgs / EvalArgs, which `create_pipeline` fills from the settings.

Without images (variant ``none``) it exports the serving SavedModel directly
(`tfx_pipeline.export`). With images it saves the end-to-end Keras model
(``end_to_end.keras`` + ``training.json``) in the model artifact; VisualEmbeddingGen then builds
the visual table and the CNN-free serving model from it.

TensorBoard (the ``model_run`` artifact): loss and AUC (Keras), learning rate, impressions/s and
unique images/s, and for attention variants an image per epoch of the spatial attention maps of
a fixed panel of ads from several categories.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models.backbones import attention_maps_model
from models.ctr import build_model, copy_weights
from models.pretrain import WEIGHTS_FILE, embed
from models.visual import VISUAL_LAYER, VisualConfig, split_frozen_tower
from spec.choices import CATALOGUE
from spec.features import IMAGE_KEY, FeatureSpec, transformed_name
from spec.names import CATEGORY_INPUT, IMAGE_INPUT
from tfx_pipeline import configs
from tfx_pipeline.catalog import PAD_COLOUR
from tfx_pipeline.export import export_serving_model
from tfx_pipeline.preprocessing import fingerprint, id_spaces, lookup_ids
from tfx_pipeline.settings import TrainerSettings

END_TO_END_MODEL = "end_to_end.keras"
TRAINING_META = "training.json"


def blank_image(images: np.ndarray) -> np.ndarray:
  """AdCatalogGen's grey fallback image, standing for an ad missing from the catalogue:
  (1, S, S, 3) uint8 in the shape of ``images``."""
  return np.full((1,) + images.shape[1:], PAD_COLOUR, np.uint8)


class ImageIndex:
  """The catalogue's images in memory, found by image key (ad fingerprint) inside tf.data.
  Impressions of ads missing from the catalogue get ``blank`` (default: a mid-grey image). The
  rows may be any per-ad array: a frozen backbone's features, with the blank image's as
  ``blank``."""

  def __init__(self, ad_ids, images: np.ndarray, blank: np.ndarray = None):
    keys = fingerprint(ad_ids).numpy()
    order = np.argsort(keys)
    self.keys = tf.constant(keys[order])
    blank = blank_image(images) if blank is None else blank.reshape((1,) + images.shape[1:])
    self.images = tf.constant(np.concatenate([images[order], blank.astype(images.dtype)]))
    self.n = len(keys)

  def lookup(self, key):
    pos = tf.minimum(tf.searchsorted(self.keys, key), self.n - 1)
    found = tf.equal(tf.gather(self.keys, pos), key)
    return tf.cast(tf.gather(self.images, tf.where(found, pos, self.n)), tf.float32)


def _input_fn(file_pattern, data_accessor, tf_transform_output, batch_size, input_names, label: str,
              images: ImageIndex = None, per_ad: int = 1):
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=True,
                                     label_key=transformed_name(label)),
      tf_transform_output.transformed_metadata.schema)
  if per_ad > 1:
    # Up to `per_ad` impressions of the same ad next to each other, then cut into batches.
    dataset = dataset.unbatch().group_by_window(
        key_func=lambda x, y: x[IMAGE_KEY], reduce_func=lambda _, w: w.batch(per_ad),
        window_size=per_ad).unbatch().batch(batch_size)

  def select(x, y):
    out = {k: x[k] for k in input_names if k in x}
    if images is not None:
      out[IMAGE_INPUT] = images.lookup(x[IMAGE_KEY])
    return out, y

  return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE).repeat().prefetch(tf.data.AUTOTUNE)


class ThroughputLogger(keras.callbacks.Callback):
  """TensorBoard scalars every `every` steps: impressions/s, unique images/s, learning rate."""

  def __init__(self, log_dir: str, batch_size: int, unique_per_batch: float, every: int = 20):
    super().__init__()
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "throughput"))
    self.batch_size, self.unique_per_batch, self.every = batch_size, unique_per_batch, every
    self.step, self.busy, self.count = 0, 0.0, 0

  def on_train_batch_begin(self, batch, logs=None):
    self.t0 = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.busy += time.perf_counter() - self.t0
    self.count += 1
    self.step += 1
    if self.count >= self.every:
      with self.writer.as_default(step=self.step):
        tf.summary.scalar("impressions_per_s", self.count * self.batch_size / self.busy)
        tf.summary.scalar("unique_images_per_s", self.count * self.unique_per_batch / self.busy)
        tf.summary.scalar("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
      logging.info("step %d: %.0f impressions/s", self.step, self.count * self.batch_size / self.busy)
      self.busy, self.count = 0.0, 0

  def on_train_end(self, logs=None):
    self.writer.close()


def attention_panel_image(maps: np.ndarray, images: np.ndarray) -> np.ndarray:
  """One row per ad: [image | attention map | overlay], uint8 (rows*S, 3*S, 3)."""
  s = images.shape[1]
  heat = tf.image.resize(maps, (s, s), method="bilinear").numpy()[..., 0]
  heat = (heat - heat.min(axis=(1, 2), keepdims=True)) / (np.ptp(heat, axis=(1, 2), keepdims=True) + 1e-6)
  heat_rgb = np.stack([heat * 255, heat * 80, (1 - heat) * 255], -1)
  overlay = 0.5 * images + 0.5 * heat_rgb
  rows = [np.concatenate([images[i], heat_rgb[i], overlay[i]], axis=1) for i in range(len(images))]
  return np.concatenate(rows, axis=0).clip(0, 255).astype(np.uint8)


class AttentionMapLogger(keras.callbacks.Callback):
  """Writes the spatial attention maps of every module for a fixed panel of ads as TensorBoard
  images (one per module, rows = ads, sorted by category) at the end of each epoch, and the
  last module's panel as ``attention_maps.png``."""

  def __init__(self, log_dir: str, cnn: keras.Model, images: np.ndarray, categories: np.ndarray,
               labels):
    super().__init__()
    self.maps_model = attention_maps_model(cnn)
    self.images, self.categories, self.labels = images.astype(np.float32), categories, labels
    self.log_dir = log_dir
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "attention"))

  def on_epoch_end(self, epoch, logs=None):
    maps = self.maps_model({IMAGE_INPUT: self.images, CATEGORY_INPUT: self.categories}, training=False)
    with self.writer.as_default(step=epoch):
      for name, m in sorted(maps.items()):
        panel = attention_panel_image(np.asarray(m), self.images)
        tf.summary.image(f"attention_maps/{name}", panel[None], step=epoch,
                         description="rows: " + ", ".join(self.labels))
    self.writer.flush()
    from PIL import Image  # pylint: disable=import-outside-toplevel
    Image.fromarray(panel).resize((panel.shape[1] * 4, panel.shape[0] * 4), Image.NEAREST).save(
        os.path.join(self.log_dir, "attention_maps.png"))

  def on_train_end(self, logs=None):
    self.writer.close()


def _panel(ad_ids, categories, images, per_category=2, max_categories=4):
  chosen = []
  for c in sorted(set(categories.tolist()))[:max_categories]:
    chosen += [i for i in range(len(ad_ids)) if categories[i] == c][:per_category]
  return chosen


def _strategy(name: str):
  if name in (None, "", "default"):
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  raise ValueError(f"distribution must be 'default' or 'mirrored', got {name!r}")


def _unique_per_batch(dataset, batches: int = 10) -> float:
  counts = [len(np.unique(x[IMAGE_KEY].numpy())) for x, _ in dataset.take(batches)]
  return float(np.mean(counts)) if counts else 0.0


def _feature_index(features: keras.Model, ad_ids, images: np.ndarray) -> ImageIndex:
  """The frozen backbone's pooled features of every catalogue ad (and of the blank image),
  computed once, in place of the images: training then runs only the head."""
  start = time.perf_counter()
  rows = embed(features, np.concatenate([images, blank_image(images)]))
  print(f"frozen backbone: features of {len(images)} ads ({rows.shape[-1]}-d) computed once in "
        f"{time.perf_counter() - start:.1f} s; training the visual head on them", flush=True)
  return ImageIndex(ad_ids, rows[:-1], blank=rows[-1])


def resolve_catalogue_init(visual: VisualConfig, pretrained_uri) -> VisualConfig:
  """``backbone_weights="catalogue"`` -> the weights file in CataloguePretrain's artifact."""
  if visual.backbone_weights != CATALOGUE:
    return visual
  if not pretrained_uri:
    raise ValueError("visual init 'catalogue' needs CataloguePretrain's artifact (pretrained_uri): build the "
                     "pipeline with tfx_pipeline.pipeline.create_pipeline")
  return dataclasses.replace(visual, backbone_weights=os.path.join(pretrained_uri, WEIGHTS_FILE))


def run_fn(fn_args: tfx.components.FnArgs):
  """Called by the TFX Trainer."""
  custom = fn_args.custom_config or {}
  missing = [k for k in ("settings", "spec") if k not in custom]
  if missing:
    raise ValueError(f"the Trainer's custom_config misses {missing}: build the pipeline with "
                     "tfx_pipeline.pipeline.create_pipeline")
  settings = TrainerSettings.from_dict(custom["settings"])
  settings = settings.replace(visual=resolve_catalogue_init(settings.visual, custom.get("pretrained_uri")))
  spec = FeatureSpec.from_dict(custom["spec"])
  dcn, visual, batch_size, epochs = settings.model, settings.visual, settings.batch_size, settings.epochs
  per_ad = settings.impressions_per_ad
  keras.utils.set_random_seed(settings.seed)
  if settings.mixed_precision:
    keras.mixed_precision.set_global_policy("mixed_float16")
  logging.info("settings %s", settings)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  sizes = id_spaces(spec, tf_transform_output)
  with _strategy(settings.distribution).scope():
    model = build_model(spec, sizes, dcn, visual)
  trained = model   # the model that fit() trains: `model` itself, or its frozen-features twin
  input_names = [i.name for i in model.inputs]

  index, callbacks = None, [keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")]
  if visual.enabled:
    from tfx_pipeline.catalog import load_catalog_arrays  # pylint: disable=import-outside-toplevel
    ad_ids, raw_categories, images = load_catalog_arrays(custom["catalog_uri"], visual.image_size)
    split = split_frozen_tower(model.get_layer(VISUAL_LAYER).tower, visual)
    if split is None:
      index = ImageIndex(ad_ids, images)
    else:
      features, head = split
      index = _feature_index(features, ad_ids, images)
      with _strategy(settings.distribution).scope():
        trained = build_model(spec, sizes, dcn, visual, visual_head=head)
    if visual.attention_config().spatial:
      cnn = model.get_layer(VISUAL_LAYER).tower
      chosen = _panel(ad_ids, raw_categories, images)
      cats = lookup_ids(spec.feature(spec.category), raw_categories[chosen], tf_transform_output)
      callbacks.append(AttentionMapLogger(
          fn_args.model_run_dir, cnn, images[chosen], cats,
          [f"{ad_ids[i]} (category {raw_categories[i]})" for i in chosen]))

  train = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, batch_size,
                    input_names, spec.label, index, per_ad)
  evaluation = _input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                         configs.EVAL_BATCH_SIZE, input_names, spec.label, index)
  unique = _unique_per_batch(train) if visual.enabled else 0.0
  callbacks.append(ThroughputLogger(fn_args.model_run_dir, batch_size, unique))
  steps = max(1, fn_args.train_steps // epochs)
  trained.fit(train, epochs=epochs, steps_per_epoch=steps, validation_data=evaluation,
              validation_steps=max(1, fn_args.eval_steps), callbacks=callbacks, verbose=2)
  if trained is not model:
    copy_weights(trained, model, skip=(VISUAL_LAYER,))   # the head's layers are the model's own

  if not visual.enabled:
    export_serving_model(model, tf_transform_output, fn_args.serving_model_dir, spec)
    return
  tf.io.gfile.makedirs(fn_args.serving_model_dir)
  model.save(os.path.join(fn_args.serving_model_dir, END_TO_END_MODEL))
  with tf.io.gfile.GFile(os.path.join(fn_args.serving_model_dir, TRAINING_META), "w") as f:
    json.dump({"model": json.loads(json.dumps(dcn.__dict__, default=list)),
               "visual": visual.__dict__, "id_space": sizes, "spec": spec.to_dict(),
               "unique_images_per_batch": unique, "impressions_per_ad": per_ad}, f, indent=1)
