"""`cscnn pipeline run | compile | nodes | summary`: the TFX pipeline."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from cscnn.cli.common import load_spec, lock_output
from cscnn.cli.errors import UsageError


def _trainer_settings(args):
  from tfx_pipeline.settings import TrainerSettings
  model = {}
  if args.learning_rate is not None:
    model["learning_rate"] = args.learning_rate
  if args.embedding_dim is not None:
    model["embedding_dim"] = args.embedding_dim
  if args.ad_id_dropout is not None:
    model["ad_id_dropout"] = args.ad_id_dropout
  if args.target_attention:
    from tfx_pipeline import configs
    model["target_attention"] = [list(configs.TARGET_ATTENTION)]
  visual = {"variant": args.variant, "backbone": args.backbone, "image_size": args.image_size}
  for key in ("attention", "channel_prior", "spatial_prior", "attention_layers"):
    if getattr(args, key) is not None:
      visual[key] = getattr(args, key)
  if args.no_dedup:
    visual["dedup"] = False
  if args.spatial_norm:
    visual["spatial_norm"] = True
  weights = _backbone_weights(args.visual_init)
  if weights is not None:
    visual["backbone_weights"] = weights
  return TrainerSettings.from_dict({
      "model": model, "visual": visual, "train_steps": args.train_steps, "eval_steps": args.eval_steps,
      "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed,
      "impressions_per_ad": args.impressions_per_ad, "mixed_precision": args.mixed_precision,
      "distribution": args.distribution})


def _backbone_weights(init: str):
  """``--visual-init`` -> VisualConfig.backbone_weights: None (scratch), ``catalogue``,
  ``imagenet`` or the absolute path of a weights file."""
  from spec import choices
  if init == choices.SCRATCH:
    return None
  if init in choices.VISUAL_INITS:
    return init
  return os.path.abspath(init)


def _check_visual_init(args) -> None:
  """A UsageError saying why ``--visual-init`` cannot work with the variant and backbone, if it
  cannot."""
  from spec import choices
  init = args.visual_init
  if init == choices.SCRATCH:
    return
  if args.variant == "none":
    raise UsageError(f"--visual-init {init} starts the image encoder, and --variant none has none")
  if init == choices.CATALOGUE:
    if args.pretrain_steps < 1:
      raise UsageError(f"--pretrain-steps must be >= 1, got {args.pretrain_steps}")
    return
  from models.efficientnet_lite import imagenet_weights_path
  if init == choices.IMAGENET:
    if args.backbone != choices.IMAGENET_BACKBONE:
      raise UsageError(f"--visual-init imagenet exists for --backbone {choices.IMAGENET_BACKBONE} only, "
                       f"not {args.backbone}")
    try:
      imagenet_weights_path()
    except FileNotFoundError as e:
      raise UsageError(str(e)) from e
  elif not os.path.isfile(init):
    raise UsageError(f"--visual-init {init}: no such file (nor one of {', '.join(choices.VISUAL_INITS)})")


def _check_weights_file(visual) -> None:
  """Loads a ``--visual-init PATH`` file into the tower once, so that a wrong one stops before the
  pipeline starts, naming the layer and both shapes (`models.backbones.load_backbone_weights`)."""
  from spec import choices
  if visual.backbone_weights in (None, *choices.VISUAL_INITS):
    return
  from models.backbones import build_visual_tower
  try:
    build_visual_tower(visual.backbone_config(), visual.attention_config(), num_categories=2)
  except ValueError as e:
    raise UsageError(f"--visual-init {visual.backbone_weights}: {e}") from e


def _add_encoder(parser, trainer, weights_file: bool) -> None:
  """--backbone, --visual-init and --pretrain-steps, of `pipeline run`, `compile` and `nodes`;
  `weights_file`: whether --visual-init may name a local weights file."""
  from spec import choices
  from tfx_pipeline import configs
  parser.add_argument("--backbone", default=trainer.visual.backbone, choices=choices.BACKBONES,
                      help="CNN of the visual tower (light: small residual net for CPUs)")
  metavar = "|".join(choices.VISUAL_INITS) + ("|PATH" if weights_file else "")
  path = " or a Keras weights file of the same backbone" if weights_file else ""
  parser.add_argument("--visual-init", "--backbone-weights", dest="visual_init", default=choices.VISUAL_INIT,
                      metavar=metavar,
                      help="where the image encoder starts: scratch (random weights), catalogue (pretrained on the "
                           "ad catalogue's images, categories and title words by the CataloguePretrain component), "
                           f"imagenet (efficientnet_lite0: the ImageNet weights make setup converts){path}; "
                           "--variant fixed and transfer freeze it (from scratch they keep random weights: they "
                           "are meant with pretrained ones). --backbone-weights is another name for it")
  parser.add_argument("--pretrain-steps", type=int, default=configs.PRETRAIN_STEPS,
                      help="CataloguePretrain's batches (with --visual-init catalogue)")


def _add_cold_by(parser) -> None:
  """--cold-by, of `pipeline run` and `pipeline compile`."""
  from spec import features as F
  parser.add_argument("--cold-by", default=F.COLD_BY[0], choices=list(F.COLD_BY),
                      help=f"the cold-ad slice: ads with fewer than {F.COLD_THRESHOLD} training impressions "
                           "(rows), or positives (for implicit feedback with sampled negatives, e.g. MovieLens)")


def _add_run(pipe) -> None:
  from spec import choices
  from tfx_pipeline import configs
  from tfx_pipeline.settings import DISTRIBUTIONS, TrainerSettings   # imports Keras (models/)
  trainer = TrainerSettings()    # the trainer flags default to the Trainer's own defaults
  r = pipe.add_parser("run", help="run the TFX pipeline locally (LocalDagRunner, SQLite MLMD)")
  r.add_argument("--data", required=True,
                 help="folder with impressions/*.csv (hash-split 4:1), or pre-split "
                      "impressions/train/*.csv + impressions/eval/*.csv, and ads/ads.csv")
  r.add_argument("--output", required=True, help="output folder: pipeline/, metadata.sqlite, serving/")
  r.add_argument("--spec", default=None, metavar="FILE",
                 help="the data set's feature spec (YAML: columns, kinds, labels, roles; draft one with "
                      "`cscnn spec infer`); default: DATA/spec.yaml if the data folder has one, else the "
                      "project's own columns (spec/features.py)")
  r.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                 help="Beam pipeline argument, repeatable, e.g. --beam-arg=--direct_num_workers=2")
  r.add_argument("--train-steps", type=int, default=trainer.train_steps, help="Trainer budget: batches in all")
  r.add_argument("--eval-steps", type=int, default=trainer.eval_steps,
                 help="batches of the eval split for the Trainer's validation after each epoch "
                      "(the Evaluator always reads the whole split)")
  r.add_argument("--epochs", type=int, default=trainer.epochs,
                 help="the train steps are split into this many Keras epochs (validation and TensorBoard "
                      "logs after each)")
  r.add_argument("--batch-size", type=int, default=trainer.batch_size, help="impressions per training batch")
  r.add_argument("--learning-rate", type=float, default=None, help="Adam's learning rate (None: the model's 1e-3)")
  r.add_argument("--embedding-dim", type=int, default=None, help="d_e (paper: 4)")
  r.add_argument("--ad-id-dropout", type=float, default=None, metavar="RATE",
                 help="share of training rows whose ad id is read as an unknown ad's, so that content learns to "
                      "rank new ads (None: 0, the paper's DCN)")
  r.add_argument("--target-attention", action="store_true",
                 help="pool the user's clicked categories by target attention from the ad's category "
                      "(DIN's unit, models/layers.py) into x_nv")
  r.add_argument("--seed", type=int, default=trainer.seed, help="the trainer's seed: initial weights and shuffling")
  r.add_argument("--auc-floor", type=float, default=configs.AUC_FLOOR,
                 help="the Evaluator blesses (and the Pusher pushes) a model only with eval AUC >= this")
  r.add_argument("--auc-tolerance", type=float, default=configs.AUC_TOLERANCE,
                 help="nor a model whose eval AUC is more than this below the latest blessed model's")
  r.add_argument("--baseline-margin", type=float, default=configs.BASELINE_MARGIN,
                 help="nor a model whose per-user AUC is below the best heuristic baseline's (popularity, "
                      "category affinity, item co-occurrence, blend) plus this; negative: no baseline gate")
  r.add_argument("--variant", default=trainer.visual.variant,
                 choices=choices.VISUAL_VARIANTS,
                 help="visual model (paper Table 8; none = DCN without images); transfer: the frozen encoder's "
                      f"features through a learnt {trainer.visual.transfer_dim}-d embedding and a transfer layer "
                      f"of {trainer.visual.transfer_experts} shared experts gated by the ad's category (JD's "
                      "multimodal transfer), meant with --visual-init catalogue, imagenet or PATH")
  _add_encoder(r, trainer, weights_file=True)
  r.add_argument("--image-size", type=int, default=trainer.visual.image_size, help="S: images are resized to S x S")
  r.add_argument("--impressions-per-ad", type=int, default=trainer.impressions_per_ad,
                 help="G: up to G impressions of the same ad share a batch (paper: 25)")
  r.add_argument("--no-dedup", action="store_true", help="run the CNN on every impression")
  r.add_argument("--spatial-norm", action="store_true",
                 help="batch norm after the spatial gate's 7x7 conv, as the official CBAM code")
  r.add_argument("--attention", default=None,
                 choices=list(choices.ATTENTION_KINDS),
                 help="override the variant's attention kind (paper Table 5)")
  r.add_argument("--channel-prior", type=int, default=None, help=f"C' (None: {trainer.visual.channel_prior})")
  r.add_argument("--spatial-prior", type=int, default=None, help=f"H' = W' (None: {trainer.visual.spatial_prior})")
  r.add_argument("--attention-layers", type=int, default=None,
                 help="L': attention on the last L' conv layers (None: all)")
  r.add_argument("--mixed-precision", action="store_true", help="Keras mixed_float16 policy (for GPUs)")
  r.add_argument("--distribution", default=trainer.distribution, choices=list(DISTRIBUTIONS),
                 help="tf.distribute strategy of the Trainer (mirrored: every local GPU)")
  r.add_argument("--on-bad-image", default=choices.ON_BAD_IMAGE[0], choices=list(choices.ON_BAD_IMAGE),
                 help="a missing or undecodable catalogue image: stop naming it, or use a grey image")
  r.add_argument("--max-blank-images", type=float, default=choices.MAX_BLANK_SHARE, metavar="SHARE",
                 help="with --on-bad-image blank: stop if more than this share of the catalogue's ads "
                      "has no usable image (a wrong or invisible image folder, not a few bad files)")
  r.add_argument("--table-min-impressions", type=int, default=0,
                 help="visual table frequency control: keep ads with >= N training impressions")
  r.add_argument("--table-top-k", type=int, default=0, help="keep only the K most shown ads (0 = all)")
  _add_cold_by(r)
  r.add_argument("--cache", action="store_true",
                 help="reuse outputs of earlier runs in OUTPUT whose inputs did not change (TFX cache), "
                      "e.g. ExampleGen and Transform when only the trainer's options change; a change of "
                      "the project's code re-runs every component that runs it (its fingerprint is their "
                      "parameter); ImportSchemaGen does not see an in-place edit of the schema file")
  r.add_argument("--skip-input-check", action="store_true", help="skip the CSV pre-flight check")
  r.add_argument("--json", action="store_true", help="print the summary as JSON")
  r.add_argument("--only-node", default=None, metavar="COMPONENT_ID",
                 help="run one component (a TFX partial run on the latest run's artifacts in OUTPUT)")
  r.add_argument("-v", "--verbose", action="store_true", help="TFX/Beam INFO logs")
  r.set_defaults(func=_cmd_pipeline_run)


def _cmd_pipeline_run(args) -> int:
  from tfx_pipeline import configs
  from tfx_pipeline.input_check import InputDataError, check_impressions
  from tfx_pipeline.schema import SCHEMA_PATH, write_schema
  from spec.files import DATA_SPEC_FILE, column_location
  _check_visual_init(args)
  if args.spec is None and os.path.isfile(os.path.join(args.data, DATA_SPEC_FILE)):
    args.spec = os.path.join(args.data, DATA_SPEC_FILE)   # the data folder's own spec
    print(f"feature spec: {args.spec}", flush=True)
  spec = load_spec(args.spec)
  try:
    settings = _trainer_settings(args)
  except ValueError as e:
    raise UsageError(str(e)) from e
  _check_weights_file(settings.visual)
  if not args.skip_input_check:
    try:
      rows = check_impressions(args.data, spec, locate=None if args.spec is None else
                               lambda column: column_location(args.spec, spec, column))
    except InputDataError as e:
      raise UsageError(str(e)) from e
    print(f"input check: {rows} impression rows OK", flush=True)
  catalog = os.path.join(args.data, configs.CATALOG_PATH)
  if args.variant != "none" and not os.path.exists(catalog):
    raise UsageError(f"the visual variant {args.variant!r} needs the ad catalogue {catalog} "
                     "(ad_id,category_id,image); use --variant none to train the DCN without images")
  lock = lock_output(args.output)   # noqa: F841  (held until the process ends; nothing written before)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO if args.verbose else absl_logging.ERROR)
  if not args.verbose:
    import warnings
    warnings.filterwarnings("ignore")
  from tfx_pipeline import local_runner
  from tfx_pipeline.summary import format_summary, run_summary
  t0 = time.time()
  schema_path = SCHEMA_PATH
  if args.spec is not None:   # the spec's own schema, beside the run's artifacts
    schema_path = write_schema(os.path.join(os.path.abspath(args.output), "schema", "schema.pbtxt"), spec,
                               source=os.path.abspath(args.spec))
  print(f"running TFX pipeline (LocalDagRunner) on {args.data} -> {args.output}", flush=True)
  try:
    local_runner.run(args.data, args.output, beam_pipeline_args=args.beam_arg, only_node=args.only_node,
                     trainer=settings, spec=spec, schema_path=schema_path, auc_floor=args.auc_floor,
                     auc_tolerance=args.auc_tolerance, on_bad_image=args.on_bad_image,
                     max_blank_share=args.max_blank_images,
                     table_min_impressions=args.table_min_impressions, table_top_k=args.table_top_k,
                     enable_cache=args.cache, cold_by=args.cold_by, baseline_margin=args.baseline_margin,
                     pretrain_steps=args.pretrain_steps)
  except Exception as e:  # pylint: disable=broad-except
    print(f"cscnn pipeline run: the pipeline failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 1
  if args.only_node:
    print(f"component {args.only_node} finished in {time.time() - t0:.1f} s")
    return 0
  summary = run_summary(args.output)
  summary["wall_time_s"] = round(time.time() - t0, 1)
  print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
  if not args.json:
    print(f"wall time: {summary['wall_time_s']} s")
  return 0


def _variant_settings(args):
  """The trainer settings of `compile` and `nodes`: the variant and its image encoder."""
  from spec import choices
  from tfx_pipeline.settings import TrainerSettings
  if args.visual_init not in choices.VISUAL_INITS:
    raise UsageError(f"--visual-init {args.visual_init}: `pipeline {args.pipeline_command}` takes one of "
                     f"{', '.join(choices.VISUAL_INITS)}; a weights file of your own is for `pipeline run`")
  _check_visual_init(args)
  visual = {"variant": args.variant, "backbone": args.backbone}
  weights = _backbone_weights(args.visual_init)
  if weights is not None:
    visual["backbone_weights"] = weights
  try:
    return TrainerSettings.from_dict({"visual": visual})
  except ValueError as e:
    raise UsageError(str(e)) from e


def _add_compile(pipe) -> None:
  from spec import choices
  from tfx_pipeline.settings import TrainerSettings
  cp = pipe.add_parser("compile", help="compile the pipeline for Kubeflow Pipelines v2")
  cp.add_argument("--target", default="kubeflow", choices=["kubeflow"], help="orchestrator (Kubeflow Pipelines v2)")
  cp.add_argument("--image", required=True, help="container image built from the repo's Dockerfile")
  cp.add_argument("--output", required=True, help="pipeline.json")
  cp.add_argument("--pipeline-root", default="gs://YOUR_BUCKET/cscnn", help="where the run's artifacts go")
  cp.add_argument("--data-root", default="gs://YOUR_BUCKET/cscnn/data",
                  help="default of the data_root run-time parameter")
  cp.add_argument("--input-layout", default=choices.LAYOUT_FLAT, choices=list(choices.INPUT_LAYOUTS),
                  help="flat impressions/*.csv (hash-split) or pre-split impressions/train|eval/*.csv: "
                       "fixed at compile time, data_root being a run-time parameter")
  cp.add_argument("--variant", default=choices.VISUAL_VARIANT,
                  choices=choices.VISUAL_VARIANTS, help="visual model (paper Table 8; transfer: see `pipeline run`)")
  _add_encoder(cp, TrainerSettings(), weights_file=False)
  _add_cold_by(cp)
  cp.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                  help="Beam pipeline argument for the cluster, repeatable, e.g. --beam-arg=--runner=DataflowRunner")
  cp.set_defaults(func=_cmd_pipeline_compile)


def _cmd_pipeline_compile(args) -> int:
  from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
  compile_pipeline(args.image, args.output, pipeline_root=args.pipeline_root, data_root=args.data_root,
                   beam_pipeline_args=args.beam_arg, trainer=_variant_settings(args),
                   input_layout=args.input_layout, cold_by=args.cold_by, pretrain_steps=args.pretrain_steps)
  print(f"wrote the Kubeflow Pipelines v2 job spec to {args.output} (image {args.image})")
  return 0


def _add_nodes(pipe) -> None:
  from spec import choices
  from tfx_pipeline.settings import TrainerSettings
  nd = pipe.add_parser("nodes", help="the pipeline's components in order, with their upstream ones")
  nd.add_argument("--variant", default=choices.VISUAL_VARIANT,
                  choices=choices.VISUAL_VARIANTS, help="visual model (none has no visual components)")
  _add_encoder(nd, TrainerSettings(), weights_file=False)
  nd.add_argument("--json", action="store_true", help="print JSON")
  nd.set_defaults(func=_cmd_pipeline_nodes)


def _cmd_pipeline_nodes(args) -> int:
  from tfx_pipeline.local_runner import nodes
  out = nodes(trainer=_variant_settings(args))
  if args.json:
    print(json.dumps(out, indent=1))
  else:
    for n in out:
      print(f"{n['id']:<40} after {', '.join(n['upstream']) or '-'}")
  return 0


def _add_summary(pipe) -> None:
  sm = pipe.add_parser("summary", help="print the outcome of the latest run in OUTPUT")
  sm.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  sm.add_argument("--json", action="store_true", help="print JSON")
  sm.set_defaults(func=_cmd_pipeline_summary)


def _cmd_pipeline_summary(args) -> int:
  from tfx_pipeline.summary import format_summary, run_summary
  try:
    summary = run_summary(args.output)
  except FileNotFoundError as e:
    raise UsageError(str(e)) from e
  print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
  return 0


def register(sub) -> None:
  pipe = sub.add_parser("pipeline", help="the TFX pipeline").add_subparsers(dest="pipeline_command", required=True)
  _add_run(pipe)
  _add_compile(pipe)
  _add_nodes(pipe)
  _add_summary(pipe)
