"""A TFMA metric for the paper's per-user AUC (eq. 13):

    AUC = 1/|U| sum_u 1/|D_u| sum_{(i, j) in D_u} I(y_hat_ui > y_hat_uj)

with D_u the pairs of a clicked ad i and a not-clicked ad j of user u. Users with no click or
no non-click have no pairs and are left out of the mean; ties count as not ordered (the
indicator is strict, as in the paper).

Use it in a MetricsSpec whose ``query_key`` is the user feature, so that TFMA hands the metric
one user's examples at a time:

    tfma.MetricsSpec(query_key="user_id", metrics=[
        tfma.MetricConfig(class_name="PerUserAUC", module="tfx_pipeline.metrics")])
"""

from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2

PER_USER_AUC_NAME = "per_user_auc"


def user_auc(labels: np.ndarray, predictions: np.ndarray) -> Optional[float]:
  """Share of (clicked, not clicked) pairs of one user ordered correctly; None without pairs."""
  labels = np.asarray(labels).reshape(-1) > 0
  predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
  pos, neg = predictions[labels], predictions[~labels]
  if len(pos) == 0 or len(neg) == 0:
    return None
  return float((pos[:, None] > neg[None, :]).mean())


def mean_user_auc(users, labels, predictions) -> float:
  """Eq. 13 over the rows of many users: the mean of `user_auc` over the users with pairs (nan
  when none has any)."""
  _, group = np.unique(np.asarray(users).reshape(-1), return_inverse=True)
  order = np.argsort(group, kind="stable")
  cuts = np.flatnonzero(np.diff(group[order])) + 1
  per_user = [user_auc(y, p) for y, p in zip(np.split(np.asarray(labels).reshape(-1)[order], cuts),
                                             np.split(np.asarray(predictions).reshape(-1)[order], cuts))]
  values = [v for v in per_user if v is not None]
  return float(np.mean(values)) if values else float("nan")


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
  """Standard error of an AUC measured on `positives` and `negatives` (Hanley and McNeil 1982,
  eq. 2): how far the same model's AUC would move on another draw of as many rows. A slice with
  few positives (cold ads) has a wide one. NaN when either count is 0."""
  if positives < 1 or negatives < 1:
    return float("nan")
  a = float(auc)
  q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
  var = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
  return float(np.sqrt(max(var, 0.0)))


class PerUserAUC(metric_types.Metric):
  """Mean over users of the per-user AUC (eq. 13). Needs a query_key (the user id)."""

  def __init__(self, name: str = PER_USER_AUC_NAME):
    super().__init__(_per_user_auc, name=name)


metric_types.register_metric(PerUserAUC)


def _per_user_auc(name: str = PER_USER_AUC_NAME,
                  eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_names: Optional[List[str]] = None,
                  output_names: Optional[List[str]] = None,
                  example_weighted: bool = False,
                  query_key: str = "") -> metric_types.MetricComputations:
  if not query_key:
    raise ValueError("PerUserAUC needs the user feature as the MetricsSpec's query_key")
  computations = []
  for model_name in model_names or [""]:
    for output_name in output_names or [""]:
      key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                   example_weighted=example_weighted)
      computations.append(metric_types.MetricComputation(
          keys=[key], preprocessors=None, combiner=_PerUserAUCCombiner(key, eval_config)))
  return computations


class _PerUserAUCCombiner(beam.CombineFn):
  """Accumulates (sum of user AUCs, number of users with pairs)."""

  def __init__(self, key: metric_types.MetricKey, eval_config: Optional[config_pb2.EvalConfig]):
    self._key, self._eval_config = key, eval_config

  def create_accumulator(self):
    return [0.0, 0]

  def add_input(self, accumulator, element: metric_types.StandardMetricInputs):
    labels, predictions, _ = next(metric_util.to_label_prediction_example_weight(
        element, eval_config=self._eval_config, model_name=self._key.model_name,
        output_name=self._key.output_name, flatten=False, allow_none=True,
        require_single_example_weight=False))
    if labels is not None:
      auc = user_auc(labels, predictions)
      if auc is not None:
        accumulator[0] += auc
        accumulator[1] += 1
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[list]):
    total = [0.0, 0]
    for a in accumulators:
      total[0] += a[0]
      total[1] += a[1]
    return total

  def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, float]:
    return {self._key: accumulator[0] / accumulator[1] if accumulator[1] else float("nan")}
