"""AdCatalogGen: brings the ad catalogue (ids, categories, images) into the pipeline as an
Examples artifact (split ``catalog``, gzipped TFRecords of tf.Example), validated row by row.

Input: ``ads.csv`` with at least ``ad_id``, ``category_id``, ``image`` (a path relative to the
data root, or absolute). Every image is decoded, converted to RGB and fitted into
``image_size`` x ``image_size`` (bilinear; the aspect ratio is kept and a non-square image is
padded with grey, centred, so portrait posters are not squashed), and stored re-encoded as PNG
in the feature
``image``. Output features: ``ad_id`` (bytes), ``category_id`` (int64), ``image`` (PNG bytes),
``image_ok`` (1, or 0 for a fallback image), ``title_words`` (bytes: the optional column
``title_words`` as it is, '' without it; catalogue pretraining learns from it).

Bad input stops the component with an error naming the file, line and ad: a missing column, a
non-integer category, a duplicate ad_id, and a missing, empty or undecodable image. With
``on_bad_image="blank"`` a bad image is replaced by a mid-grey image and ``image_ok=0``
instead (the documented fallback), and the count is logged; if more than ``max_blank_share``
of the ads (default 5%) fall back, it stops all the same, naming the count and the first of
them: a catalogue whose images are mostly missing is a wrong path, not a few bad files.
"""

import csv
import io
import json
import logging
import os
import time

import tensorflow as tf
from tfx import v1 as tfx

from spec.choices import MAX_BLANK_SHARE, ON_BAD_IMAGE   # in spec/: the CLI offers them without TFX
from tfx_pipeline.catalog import (AD_COLUMN, CATALOG_SPLIT, CATEGORY_COLUMN, IMAGE_FEATURE, IMAGE_OK_FEATURE,
                                  PAD_COLOUR, TITLE_FEATURE, CatalogError)

REQUIRED_COLUMNS = (AD_COLUMN, CATEGORY_COLUMN, IMAGE_FEATURE)


def load_image(path: str, image_size: int) -> bytes:
  """Decodes `path`, converts to RGB, fits it into image_size^2 (aspect ratio kept, the rest
  padded grey, centred); returns PNG bytes.

  Raises CatalogError with the reason for a missing, empty or corrupt file."""
  from PIL import Image, ImageOps, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise CatalogError(f"image file {path} does not exist")
  if os.path.getsize(path) == 0:
    raise CatalogError(f"image file {path} is empty")
  try:
    with Image.open(path) as im:
      im.load()
      rgb = im.convert("RGB")
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise CatalogError(f"image file {path} cannot be decoded: {e}") from e
  if rgb.size != (image_size, image_size):
    rgb = ImageOps.pad(rgb, (image_size, image_size), method=Image.BILINEAR, color=PAD_COLOUR)
  buf = io.BytesIO()
  rgb.save(buf, format="PNG")
  return buf.getvalue()


def blank_image(image_size: int) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  Image.new("RGB", (image_size, image_size), PAD_COLOUR).save(buf, format="PNG")
  return buf.getvalue()


def read_catalog(catalog_path: str, data_root: str, image_size: int, on_bad_image: str = "error",
                 log_every: int = 1000, max_blank_share: float = MAX_BLANK_SHARE):
  """Yields (ad_id, category_id, png_bytes, image_ok) per ad, validating as documented; with
  ``on_bad_image="blank"`` raises after the last ad if more than ``max_blank_share`` of them got
  the blank image."""
  if on_bad_image not in ON_BAD_IMAGE:
    raise CatalogError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
  if not 0 <= max_blank_share <= 1:
    raise CatalogError(f"max_blank_share must be in [0, 1], got {max_blank_share!r}")
  first_bad = []
  if not os.path.exists(catalog_path):
    raise CatalogError(f"ad catalogue {catalog_path} does not exist")
  seen = {}
  bad = 0
  blank = None
  t0 = time.time()
  with open(catalog_path, newline="") as fh:
    reader = csv.reader(fh)
    header = next(reader, None) or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
      raise CatalogError(f"{catalog_path}: missing required column(s) {missing}; header is {header}")
    idx = {c: header.index(c) for c in REQUIRED_COLUMNS}
    for line_no, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(header):
        raise CatalogError(f"{catalog_path}:{line_no}: {len(row)} fields, header has {len(header)}")
      ad_id, category, image = row[idx[AD_COLUMN]], row[idx[CATEGORY_COLUMN]], row[idx[IMAGE_FEATURE]]
      if not ad_id or any(ch.isspace() for ch in ad_id):
        raise CatalogError(f"{catalog_path}:{line_no}: ad_id {ad_id!r} is empty or contains whitespace")
      if ad_id in seen:
        raise CatalogError(f"{catalog_path}:{line_no}: duplicate ad_id {ad_id!r} (first on line {seen[ad_id]})")
      seen[ad_id] = line_no
      try:
        category_id = int(category)
      except ValueError:
        raise CatalogError(f"{catalog_path}:{line_no}: ad {ad_id!r}: category_id must be an integer, "
                           f"got {category!r}") from None
      path = image if os.path.isabs(image) else os.path.join(data_root, image)
      try:
        if not image:
          raise CatalogError("no image given")
        png, ok = load_image(path, image_size), 1
      except CatalogError as e:
        if on_bad_image == "error":
          raise CatalogError(f"{catalog_path}:{line_no}: ad {ad_id!r}: {e} "
                             "(use on_bad_image='blank' to substitute a grey image)") from None
        bad += 1
        if len(first_bad) < 3:
          first_bad.append(f"{catalog_path}:{line_no}: ad {ad_id!r}: {e}")
        logging.warning("ad %r: %s; using a blank image", ad_id, e)
        blank = blank or blank_image(image_size)
        png, ok = blank, 0
      yield ad_id, category_id, png, ok
      if log_every and len(seen) % log_every == 0:
        logging.info("catalogue: %d ads read (%.0f ads/s)", len(seen), len(seen) / max(time.time() - t0, 1e-9))
  if bad:
    logging.warning("catalogue: %d of %d ads got the blank fallback image", bad, len(seen))
  if bad > max_blank_share * len(seen):
    raise CatalogError(f"{catalog_path}: {bad} of {len(seen)} ads ({bad / len(seen):.0%}) have no usable image, "
                       f"more than the {max_blank_share:.0%} that on_bad_image='blank' accepts; first: "
                       f"{'; '.join(first_bad)}. Are the image paths visible where the pipeline runs? "
                       "(max_blank_share, `pipeline run --max-blank-images`, raises the limit)")


