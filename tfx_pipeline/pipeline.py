"""`create_pipeline(...)`: the one, pure definition of the TFX pipeline that every runner
(LocalDagRunner here, Kubeflow / Airflow elsewhere) calls.

CsvExampleGen -> StatisticsGen -> ImportSchemaGen (curated schema) -> ExampleValidator
-> AnomaliesGate -> Transform (Beam) -> Trainer (Keras) -> Resolver (latest blessed model)
-> Evaluator (TFMA AUC, overall and by category, gated) -> Pusher (filesystem, versioned)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from tensorflow_model_analysis.proto import config_pb2 as tfma
from tfx import v1 as tfx

from components.anomalies_gate import AnomaliesGate
from tfx_pipeline import configs
from tfx_pipeline import features as F
from tfx_pipeline.schema import SCHEMA_PATH


def eval_config(auc_floor: float = configs.AUC_FLOOR,
                auc_tolerance: float = configs.AUC_TOLERANCE) -> tfma.EvalConfig:
  """TFMA config: AUC and calibration figures, overall and per category; the overall AUC is
  gated by an absolute floor and by no regression beyond `auc_tolerance` vs the baseline."""
  gate = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={"value": auc_floor}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={"value": -auc_tolerance}))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=F.LABEL_KEY)],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[F.CATEGORY_KEY])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          tfma.MetricConfig(class_name="AUC", per_slice_thresholds=[
              tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=gate)]),
          tfma.MetricConfig(class_name="BinaryCrossentropy"),
          tfma.MetricConfig(class_name="MeanLabel"),
          tfma.MetricConfig(class_name="MeanPrediction"),
          tfma.MetricConfig(class_name="Calibration"),
      ])])


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_connection_config: Optional[Any] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    train_steps: int = configs.TRAIN_STEPS,
    eval_steps: int = configs.EVAL_STEPS,
    trainer_config: Optional[Dict[str, Any]] = None,
    auc_floor: float = configs.AUC_FLOOR,
    auc_tolerance: float = configs.AUC_TOLERANCE,
) -> tfx.dsl.Pipeline:
  """Builds the pipeline. Pure: no I/O, no global state.

  Args:
    pipeline_name: name in MLMD.
    pipeline_root: where artifacts are written.
    data_root: folder with ``impressions/*.csv`` (the sample data's layout).
    serving_model_dir: Pusher's base directory, ``.../serving/<model_name>``; each blessed
      model lands in a numeric version folder below it, as TF Serving expects.
    metadata_connection_config: MLMD connection (SQLite for local runs).
    beam_pipeline_args: passed to every Beam-based component (e.g. ``--runner=...``,
      ``--direct_running_mode=multi_processing``, ``--direct_num_workers=2``).
    train_steps, eval_steps: Trainer budget.
    trainer_config: ``custom_config`` of the Trainer: ``{"model": DCNConfig fields,
      "batch_size": int, "epochs": int, "seed": int}``.
    auc_floor, auc_tolerance: Evaluator gating.
  """
  example_gen = tfx.components.CsvExampleGen(
      input_base=data_root,
      input_config=tfx.proto.Input(splits=[
          tfx.proto.Input.Split(name="impressions", pattern=configs.IMPRESSIONS_PATTERN)]),
      output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
          tfx.proto.SplitConfig.Split(name="train", hash_buckets=configs.TRAIN_EVAL_BUCKETS[0]),
          tfx.proto.SplitConfig.Split(name="eval", hash_buckets=configs.TRAIN_EVAL_BUCKETS[1]),
      ])))
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=SCHEMA_PATH)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      preprocessing_fn="tfx_pipeline.preprocessing.preprocessing_fn")
  transform.add_upstream_node(anomalies_gate)

  trainer = tfx.components.Trainer(
      run_fn="tfx_pipeline.trainer.run_fn",
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
      custom_config=dict(trainer_config or {}))

  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id("latest_blessed_model_resolver")

  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs["examples"],
      model=trainer.outputs["model"],
      baseline_model=model_resolver.outputs["model"],
      eval_config=eval_config(auc_floor, auc_tolerance))

  pusher = tfx.components.Pusher(
      model=trainer.outputs["model"],
      model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  transform, trainer, model_resolver, evaluator, pusher],
      enable_cache=False,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )
