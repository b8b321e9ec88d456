"""VisualEmbeddingGen: the offline inference of paper 3.4.2. Runs the trained CNN (with its
category-specific attention) over the ad catalogue on Beam, in batches, and writes

- ``visual_table`` (artifact type ``VisualTable``): ``table/rows-*.gz``, tf.Examples with
  ``ad_id``, ``category_id``, ``x_v`` (float list), and ``stats.json`` (rows, ads dropped by
  frequency control, coverage of the evaluation impressions);
- ``serving_model`` (a ``Model``): the DCN with the table and no CNN, exported with the
  serving signatures (`tfx_pipeline.export`), which the Evaluator judges and the Pusher pushes.

Frequency control (paper: "after dimension reduction and frequency control"): keep only ads with
at least ``min_impressions`` training impressions, and / or only the ``top_k`` most shown ones
(0 = no limit). Ads left out are served with their category's mean x_v.
"""

import json
import logging
import os
from typing import Dict, Iterable, List

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.utils import path_utils

from tfx_pipeline.catalog import AD_COLUMN, CATEGORY_COLUMN
from spec.features import FeatureSpec


class VisualTable(tfx.dsl.Artifact):
  """ad_id -> x_v rows (TFRecord of tf.Example) and their statistics."""
  TYPE_NAME = "cscnn.VisualTable"   # namespace.Name, as Kubeflow v2 requires


TABLE_DIR = "table"
STATS_FILE = "stats.json"


def _ad_id(serialized: bytes, column: str) -> str:
  """The raw value of an impression's ad column as a string (the catalogue's ad_id)."""
  feature = tf.train.Example.FromString(serialized).features.feature[column]
  if feature.bytes_list.value:
    return feature.bytes_list.value[0].decode()
  return str(feature.int64_list.value[0])


class _EmbedFn(beam.DoFn):
  """Loads the trained model once per worker; embeds a batch of catalogue rows."""

  def __init__(self, model_dir: str, transform_uri: str, spec_json: str):
    self.model_dir, self.transform_uri = model_dir, transform_uri
    self.category = FeatureSpec.from_json(spec_json).category_feature

  def setup(self):
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
    import models.attention  # noqa: F401  (registers layers)
    import models.layers  # noqa: F401
    from models.visual import VISUAL_LAYER  # pylint: disable=import-outside-toplevel
    from tfx_pipeline.trainer import END_TO_END_MODEL  # pylint: disable=import-outside-toplevel
    model = keras.models.load_model(os.path.join(self.model_dir, END_TO_END_MODEL))
    self.cnn = model.get_layer(VISUAL_LAYER).tower
    self.tft_output = tft.TFTransformOutput(self.transform_uri)

  def process(self, batch: List[bytes]) -> Iterable[bytes]:
    from tfx_pipeline.catalog import IMAGE_FEATURE, parse_catalog  # pylint: disable=import-outside-toplevel
    from tfx_pipeline.preprocessing import lookup_ids  # pylint: disable=import-outside-toplevel
    rows = [parse_catalog(b) for b in batch]
    images = np.stack([tf.io.decode_png(r[IMAGE_FEATURE], channels=3).numpy() for r in rows]).astype(np.float32)
    raw_cats = [int(r[CATEGORY_COLUMN]) for r in rows]
    cats = lookup_ids(self.category, raw_cats, self.tft_output)
    x_v = np.asarray(self.cnn({"image": images, "category": cats}, training=False))
    for r, c, v in zip(rows, raw_cats, x_v):
      yield _row_example(r[AD_COLUMN].numpy().decode(), c, v)


def _read_rows(files):
  """(ad_ids, raw categories int64[N], x_v float32[N, D]) of table rows in `files`."""
  ids, cats, vecs = [], [], []
  for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    ex = tf.train.Example.FromString(rec.numpy())
    ids.append(ex.features.feature[AD_COLUMN].bytes_list.value[0].decode())
    cats.append(ex.features.feature[CATEGORY_COLUMN].int64_list.value[0])
    vecs.append(np.array(ex.features.feature["x_v"].float_list.value, np.float32))
  return ids, np.array(cats, np.int64), np.stack(vecs) if vecs else np.zeros((0, 0), np.float32)


def _row_example(ad_id: str, category_id: int, x_v: np.ndarray) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      AD_COLUMN: tf.train.Feature(bytes_list=tf.train.BytesList(value=[ad_id.encode()])),
      CATEGORY_COLUMN: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(category_id)])),
      "x_v": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(x_v).tolist())),
  })).SerializeToString()


def _counts(path_prefix: str) -> Dict[str, int]:
  out = {}
  for path in tf.io.gfile.glob(path_prefix + "*"):
    with tf.io.gfile.GFile(path) as f:
      for line in f:
        ad, n = json.loads(line)
        out[ad] = n
  return out


def select_rows(ad_ids: List[str], train_counts: Dict[str, int], min_impressions: int, top_k: int):
  """Indices of the rows kept by frequency control, most shown first."""
  order = sorted(range(len(ad_ids)), key=lambda i: (-train_counts.get(ad_ids[i], 0), ad_ids[i]))
  keep = [i for i in order if train_counts.get(ad_ids[i], 0) >= min_impressions]
  return keep[:top_k] if top_k > 0 else keep


