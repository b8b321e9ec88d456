"""The TFMA configuration shared by the Evaluator (the candidate model, gated) and BaselineGen
(the heuristic baselines, evaluated the same way, not gated).

Metrics: example count, AUC, log loss, mean label / prediction, calibration and plots, and the
paper's per-user AUC (eq. 13, `tfx_pipeline.metrics.PerUserAUC`, grouped by the user), overall,
per category and on cold ads.

Gating of the candidate (overall slice):
  * AUC >= `auc_floor`;
  * AUC no more than `auc_tolerance` below the latest blessed model's (no regression);
  * per-user AUC >= the best baseline's per-user AUC + `baseline_margin` (`with_baseline_gate`,
    added at run time by `components.gated_evaluator` once the baselines are measured).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from tensorflow_model_analysis.proto import config_pb2 as tfma

from spec.features import COLD_KEY, DEFAULT_SPEC, FeatureSpec
from spec.names import OUTPUT_KEY, SERVING_DEFAULT, TRANSFORM_FEATURES
from tfx_pipeline import configs

PER_USER_AUC_CLASS = "PerUserAUC"
BASELINE_METRICS_FILE = "metrics.json"      # in BaselineGen's artifact: the baselines' metrics
BASELINE_GATE_FILE = "baseline_gate.json"   # in the Evaluator's: the per-user AUC bound and its source
METRICS_MODULE = "tfx_pipeline.metrics"


def _model_spec(label: str, name: str = "") -> tfma.ModelSpec:
  return tfma.ModelSpec(name=name, signature_name=SERVING_DEFAULT, label_key=label,
                        prediction_key=OUTPUT_KEY, preprocessing_function_names=[TRANSFORM_FEATURES])


def eval_config(auc_floor: Optional[float] = configs.AUC_FLOOR,
                auc_tolerance: Optional[float] = configs.AUC_TOLERANCE,
                model_names: Sequence[str] = (), plots: bool = True,
                spec: FeatureSpec = DEFAULT_SPEC) -> tfma.EvalConfig:
  """TFMA config: metrics overall, per category (the spec's category role) and on cold ads;
  the label and the per-user grouping come from `spec`.

  With `auc_floor` / `auc_tolerance` None there is no threshold (the baselines' evaluation).
  `model_names` gives one model spec per named model (multi-model evaluation); empty: the one
  unnamed candidate, as the Evaluator expects. `plots` False leaves out the calibration and
  confusion-matrix plots (the baselines are compared on their metrics only).
  """
  auc = tfma.MetricConfig(class_name="AUC")
  if auc_floor is not None or auc_tolerance is not None:
    gate = tfma.MetricThreshold()
    if auc_floor is not None:
      gate.value_threshold.lower_bound.value = auc_floor
    if auc_tolerance is not None:
      gate.change_threshold.direction = tfma.MetricDirection.HIGHER_IS_BETTER
      gate.change_threshold.absolute.value = -auc_tolerance
    auc.per_slice_thresholds.append(
        tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=gate))
  return tfma.EvalConfig(
      model_specs=[_model_spec(spec.label, n) for n in model_names] or [_model_spec(spec.label)],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[spec.category]),
                     tfma.SlicingSpec(feature_keys=[COLD_KEY])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          auc,
          tfma.MetricConfig(class_name="BinaryCrossentropy"),
          tfma.MetricConfig(class_name="MeanLabel"),
          tfma.MetricConfig(class_name="MeanPrediction"),
      ] + ([
          tfma.MetricConfig(class_name="Calibration"),
          tfma.MetricConfig(class_name="CalibrationPlot"),
          tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
      ] if plots else [])), tfma.MetricsSpec(query_key=spec.user, metrics=[
          tfma.MetricConfig(class_name=PER_USER_AUC_CLASS, module=METRICS_MODULE)])])


def with_baseline_gate(config: tfma.EvalConfig, lower_bound: float) -> tfma.EvalConfig:
  """A copy of `config` whose per-user AUC (overall slice) must be >= `lower_bound`."""
  out = tfma.EvalConfig()
  out.CopyFrom(config)
  found = False
  for spec in out.metrics_specs:
    for metric in spec.metrics:
      if metric.class_name == PER_USER_AUC_CLASS:
        threshold = tfma.MetricThreshold()
        threshold.value_threshold.lower_bound.value = lower_bound
        del metric.per_slice_thresholds[:]
        metric.per_slice_thresholds.append(
            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold))
        found = True
  if not found:
    raise ValueError(f"the eval config has no {PER_USER_AUC_CLASS} metric to gate against the baselines")
  return out


def slice_name(slice_key) -> str:
  """``overall``, ``category_id=3``, ``ad_is_cold=1``: a TFMA slice key as text."""
  parts = []
  for s in slice_key.single_slice_keys:
    kind = s.WhichOneof("kind")
    value = getattr(s, kind) if kind else ""
    parts.append(f"{s.column}={value.decode() if isinstance(value, bytes) else value}")
  return ",".join(parts) or "overall"


def load_metrics(eval_uri: str) -> Dict[str, Dict[str, Dict[str, float]]]:
  """``{model name: {slice: {metric: value}}}`` of a TFMA output (diffs left out; the
  Evaluator's candidate is the model named ``candidate`` or ``""``)."""
  import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
  out: Dict[str, Dict[str, Dict[str, float]]] = {}
  for m in tfma.load_metrics(eval_uri):
    name = slice_name(m.slice_key)
    for kv in m.metric_keys_and_values:
      if kv.key.is_diff or not kv.value.HasField("double_value"):
        continue
      out.setdefault(kv.key.model_name, {}).setdefault(name, {})[kv.key.name] = kv.value.double_value.value
  return out
