"""The serving model of a finished pipeline run exported again by this checkout's code, from the
same trained weights and visual table: an export change measured (`bench_serving_ab.py`) and
checked (scores on the run's eval rows) without the noise of a second training.

  bin/env python scripts/reexport_serving.py --run /tmp/bench_out --out /tmp/reexport/cscnn_ctr/1 \
      [--transform-graph DIR] [--compare-with /tmp/bench_out/serving/cscnn_ctr/VERSION]

--transform-graph: the Transform output to put in front of the model (default: the run's own);
one from a run of this checkout on the same data gives this checkout's Transform graph (its
vocabularies must equal the run's: checked). --compare-with: a SavedModel whose serving_default
scores on every row of the run's eval split are compared with the new export's (max |a - b|).
"""

from __future__ import annotations

import argparse
import filecmp
import glob
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _one(pattern: str) -> str:
  found = sorted(glob.glob(pattern))
  if not found:
    raise FileNotFoundError(pattern)
  return found[-1]


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--run", required=True, help="the output folder of a `cscnn pipeline run` (visual variant)")
  ap.add_argument("--out", required=True, help="the new SavedModel's folder (e.g. BASE/MODEL/VERSION)")
  ap.add_argument("--transform-graph", help="a Transform output folder (default: the run's)")
  ap.add_argument("--compare-with", help="a SavedModel to compare the scores on the eval split with")
  args = ap.parse_args()
  import keras
  import tensorflow as tf
  import tensorflow_transform as tft

  import models.attention  # noqa: F401  (registers layers)
  import models.layers  # noqa: F401
  import models.visual  # noqa: F401
  from components.visual_embedding_gen import TABLE_DIR, _read_rows
  from models.dcn import DCNConfig
  from spec.features import FeatureSpec
  from tfx_pipeline.export import export_serving_model
  from tfx_pipeline.preprocessing import fingerprint, lookup_ids
  from tfx_pipeline.serving_model import build_serving_model
  from tfx_pipeline.trainer import END_TO_END_MODEL, TRAINING_META

  pipeline = os.path.join(args.run, "pipeline")
  model_dir = _one(os.path.join(pipeline, "VisualTrainer", "model", "*", "Format-Serving"))
  run_graph = _one(os.path.join(pipeline, "Transform", "transform_graph", "*"))
  graph = args.transform_graph or run_graph
  assets = [os.path.join(g, "transform_fn", "assets") for g in (run_graph, graph)]
  diff = filecmp.dircmp(*assets)
  if diff.left_only or diff.right_only or filecmp.cmpfiles(*assets, diff.common_files, shallow=False)[1]:
    raise SystemExit(f"the vocabularies of {graph} differ from the run's ({run_graph})")
  with open(os.path.join(model_dir, TRAINING_META)) as f:
    meta = json.load(f)
  spec = FeatureSpec.from_dict(meta["spec"])
  tft_output = tft.TFTransformOutput(graph)
  ads, cats, vecs = _read_rows(glob.glob(os.path.join(
      _one(os.path.join(pipeline, "VisualEmbeddingGen", "visual_table", "*")), TABLE_DIR, "*.gz")))
  serving = build_serving_model(
      keras.models.load_model(os.path.join(model_dir, END_TO_END_MODEL)), spec,
      DCNConfig.from_dict(meta["model"]), meta["id_space"], fingerprint(ads).numpy(), vecs,
      lookup_ids(spec.category_feature, cats, tft_output))
  export_serving_model(serving, tft_output, args.out, spec)
  print(f"exported {len(ads)} table rows, Transform graph {graph} -> {args.out}")
  if args.compare_with:
    files = glob.glob(os.path.join(_one(os.path.join(pipeline, "CsvExampleGen", "examples", "*")), "Split-eval", "*"))
    rows = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    scores = []
    for path in (args.compare_with, args.out):
      fn = tf.saved_model.load(path).signatures["serving_default"]
      scores.append(np.concatenate([fn(examples=tf.constant(rows[i:i + 1000]))["ctr"].numpy().ravel()
                                    for i in range(0, len(rows), 1000)]))
    print(f"eval rows {len(rows)}: max |score difference| {np.max(np.abs(scores[0] - scores[1])):.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