@tfx.dsl.components.component(use_beam=True)
def VisualEmbeddingGen(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    catalog: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    transform_graph: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.TransformGraph],
    visual_table: tfx.dsl.components.OutputArtifact[VisualTable],
    serving_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    min_impressions: tfx.dsl.components.Parameter[int] = 0,
    top_k: tfx.dsl.components.Parameter[int] = 0,
    batch_size: tfx.dsl.components.Parameter[int] = 256,
    code_version: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> tfx.dsl.components.OutputDict(rows=int, eval_coverage=float):
  """Embeds the catalogue, applies frequency control, builds the CNN-free serving model."""
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
  import models.attention  # noqa: F401  (registers layers)
  import models.layers  # noqa: F401
  import models.visual  # noqa: F401
  from tfx_pipeline.catalog import catalog_files  # pylint: disable=import-outside-toplevel
  from models.dcn import DCNConfig  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.export import export_serving_model  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.preprocessing import fingerprint, lookup_ids  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.serving_model import build_serving_model  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.trainer import END_TO_END_MODEL, TRAINING_META  # pylint: disable=import-outside-toplevel

  model_dir = path_utils.serving_model_path(model.uri)
  with tf.io.gfile.GFile(os.path.join(model_dir, TRAINING_META)) as f:
    meta = json.load(f)
  spec = FeatureSpec.from_dict(meta["spec"])
  work = os.path.join(visual_table.uri, "work")
  split_files = lambda split: os.path.join(examples.uri, f"Split-{split}", "*")  # noqa: E731
  with beam_pipeline as p:
    catalog_glob = os.path.join(os.path.dirname(catalog_files(catalog.uri)[0]), "*.gz")
    _ = (p | "ReadCatalog" >> beam.io.ReadFromTFRecord(catalog_glob)
         | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
         | "Embed" >> beam.ParDo(_EmbedFn(model_dir, transform_graph.uri, spec.to_json()))
         | "WriteRows" >> beam.io.WriteToTFRecord(os.path.join(work, "rows"), file_name_suffix=".gz"))
    for split in ("train", "eval"):
      _ = (p | f"Read{split}" >> beam.io.ReadFromTFRecord(split_files(split))
           | f"AdId{split}" >> beam.Map(_ad_id, spec.ad)
           | f"Count{split}" >> beam.combiners.Count.PerElement()
           | f"Json{split}" >> beam.Map(json.dumps)
           | f"Write{split}" >> beam.io.WriteToText(os.path.join(work, f"counts_{split}")))

  ads, cats, vecs = _read_rows(tf.io.gfile.glob(os.path.join(work, "rows*.gz")))
  ads, vecs = list(ads), list(vecs)
  train_counts, eval_counts = _counts(os.path.join(work, "counts_train")), _counts(os.path.join(work, "counts_eval"))
  keep = select_rows(ads, train_counts, min_impressions, top_k)
  if not keep:
    raise ValueError(f"frequency control (min_impressions={min_impressions}, top_k={top_k}) left no ad in the table")
  out_dir = os.path.join(visual_table.uri, TABLE_DIR)
  tf.io.gfile.makedirs(out_dir)
  with tf.io.TFRecordWriter(os.path.join(out_dir, "rows-00000-of-00001.gz"), options="GZIP") as w:
    for i in keep:
      w.write(_row_example(ads[i], cats[i], vecs[i]))
  kept = {ads[i] for i in keep}
  total_eval = sum(eval_counts.values())
  coverage = sum(n for a, n in eval_counts.items() if a in kept) / max(total_eval, 1)
  stats = {"catalogue_ads": len(ads), "rows": len(keep), "dim": int(vecs[0].shape[0]),
           "dropped_by_frequency_control": len(ads) - len(keep), "min_impressions": min_impressions,
           "top_k": top_k, "eval_impressions": total_eval, "eval_coverage": round(coverage, 4),
           "table_bytes": int(sum(tf.io.gfile.stat(f).length for f in tf.io.gfile.glob(os.path.join(out_dir, "*"))))}
  tf.io.gfile.rmtree(work)

  tft_output = tft.TFTransformOutput(transform_graph.uri)
  end_to_end = keras.models.load_model(os.path.join(model_dir, END_TO_END_MODEL))
  kept_idx = np.array(keep)
  serving = build_serving_model(
      end_to_end, spec, DCNConfig.from_dict(meta["model"]), meta["id_space"],
      fingerprint([ads[i] for i in keep]).numpy(), np.stack(vecs)[kept_idx],
      lookup_ids(spec.category_feature, np.array(cats)[kept_idx], tft_output))
  export_dir = path_utils.serving_model_path(serving_model.uri)
  export_serving_model(serving, tft_output, export_dir, spec)
  stats["serving_model_bytes"] = int(sum(
      tf.io.gfile.stat(os.path.join(d, n)).length for d, _, ns in tf.io.gfile.walk(export_dir) for n in ns))
  with tf.io.gfile.GFile(os.path.join(visual_table.uri, STATS_FILE), "w") as f:
    json.dump(stats, f, indent=1)
  logging.info("visual table: %s", stats)
  return {"rows": len(keep), "eval_coverage": float(coverage)}