def read_titles(catalog_path: str) -> dict:
  """ad_id -> its ``title_words`` value; empty without that column (read_catalog validates the rest)."""
  with open(catalog_path, newline="") as fh:
    reader = csv.DictReader(fh)
    if TITLE_FEATURE not in (reader.fieldnames or []):
      return {}
    return {row[AD_COLUMN]: row[TITLE_FEATURE] or "" for row in reader if row.get(AD_COLUMN)}


def read_catalog_arrays(data_root: str, image_size: int, limit: int = 0):
  """``DATA/ads/ads.csv`` as arrays for work outside the pipeline (pretraining, Table 4): ad ids,
  categories (int64), images (N, S, S, 3) uint8 decoded as AdCatalogGen stores them (padded, a
  blank for a missing image) and titles; the first ``limit`` ads only when > 0."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  path = os.path.join(data_root, "ads", "ads.csv")
  titles = read_titles(path)
  ids, cats, imgs = [], [], []
  for ad_id, category, png, _ in read_catalog(path, data_root, image_size, "blank", log_every=0):
    if limit and len(ids) >= limit:
      break
    ids.append(ad_id)
    cats.append(category)
    imgs.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
  return ids, np.array(cats, dtype=np.int64), np.stack(imgs), [titles.get(a, "") for a in ids]


def to_example(ad_id: str, category_id: int, png: bytes, ok: int, title: str = "") -> bytes:
  feature = {
      AD_COLUMN: tf.train.Feature(bytes_list=tf.train.BytesList(value=[ad_id.encode()])),
      CATEGORY_COLUMN: tf.train.Feature(int64_list=tf.train.Int64List(value=[category_id])),
      IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
      IMAGE_OK_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[ok])),
      TITLE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[title.encode()])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@tfx.dsl.components.component
def AdCatalogGen(
    data_root: tfx.dsl.components.Parameter[str],
    image_size: tfx.dsl.components.Parameter[int],
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    catalog_path: tfx.dsl.components.Parameter[str] = "ads/ads.csv",
    on_bad_image: tfx.dsl.components.Parameter[str] = "error",
    max_blank_share: tfx.dsl.components.Parameter[float] = MAX_BLANK_SHARE,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> tfx.dsl.components.OutputDict(ads=int, fallback_images=int):
  """Reads, validates and resizes the ad catalogue (``catalog_path``, relative to
  ``data_root`` unless absolute) into an Examples artifact."""
  catalog_path = os.path.join(data_root, catalog_path)
  out_dir = os.path.join(examples.uri, f"Split-{CATALOG_SPLIT}")
  tf.io.gfile.makedirs(out_dir)
  n = bad = 0
  titles = read_titles(catalog_path) if os.path.exists(catalog_path) else {}
  with tf.io.TFRecordWriter(os.path.join(out_dir, "data_tfrecord-00000-of-00001.gz"),
                            options="GZIP") as writer:
    for ad_id, category_id, png, ok in read_catalog(catalog_path, data_root, image_size, on_bad_image,
                                                    max_blank_share=max_blank_share):
      writer.write(to_example(ad_id, category_id, png, ok, titles.get(ad_id, "")))
      n += 1
      bad += 1 - ok
  if n == 0:
    raise CatalogError(f"ad catalogue {catalog_path} has no rows")
  examples.split_names = json.dumps([CATALOG_SPLIT])
  examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
  logging.info("catalogue: %d ads, %d fallback images", n, bad)
  return {"ads": n, "fallback_images": bad}
