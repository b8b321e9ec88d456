"""GatedEvaluator: TFX's Evaluator (TFMA, its executor, its blessing) that also refuses a model
which does not beat the heuristic baselines.

It takes BaselineGen's ``baselines`` artifact as one more input. Before TFMA runs, the executor
reads the best baseline's per-user AUC (eq. 13) from its ``metrics.json`` and adds a threshold
to the candidate's per-user AUC on the overall slice: it must be at least that value plus
``baseline_margin``. The blessing (and the validation result that says why) is then the stock
Evaluator's, so the Resolver, the Pusher and `pipeline summary` need nothing new. With a
negative ``baseline_margin`` the gate is off (the baselines are still measured and reported).

The threshold applies on every run, the first one included (a value threshold, not a change
threshold against the last blessed model).
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import json_utils, proto_utils

from components.baseline_gen import Baselines, read_metrics
from tfx_pipeline.code_version import CODE_VERSION_KEY
from tfx_pipeline.evaluation import BASELINE_GATE_FILE, with_baseline_gate

BASELINES_KEY = "baselines"
MARGIN_KEY = "baseline_margin"


class GatedEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {**standard_component_specs.EvaluatorSpec.PARAMETERS,
                MARGIN_KEY: ExecutionParameter(type=float),
                CODE_VERSION_KEY: ExecutionParameter(type=str, optional=True)}
  INPUTS = {**standard_component_specs.EvaluatorSpec.INPUTS,
            BASELINES_KEY: ChannelParameter(type=Baselines)}
  OUTPUTS = dict(standard_component_specs.EvaluatorSpec.OUTPUTS)


def gate(baseline_metrics: Dict[str, Any], margin: float) -> Dict[str, Any]:
  """The baseline gate: the best baseline, its per-user AUC, the margin and the bound (None
  when `margin` < 0 turns the gate off)."""
  best = float(baseline_metrics["best_per_user_auc"])
  return {"enabled": margin >= 0, "margin": margin, "best": baseline_metrics["best"],
          "best_per_user_auc": best, "bound": best + margin if margin >= 0 else None}


def gated_config(config: tfma.EvalConfig, baseline_metrics: Dict[str, Any], margin: float) -> tfma.EvalConfig:
  """`config` with the per-user AUC bound of `gate` (unchanged when the gate is off)."""
  g = gate(baseline_metrics, margin)
  return with_baseline_gate(config, g["bound"]) if g["enabled"] else config


class Executor(evaluator_executor.Executor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    baselines = artifact_utils.get_single_instance(input_dict[BASELINES_KEY])
    margin = float(exec_properties.get(MARGIN_KEY, 0.0))
    metrics = read_metrics(baselines.uri)
    config = proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY],
                                       tfma.EvalConfig())
    config = gated_config(config, metrics, margin)
    g = gate(metrics, margin)
    if g["enabled"]:
      logging.info("GatedEvaluator: per-user AUC must be >= %.4f (best baseline %s %.4f + margin %.4f)",
                   g["bound"], g["best"], g["best_per_user_auc"], margin)
    exec_properties = {k: v for k, v in exec_properties.items() if k not in (MARGIN_KEY, CODE_VERSION_KEY)}
    exec_properties[standard_component_specs.EVAL_CONFIG_KEY] = proto_utils.proto_to_json(config)
    inputs = {k: v for k, v in input_dict.items() if k != BASELINES_KEY}
    super().Do(inputs, output_dict, exec_properties)
    evaluation = artifact_utils.get_single_instance(output_dict[standard_component_specs.EVALUATION_KEY])
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, BASELINE_GATE_FILE), "w") as f:
      json.dump(g, f, indent=1)


class GatedEvaluator(base_component.BaseComponent):
  """Evaluator + ``baselines`` input, ``baseline_margin`` and ``code_version`` (a cache key
  only). Outputs ``evaluation`` and ``blessing`` like the Evaluator."""

  SPEC_CLASS = GatedEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
               baselines: types.BaseChannel, eval_config: tfma.EvalConfig,
               baseline_model: Optional[types.BaseChannel] = None, baseline_margin: float = 0.0,
               code_version: str = ""):
    spec = GatedEvaluatorSpec(
        examples=examples, model=model, baseline_model=baseline_model, baselines=baselines,
        eval_config=eval_config, baseline_margin=float(baseline_margin), code_version=code_version,
        example_splits=json_utils.dumps(None), fairness_indicator_thresholds=json_utils.dumps(None),
        evaluation=channel.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=channel.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
