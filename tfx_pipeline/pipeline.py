"""`create_pipeline(...)`: the one, pure definition of the TFX pipeline that every runner
(LocalDagRunner here, Kubeflow / Airflow elsewhere) calls.

CsvExampleGen -> StatisticsGen -> ImportSchemaGen (curated schema) -> ExampleValidator
-> AnomaliesGate -> Transform (Beam) -> Trainer (Keras) -> Resolver (latest blessed model)
-> Evaluator (TFMA AUC, overall, by category and on cold ads, gated) -> Pusher (versioned)

BaselineGen (after Transform) fits the heuristic baselines (popularity, the user's category
affinity, item-to-item co-occurrence, their blend), exports each as a SavedModel with the
serving signatures and evaluates them with TFMA like a candidate; the Evaluator (GatedEvaluator)
blesses a model only if its per-user AUC beats the best of them by `baseline_margin`.

With images (visual_variant != "none"): AdCatalogGen (catalogue + images) feeds VisualTrainer
(the Trainer with the catalogue as an input); with ``trainer.visual.backbone_weights ==
"catalogue"`` CataloguePretrain pretrains the backbone on the catalogue between them and
VisualTrainer starts from its weights; VisualEmbeddingGen (Beam) then embeds the
catalogue with the trained CNN into the visual table and builds the CNN-free serving model,
which the Evaluator judges and the Pusher pushes.
"""

from __future__ import annotations

from typing import Any, List, Optional

from tfx import v1 as tfx

