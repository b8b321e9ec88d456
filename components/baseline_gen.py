"""BaselineGen: the heuristic rankers every trained model must beat, fitted, exported and
evaluated like a candidate model.

On Beam it reads the training split of Transform's output (user id, image key, category id,
label per row), collects the rows and fits the baselines of `models.baselines` (popularity, the
user's category affinity, item-to-item co-occurrence, and their blend). Each is exported with
the serving signatures of a trained model (`tfx_pipeline.export`: ``serving_default`` on
tf.Examples, ``serving_raw``, ``transform_features``), then TFMA evaluates all of them in one
multi-model run over ExampleGen's eval split with the Evaluator's own metrics and slices
(`tfx_pipeline.evaluation.eval_config`): overall, per category, on cold ads, per-user AUC.

Output artifact ``baselines`` (type ``cscnn.Baselines``):
  ``<kind>/``        a SavedModel per baseline (servable like any model)
  ``evaluation/``    the TFMA output of the multi-model run (one model name per baseline)
  ``metrics.json``   ``{"metrics": {kind: {slice: {metric: value}}}, "best": kind,
                     "best_per_user_auc": float, "tables": sizes, "blend_weights": {...}}``
The gated Evaluator (`components.gated_evaluator`) reads ``metrics.json``.
"""


import json
import logging
import os
import time
from typing import Dict, Iterable, List

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx

from spec.features import IMAGE_KEY, FeatureSpec, transformed_name
from tfx_pipeline.evaluation import BASELINE_METRICS_FILE as METRICS_FILE

EVALUATION_DIR = "evaluation"


class Baselines(tfx.dsl.Artifact):
  """Heuristic baseline models (SavedModels), their TFMA evaluation and metrics.json."""
  TYPE_NAME = "cscnn.Baselines"   # namespace.Name, as Kubeflow v2 requires


def _fit_columns(spec: FeatureSpec) -> tuple:
  """The transformed columns the baselines are fitted on: user id, image key, category id, label."""
  return (transformed_name(spec.user), IMAGE_KEY, transformed_name(spec.category), transformed_name(spec.label))


def _columns(serialized: bytes, columns: tuple) -> tuple:
  feats = tf.train.Example.FromString(serialized).features.feature
  return tuple(feats[c].int64_list.value[0] for c in columns)


class _Stack(beam.CombineFn):
  """Rows -> one int64 array [N, 4] (the training split's columns for the fit)."""

  def create_accumulator(self):
    return []

  def add_input(self, acc, row):
    acc.append(row)
    return acc

  def add_inputs(self, acc, rows):
    acc.extend(rows)
    return acc

  def merge_accumulators(self, accs: Iterable[list]):
    out = []
    for a in accs:
      out.extend(a)
    return out

  def extract_output(self, acc):
    return np.asarray(acc, np.int64).reshape(-1, 4)


def _save_array(path: str):
  def save(array: np.ndarray):
    with tf.io.gfile.GFile(path, "wb") as f:
      np.save(f, array)
  return save


def read_metrics(baselines_uri: str) -> Dict:
  """The ``metrics.json`` of a Baselines artifact."""
  path = os.path.join(baselines_uri, METRICS_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} is missing: the BaselineGen run that made {baselines_uri} did not finish")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


@tfx.dsl.components.component(use_beam=True)
def BaselineGen(
    transformed_examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    transform_graph: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.TransformGraph],
    baselines: tfx.dsl.components.OutputArtifact[Baselines],
    spec: tfx.dsl.components.Parameter[str],
    neighbors: tfx.dsl.components.Parameter[int] = 50,
    code_version: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> tfx.dsl.components.OutputDict(best_per_user_auc=float):
  """Fits, exports and evaluates the heuristic baselines (see the module docstring).

  `spec`: the data set's `FeatureSpec` as JSON (its roles say which columns are the user, the
  ad and the category; its first label is the click)."""
  import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
  import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
  from models.baselines import KINDS, BLEND_FEATURES, build_baseline_model, fit_baselines  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.evaluation import eval_config, load_metrics  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.export import export_serving_model  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.metrics import PER_USER_AUC_NAME  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.preprocessing import id_space  # pylint: disable=import-outside-toplevel

  feature_spec = FeatureSpec.from_json(spec)
  t0 = time.time()
  rows_path = os.path.join(baselines.uri, "train_rows.npy")
  train_files = os.path.join(transformed_examples.uri, "Split-train", "*")
  with beam_pipeline as p:
    _ = (p | "ReadTrain" >> beam.io.ReadFromTFRecord(train_files)
         | "Columns" >> beam.Map(_columns, _fit_columns(feature_spec))
         | "Stack" >> beam.CombineGlobally(_Stack())
         | "Save" >> beam.Map(_save_array(rows_path)))
  with tf.io.gfile.GFile(rows_path, "rb") as f:
    rows = np.load(f)
  tf.io.gfile.remove(rows_path)
  logging.info("BaselineGen: read %d training rows in %.1f s", len(rows), time.time() - t0)

  tft_output = tft.TFTransformOutput(transform_graph.uri)
  tables = fit_baselines(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3],
                         num_users=id_space(feature_spec.user_feature, tft_output),
                         num_categories=id_space(feature_spec.category_feature, tft_output),
                         neighbors=neighbors)
  logging.info("BaselineGen: fitted %s in %.1f s", tables.shape, time.time() - t0)
  for kind in KINDS:
    export_serving_model(build_baseline_model(kind, tables, feature_spec), tft_output,
                         os.path.join(baselines.uri, kind), feature_spec)

  config = eval_config(auc_floor=None, auc_tolerance=None, model_names=KINDS, plots=False, spec=feature_spec)
  shared = [tfma.default_eval_shared_model(os.path.join(baselines.uri, kind), model_name=kind,
                                           eval_config=config) for kind in KINDS]
  eval_dir = os.path.join(baselines.uri, EVALUATION_DIR)
  eval_files = os.path.join(examples.uri, "Split-eval", "*")
  tfma.run_model_analysis(eval_shared_model=shared, eval_config=config, data_location=eval_files,
                          output_path=eval_dir, pipeline_options=beam_pipeline.options)
  metrics = load_metrics(eval_dir)
  per_user = {k: metrics.get(k, {}).get("overall", {}).get(PER_USER_AUC_NAME, float("nan")) for k in KINDS}
  best = max((k for k in KINDS if np.isfinite(per_user[k])), key=lambda k: per_user[k], default=None)
  if best is None:
    raise ValueError("no baseline has a per-user AUC on the eval split (no user with both a positive and "
                     "a negative row?)")
  out = {"metrics": metrics, "best": best, "best_per_user_auc": per_user[best],
         "per_user_auc": per_user, "tables": tables.shape,
         "blend_weights": dict(zip(BLEND_FEATURES, tables.blend_weights.tolist())),
         "seconds": round(time.time() - t0, 1)}
  with tf.io.gfile.GFile(os.path.join(baselines.uri, METRICS_FILE), "w") as f:
    json.dump(out, f, indent=1)
  logging.info("BaselineGen: per-user AUC %s; best %s (%.1f s)", per_user, best, time.time() - t0)
  return {"best_per_user_auc": float(per_user[best])}


__all__: List[str] = ["BaselineGen", "Baselines", "read_metrics", "METRICS_FILE"]
