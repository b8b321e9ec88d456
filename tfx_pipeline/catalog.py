"""The ad catalogue as AdCatalogGen stores it (split ``catalog``, gzipped TFRecords of
tf.Example), and its readers for the Trainer and VisualEmbeddingGen.

Features: ``ad_id`` (bytes: the value of the impressions' ad column, the spec's ``ad`` role),
``category_id`` (int64: a value of the impressions' category column), ``image`` (PNG bytes,
``image_size`` square), ``image_ok`` (1, or 0 for a fallback image) and ``title_words`` (bytes:
the ad's title words, space-separated; empty when the catalogue has no ``title_words`` column,
and in catalogues written before it was stored).
"""

import os

import tensorflow as tf

CATALOG_SPLIT = "catalog"
AD_COLUMN = "ad_id"
CATEGORY_COLUMN = "category_id"
IMAGE_FEATURE = "image"
IMAGE_OK_FEATURE = "image_ok"
PAD_COLOUR = (128, 128, 128)   # the grey around a non-square image, and the image of an ad without one
TITLE_FEATURE = "title_words"


class CatalogError(ValueError):
  """The ad catalogue cannot be used as it is."""


def catalog_files(examples_uri: str):
  return tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{CATALOG_SPLIT}", "*.gz"))


def parse_catalog(serialized):
  """tf.Example -> dict of tensors (for tf.data / Beam consumers)."""
  spec = {AD_COLUMN: tf.io.FixedLenFeature([], tf.string),
          CATEGORY_COLUMN: tf.io.FixedLenFeature([], tf.int64),
          IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string),
          IMAGE_OK_FEATURE: tf.io.FixedLenFeature([], tf.int64),
          TITLE_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value="")}
  return tf.io.parse_single_example(serialized, spec)


def load_catalog_arrays(examples_uri: str, image_size: int):
  """The whole catalogue in memory: (ad_ids list, categories int64[N], images uint8[N,S,S,3])."""
  ids, cats, imgs, _ = load_catalog_with_titles(examples_uri, image_size)
  return ids, cats, imgs


def load_catalog_with_titles(examples_uri: str, image_size: int):
  """As `load_catalog_arrays`, plus the titles (list of str, '' where there is none)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  ds = tf.data.TFRecordDataset(catalog_files(examples_uri), compression_type="GZIP").map(parse_catalog)
  ids, cats, imgs, titles = [], [], [], []
  for ex in ds:
    ids.append(ex[AD_COLUMN].numpy().decode())
    cats.append(int(ex[CATEGORY_COLUMN]))
    titles.append(ex[TITLE_FEATURE].numpy().decode())
    img = tf.io.decode_png(ex[IMAGE_FEATURE], channels=3).numpy()
    if img.shape[:2] != (image_size, image_size):
      raise CatalogError(f"ad {ids[-1]!r}: catalogue image is {img.shape[:2]}, expected {image_size}")
    imgs.append(img)
  if not ids:
    raise CatalogError(f"the ad catalogue under {examples_uri} is empty")
  return ids, np.array(cats, dtype=np.int64), np.stack(imgs), titles