from components.ad_catalog import AdCatalogGen
from components.anomalies_gate import AnomaliesGate
from components.baseline_gen import BaselineGen
from components.catalog_pretrain import CataloguePretrain
from components.gated_evaluator import GatedEvaluator
from components.visual_embedding_gen import VisualEmbeddingGen
from components.visual_trainer import VisualTrainer
from spec.choices import CATALOGUE, MAX_BLANK_SHARE
from spec.features import COLD_BY, DEFAULT_SPEC, FeatureSpec
from tfx_pipeline import configs
from tfx_pipeline.code_version import CODE_VERSION_KEY, code_fingerprint
from tfx_pipeline.evaluation import eval_config
from tfx_pipeline.input_check import input_splits
from tfx_pipeline.preprocessing import cold_by as check_cold_by
from tfx_pipeline.schema import SCHEMA_PATH
from tfx_pipeline.settings import TrainerSettings


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_connection_config: Optional[Any] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    trainer: TrainerSettings = TrainerSettings(),
    spec: FeatureSpec = DEFAULT_SPEC,
    auc_floor: float = configs.AUC_FLOOR,
    auc_tolerance: float = configs.AUC_TOLERANCE,
    on_bad_image: str = "error",
    max_blank_share: float = MAX_BLANK_SHARE,
    table_min_impressions: int = 0,
    table_top_k: int = 0,
    schema_path: str = SCHEMA_PATH,
    enable_cache: bool = False,
    input_layout: Optional[str] = None,
    cold_by: str = COLD_BY[0],
    baseline_margin: float = configs.BASELINE_MARGIN,
    baseline_neighbors: int = configs.BASELINE_NEIGHBORS,
    pretrain_steps: int = configs.PRETRAIN_STEPS,
    code_version: Optional[str] = None,
) -> tfx.dsl.Pipeline:
  """Builds the pipeline. Pure: no global state, no writes; the only I/O is read-only: the
  detection of the input layout when `input_layout` is None (see below) and the fingerprint of
  the project's code when `code_version` is None.

  Args:
    pipeline_name: name in MLMD.
    pipeline_root: where artifacts are written.
    data_root: folder with ``impressions/*.csv`` (flat, the sample data's layout) or with
      ``impressions/train/*.csv`` and ``impressions/eval/*.csv`` (pre-split); a string path
      (local or any tf.io.gfile URL such as gs://) or a run-time parameter (Kubeflow).
    serving_model_dir: Pusher's base directory, ``.../serving/<model_name>``; each blessed
      model lands in a numeric version folder below it, as TF Serving expects.
    metadata_connection_config: MLMD connection (SQLite for local runs).
    beam_pipeline_args: passed to every Beam-based component (e.g. ``--runner=...``,
      ``--direct_running_mode=multi_processing``, ``--direct_num_workers=2``).
    trainer: the Trainer's settings (`TrainerSettings`: model, visual variant and CNN, budget,
      batch size, seed, ...). With ``trainer.visual.variant`` other than ``none`` (fixed /
      finetune / cbam / cscnn) the ad catalogue (``<data_root>/ads/ads.csv`` + images, resized to
      ``trainer.visual.image_size``) enters through AdCatalogGen, VisualTrainer trains end to
      end (from CataloguePretrain's weights when ``trainer.visual.backbone_weights`` is
      ``catalogue``; `pretrain_steps` batches of it), and VisualEmbeddingGen builds the visual
      table and the CNN-free serving model that the Evaluator judges and the Pusher pushes.
    spec: the data set's columns (`spec.FeatureSpec`); Transform, the Trainer, BaselineGen and
      the evaluation all follow it. A spec other than the default needs its own schema file
      (`schema_path`, written by `tfx_pipeline.schema.write_schema(path, spec)`).
    auc_floor, auc_tolerance: Evaluator gating.
    on_bad_image: ``error`` (default) or ``blank`` (grey fallback image) for bad catalogue images.
    max_blank_share: with ``blank``, AdCatalogGen stops if more of the ads than this share fall back.
    table_min_impressions, table_top_k: frequency control of the visual table (0 = off).
    schema_path: the curated schema file (where the project lives on the machine that runs
      ImportSchemaGen: this repo locally, the container's copy on Kubeflow).
    enable_cache: reuse component outputs of earlier runs with the same inputs, parameters and
      `code_version`. ImportSchemaGen is keyed on `schema_path`, not on the file's content: after
      editing a schema file in place, run once without the cache.
    input_layout: ``flat`` (CsvExampleGen hash-splits ``impressions/*.csv`` into train / eval
      4:1), ``pre-split`` (the ``train`` and ``eval`` folders are ExampleGen's input splits as
      they are, no hash split), or None: detected from the files under `data_root` by
      `input_check.input_splits` (tf.io.gfile for URLs), which raises InputDataError for a
      mixed or incomplete layout. When `data_root` is not a string (a Kubeflow run-time
      parameter, only known when the job runs) the layout cannot be detected and must be
      given: the Kubeflow runner passes it explicitly (default ``flat``).
    cold_by: what the cold-ad slice counts per ad in the training split, ``impressions``
      (every row; impression logs) or ``positives`` (label 1 only; implicit feedback with
      sampled negatives, such as MovieLens); see `spec.features.COLD_BY`.
    baseline_margin: the model's per-user AUC must be at least the best heuristic baseline's
      plus this to be blessed; negative: no baseline gate (the baselines are still reported).
    baseline_neighbors: ads kept per ad by the item-to-item co-occurrence baseline.
    pretrain_steps: CataloguePretrain's batches (with the visual init ``catalogue`` only); its
      seed is the trainer's.
    code_version: a parameter of every component that runs this project's code (in
      ``custom_config`` for Transform and the Trainer), so that a cached output is reused only
      by the same code; None: `code_version.code_fingerprint()` of this checkout.
  """
  cold_by = check_cold_by({"cold_by": cold_by})
  code_version = code_fingerprint() if code_version is None else code_version
  if spec != DEFAULT_SPEC and schema_path == SCHEMA_PATH:
    raise ValueError("this spec is not the project's default: give its own schema file as schema_path "
                     "(tfx_pipeline.schema.write_schema(path, spec))")
  visual_variant, image_size = trainer.visual.variant, trainer.visual.image_size
  if input_layout is None and not isinstance(data_root, str):
    raise ValueError("data_root is a run-time parameter: pass input_layout "
                     f"({' or '.join(configs.INPUT_LAYOUTS)}), it cannot be detected at compile time")
  splits = input_splits(data_root, input_layout)
  if len(splits) == 1:   # flat: ExampleGen hash-splits the one input split into train / eval
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name=configs.TRAIN_SPLIT, hash_buckets=configs.TRAIN_EVAL_BUCKETS[0]),
        tfx.proto.SplitConfig.Split(name=configs.EVAL_SPLIT, hash_buckets=configs.TRAIN_EVAL_BUCKETS[1]),
    ]))
  else:                  # pre-split: the input splits are the output splits
    output_config = None
  example_gen = tfx.components.CsvExampleGen(
      input_base=data_root,
      input_config=tfx.proto.Input(splits=[
          tfx.proto.Input.Split(name=name, pattern=pattern) for name, pattern in splits]),
      output_config=output_config)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"], code_version=code_version)

  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      preprocessing_fn="tfx_pipeline.preprocessing.preprocessing_fn",
      custom_config={"cold_by": cold_by, "spec": spec.to_dict(), CODE_VERSION_KEY: code_version})
  transform.add_upstream_node(anomalies_gate)

  trainer_args = dict(
      run_fn="tfx_pipeline.trainer.run_fn",
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(num_steps=trainer.train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=trainer.eval_steps),
      custom_config={"settings": trainer.to_dict(), "spec": spec.to_dict(), CODE_VERSION_KEY: code_version})
  visual_components = []
  if visual_variant == "none":
    trainer = tfx.components.Trainer(**trainer_args)
    serving_model = trainer.outputs["model"]
  else:
    catalog_gen = AdCatalogGen(data_root=data_root, catalog_path=configs.CATALOG_PATH,
                               image_size=image_size, on_bad_image=on_bad_image,
                               max_blank_share=max_blank_share, code_version=code_version)
    visual_components = [catalog_gen]
    pretrained = None
    if trainer.visual.backbone_weights == CATALOGUE:
      pretrain = CataloguePretrain(catalog=catalog_gen.outputs["examples"], backbone=trainer.visual.backbone,
                                   image_size=image_size, steps=pretrain_steps, seed=trainer.seed,
                                   code_version=code_version)
      pretrained = pretrain.outputs["model"]
      visual_components.append(pretrain)
    trainer = VisualTrainer(catalog=catalog_gen.outputs["examples"], pretrained=pretrained, **trainer_args)
    embedding_gen = VisualEmbeddingGen(
        model=trainer.outputs["model"], catalog=catalog_gen.outputs["examples"],
        examples=example_gen.outputs["examples"], transform_graph=transform.outputs["transform_graph"],
        min_impressions=table_min_impressions, top_k=table_top_k, code_version=code_version)
    serving_model = embedding_gen.outputs["serving_model"]
    visual_components.append(embedding_gen)

  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id("latest_blessed_model_resolver")

  baseline_gen = BaselineGen(
      transformed_examples=transform.outputs["transformed_examples"],
      examples=example_gen.outputs["examples"], transform_graph=transform.outputs["transform_graph"],
      spec=spec.to_json(), neighbors=baseline_neighbors, code_version=code_version)

  evaluator = GatedEvaluator(
      examples=example_gen.outputs["examples"],
      model=serving_model,
      baseline_model=model_resolver.outputs["model"],
      baselines=baseline_gen.outputs["baselines"],
      eval_config=eval_config(auc_floor, auc_tolerance, spec=spec),
      baseline_margin=baseline_margin, code_version=code_version).with_id("Evaluator")

  pusher = tfx.components.Pusher(
      model=serving_model,
      model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  transform, baseline_gen, trainer, *visual_components, model_resolver, evaluator,
                  pusher],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )
