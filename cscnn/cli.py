"""The `cscnn` command line (run it through `bin/cscnn`, which enters the environment).

  cscnn data sample --out DIR [--impressions N] [--ads M] [--categories K] [--image-size S] [--overlays N] [--category-backgrounds] [--seed X]
  cscnn data movielens --source DIR --out DIR [--users N] [--negatives K] [--eval-negatives M] [--seed S]
  cscnn pipeline run --data DIR --output OUT [--beam-arg ARG ...] [--train-steps N] ...
  cscnn pipeline summary --output OUT [--json]
  cscnn schema [--write | --check]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _cmd_data_sample(args) -> int:
  from cscnn.data.sample import SampleConfig, generate
  try:
    cfg = SampleConfig(impressions=args.impressions, ads=args.ads, categories=args.categories,
                       users=args.users, image_size=args.image_size, seed=args.seed,
                       visual_strength=args.visual_strength, overlays=args.overlays,
                       category_backgrounds=args.category_backgrounds)
  except ValueError as e:
    print(f"cscnn data sample: {e}", file=sys.stderr)
    return 2
  generate(cfg, args.out)
  return 0


def _cmd_data_movielens(args) -> int:
  from cscnn.data.movielens import MovieLensConfig, SourceError, convert
  try:
    cfg = MovieLensConfig(users=args.users, negatives=args.negatives,
                          eval_negatives=args.eval_negatives, seed=args.seed)
    convert(args.source, args.out, cfg, log=lambda m: print(m, flush=True))
  except (ValueError, OSError) as e:   # SourceError is a ValueError
    print(f"cscnn data movielens: {e}", file=sys.stderr)
    return 2
  print(f"next: bin/cscnn pipeline run --data {args.out} --output OUT --on-bad-image blank --cold-by positives")
  return 0


def _load_spec(path):
  """The feature spec of `--spec PATH` (None: the project's default spec); SpecFileError names
  the file, line and key."""
  from spec.features import DEFAULT_SPEC
  from spec.files import load
  return DEFAULT_SPEC if path is None else load(path)


def _trainer_settings(args):
  from tfx_pipeline.settings import TrainerSettings
  model = {}
  if args.learning_rate is not None:
    model["learning_rate"] = args.learning_rate
  if args.embedding_dim is not None:
    model["embedding_dim"] = args.embedding_dim
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
  if args.backbone_weights is not None:
    visual["backbone_weights"] = (args.backbone_weights if args.backbone_weights == "imagenet"
                                  else os.path.abspath(args.backbone_weights))
  return TrainerSettings.from_dict({
      "model": model, "visual": visual, "train_steps": args.train_steps, "eval_steps": args.eval_steps,
      "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed,
      "impressions_per_ad": args.impressions_per_ad, "mixed_precision": args.mixed_precision,
      "distribution": args.distribution})


def _check_backbone_weights(args) -> str:
  """Why ``--backbone-weights`` cannot work with ``--backbone`` ('' when it can)."""
  if args.backbone_weights is None:
    return ""
  from models.efficientnet_lite import NAME, imagenet_weights_path
  if args.backbone_weights == "imagenet":
    if args.backbone != NAME:
      return f"--backbone-weights imagenet exists for --backbone {NAME} only, not {args.backbone}"
    try:
      imagenet_weights_path()
    except FileNotFoundError as e:
      return str(e)
  elif not os.path.isfile(args.backbone_weights):
    return f"--backbone-weights {args.backbone_weights}: no such file"
  return ""


def _cmd_pipeline_run(args) -> int:
  from tfx_pipeline import configs
  from tfx_pipeline.input_check import InputDataError, check_impressions
  from spec.files import DATA_SPEC_FILE, SpecFileError
  from tfx_pipeline.schema import SCHEMA_PATH, write_schema
  problem = _check_backbone_weights(args)
  if problem:
    print(f"cscnn pipeline run: {problem}", file=sys.stderr)
    return 2
  if args.spec is None and os.path.isfile(os.path.join(args.data, DATA_SPEC_FILE)):
    args.spec = os.path.join(args.data, DATA_SPEC_FILE)   # the data folder's own spec
    print(f"feature spec: {args.spec}", flush=True)
  try:
    spec = _load_spec(args.spec)
    settings = _trainer_settings(args)
  except (SpecFileError, ValueError) as e:
    print(f"cscnn pipeline run: {e}", file=sys.stderr)
    return 2
  if args.spec is not None:
    from spec.files import column_location
    from tfx_pipeline.input_check import missing_columns
    try:
      missing = missing_columns(args.data, spec)
    except InputDataError:
      missing = {}   # the input check below names the layout problem
    if missing:
      path, columns = next(iter(missing.items()))
      print("\n".join(f"cscnn pipeline run: {column_location(args.spec, spec, c)}: column {c!r} is not in {path}"
                      for c in columns), file=sys.stderr)
      return 2
  if not args.skip_input_check:
    try:
      rows = check_impressions(args.data, spec)
    except InputDataError as e:
      print(f"cscnn pipeline run: {e}", file=sys.stderr)
      return 2
    print(f"input check: {rows} impression rows OK", flush=True)
  catalog = os.path.join(args.data, configs.CATALOG_PATH)
  if args.variant != "none" and not os.path.exists(catalog):
    print(f"cscnn pipeline run: the visual variant {args.variant!r} needs the ad catalogue {catalog} "
          "(ad_id,category_id,image); use --variant none to train the DCN without images", file=sys.stderr)
    return 2
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
                     table_min_impressions=args.table_min_impressions, table_top_k=args.table_top_k,
                     enable_cache=args.cache, cold_by=args.cold_by, baseline_margin=args.baseline_margin)
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


def _variant_settings(variant: str):
  from models.visual import VisualConfig
  from tfx_pipeline.settings import TrainerSettings
  return TrainerSettings(visual=VisualConfig(variant=variant))


def _cmd_pipeline_compile(args) -> int:
  from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
  compile_pipeline(args.image, args.output, pipeline_root=args.pipeline_root, data_root=args.data_root,
                   beam_pipeline_args=args.beam_arg, trainer=_variant_settings(args.variant),
                   input_layout=args.input_layout, cold_by=args.cold_by)
  print(f"wrote the Kubeflow Pipelines v2 job spec to {args.output} (image {args.image})")
  return 0


def _cmd_pipeline_nodes(args) -> int:
  from tfx_pipeline.local_runner import nodes
  out = nodes(trainer=_variant_settings(args.variant))
  if args.json:
    print(json.dumps(out, indent=1))
  else:
    for n in out:
      print(f"{n['id']:<40} after {', '.join(n['upstream']) or '-'}")
  return 0


def _cmd_pipeline_summary(args) -> int:
  from tfx_pipeline.summary import format_summary, run_summary
  try:
    summary = run_summary(args.output)
  except FileNotFoundError as e:
    print(f"cscnn pipeline summary: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
  return 0


def _cmd_schema(args) -> int:
  from spec.files import SpecFileError
  from tfx_pipeline.schema import SCHEMA_PATH, schema_text, write_schema
  if args.spec is not None:
    try:
      spec = _load_spec(args.spec)
    except SpecFileError as e:
      print(f"cscnn schema: {e}", file=sys.stderr)
      return 2
    if args.write or args.check:
      print("cscnn schema: --write and --check are for the project's own schema; with --spec the "
            "schema is printed (pipeline run --spec writes it beside the run)", file=sys.stderr)
      return 2
    print(schema_text(spec, os.path.abspath(args.spec)), end="")
    return 0
  if args.write:
    print(f"wrote {write_schema()}")
    return 0
  if args.check:
    with open(SCHEMA_PATH) as f:
      same = f.read() == schema_text()
    print("schema is up to date" if same else f"{SCHEMA_PATH} is stale: run `cscnn schema --write`")
    return 0 if same else 1
  print(schema_text(), end="")
  return 0


def _cmd_spec_infer(args) -> int:
  from cscnn.spec_infer import InferError, write_inferred_spec
  if os.path.exists(args.out) and not args.force:
    print(f"cscnn spec infer: {args.out} exists (--force overwrites it)", file=sys.stderr)
    return 2
  try:
    spec, notes = write_inferred_spec(args.data, args.out)
  except (InferError, OSError) as e:
    print(f"cscnn spec infer: {e}", file=sys.stderr)
    return 2
  print("\n".join(notes[1:]))
  print(f"wrote {args.out}: {len(spec.features)} features, labels {', '.join(spec.labels)}; edit it, then "
        f"bin/cscnn pipeline run --data {args.data} --spec {args.out} --output OUT")
  return 0


def _cmd_spec_show(args) -> int:
  from spec.files import SpecFileError, dumps
  try:
    spec = _load_spec(args.spec)
  except SpecFileError as e:
    print(f"cscnn spec show: {e}", file=sys.stderr)
    return 2
  print(dumps(spec, header="the project's default spec (spec/features.py)" if args.spec is None else ""), end="")
  return 0


def _cmd_models_summary(args) -> int:
  from models.attention import AttentionConfig
  from models.backbones import BackboneConfig
  from models.cost import cost_report, paper_formula
  try:
    backbone = BackboneConfig(args.backbone, args.image_size, args.output_dim, args.placement,
                              args.attention_layers)
    attention = AttentionConfig(args.attention, args.channel_prior, args.spatial_prior, args.reduction)
  except ValueError as e:
    print(f"cscnn models summary: {e}", file=sys.stderr)
    return 2
  report = cost_report(backbone, attention, args.categories)
  if args.json:
    print(json.dumps(report))
    return 0
  print(f"visual tower: {args.backbone}, attention {args.attention} ({args.placement}), "
        f"{args.image_size}x{args.image_size}, |K|={args.categories}, C'={args.channel_prior}, "
        f"H'=W'={args.spatial_prior}, r={args.reduction}, x_v in R^{args.output_dim}")
  print(f"params: {report['params']:,} ({report['params'] / 1e6:.4f} M)")
  print(f"FLOPs (multiply-accumulates): {report['flops']:,} ({report['flops'] / 1e9:.4f} G)")
  print(f"attention modules: {report['attention_modules']}, their params: {report['attention_params']:,}")
  if report["modules"]:
    print(f"  {'C':>5} {'channel':>10} {'spatial':>10}" + ("   paper 3.3.4 formula (channel, spatial)" if attention.category_prior else ""))
    for m in report["modules"]:
      line = f"  {m['channels']:>5} {m['channel']:>10,} {m['spatial']:>10,}"
      if attention.category_prior:
        f = paper_formula(m["channels"], args.categories, args.channel_prior, args.spatial_prior, args.reduction)
        line += f"   {f['channel']:>10,} {f['spatial'] if attention.spatial else 0:>10,}"
      print(line)
  return 0


def _positive_ints(text: str) -> tuple:
  """argparse type of a comma-separated list of whole numbers >= 1 ("1,5,25")."""
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
  return values


def _cmd_bench_training(args) -> int:
  import keras
  from cscnn.bench import bench_training, format_training
  keras.utils.set_random_seed(0)
  try:
    out = bench_training(backbones=args.backbones.split(","), attentions=args.attention.split(","),
                         per_ad=args.per_ad, batch=args.batch,
                         image_size=args.image_size, rounds=args.rounds,
                         min_measure_s=args.measure_seconds,
                         log=lambda *a, **k: None if args.quiet else print(*a, **k))
  except ValueError as e:
    print(f"cscnn bench training: {e}", file=sys.stderr)
    return 2
  print(json.dumps(out) if args.json else format_training(out))
  return 0


def _cmd_serve(args) -> int:
  import signal
  import threading
  from serving.model_manager import BatchingConfig, ModelConfig, ModelManager, parse_model_config_file
  from serving.server import ModelServer, RequestLimits
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  if args.intra_op_threads or args.inter_op_threads:     # before TensorFlow starts its thread pools
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
  if args.model_config_file:
    models = parse_model_config_file(args.model_config_file)
  elif args.model_base_path and args.model_name:
    models = [ModelConfig(args.model_name, os.path.abspath(args.model_base_path))]
  else:
    print("cscnn serve: give --model-base-path and --model-name, or --model-config-file", file=sys.stderr)
    return 2
  manager = ModelManager(models, poll_interval=args.file_system_poll_wait_seconds,
                         batching=BatchingConfig(args.enable_batching, args.max_batch_size,
                                                 args.batch_timeout_micros / 1e6))
  server = ModelServer(manager, args.port, args.rest_port, host=args.host,
                       limits=RequestLimits(args.max_request_rows, args.max_request_bytes)).start()
  print(f"serving {[m.name for m in models]} on gRPC {args.host}:{server.port}"
        + (f", REST {args.host}:{server.rest_port}" if args.rest_port is not None else ""), flush=True)
  done = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: done.set())
  signal.signal(signal.SIGINT, lambda *_: done.set())
  done.wait()
  server.stop()
  return 0


def _cmd_predict(args) -> int:
  from serving.client import CandidateError, CtrClient, read_candidates
  try:
    candidates = read_candidates(args.input)
    client = CtrClient(args.server, timeout=args.timeout)
    out = client.predict(args.model, candidates, args.signature, args.version)
  except (CandidateError, OSError) as e:
    print(f"cscnn predict: {e}", file=sys.stderr)
    return 2
  except Exception as e:  # grpc.RpcError and friends  # pylint: disable=broad-except
    code = getattr(e, "code", lambda: None)()
    details = getattr(e, "details", lambda: str(e))()
    print(f"cscnn predict: {code.name if code else type(e).__name__}: {details}", file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps({k: v.tolist() for k, v in out.items()}))
    return 0
  fallback = out.get("visual_fallback")
  print(f"model version {int(out['model_version'][0])}")
  for i, p in enumerate(out["ctr"]):
    c = candidates[i]
    extra = "  (visual fallback)" if fallback is not None and fallback[i] else ""
    print(f"{i:>4}  ad {c.get('ad_id', '?')!s:<12} user {c.get('user_id', '?')!s:<10} ctr {p:.4f}{extra}")
  return 0


def _cmd_bench_serving(args) -> int:
  from cscnn.bench import bench_serving, format_serving
  sizes = args.sizes
  try:
    out = bench_serving(args.model_base_path, args.model_name, args.candidates, sizes=sizes,
                        requests=args.requests, repeats=args.repeats,
                        concurrency=args.concurrency, profile=args.profile,
                        log=lambda *a, **k: None if args.quiet else print(*a, **k))
  except (FileNotFoundError, RuntimeError) as e:
    print(f"cscnn bench serving: {e}", file=sys.stderr)
    return 2
  print(json.dumps(out) if args.json else format_serving(out, sizes))
  return 0


def _cmd_report(args) -> int:
  from cscnn.report import render_report
  try:
    path = render_report(args.output, args.report_dir)
  except FileNotFoundError as e:
    print(f"cscnn report: {e}", file=sys.stderr)
    return 2
  print(f"wrote {path}")
  return 0


def _cmd_tensorboard(args) -> int:
  import glob
  runs = sorted(glob.glob(os.path.join(args.output, "pipeline", "*Trainer", "model_run", "*")))
  if not runs:
    print(f"cscnn tensorboard: no Trainer logs under {args.output}/pipeline", file=sys.stderr)
    return 2
  logdir = ",".join(f"run{os.path.basename(r)}:{r}" for r in runs)
  cmd = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", logdir, "--host", args.host,
         "--port", str(args.port)]
  print(f"TensorBoard on http://{args.host}:{args.port} over {len(runs)} training run(s)", flush=True)
  os.execv(sys.executable, cmd)


def _cmd_experiment_ablation(args) -> int:
  from cscnn.experiment import run_ablation, table_paths
  from spec import choices
  run_args = ["--train-steps", str(args.train_steps), "--backbone", args.backbone, *args.run_arg]
  if args.variants is not None and args.grid != "variants":
    print(f"cscnn experiment ablation: --variants is for the variants grid; the {args.grid} grid "
          "has its own cells", file=sys.stderr)
    return 2
  variants = args.variants.split(",") if args.variants else choices.VISUAL_VARIANTS
  try:
    run_ablation(args.data, args.output, grid=args.grid, variants=variants,
                 seeds=args.seeds, run_args=run_args, log=lambda m: print(m, flush=True))
  except (ValueError, RuntimeError) as e:
    print(f"cscnn experiment ablation: {e}", file=sys.stderr)
    return 1
  paths = table_paths(args.output, args.grid)
  with open(paths["markdown"]) as f:
    print(f.read())
  steps = f", gains between configurations {paths['steps_csv']}" if os.path.exists(paths["steps_csv"]) else ""
  print(f"table: {paths['markdown']}, {paths['csv']}{steps}; plot: {paths['plot']}")
  return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Appends "(default: X)" to an option's help, except where there is nothing to show (None,
  off flags, empty lists): those help texts say what happens without the option."""

  def _get_help_string(self, action):
    if action.default is None or action.default is False or action.default == []:
      return action.help
    return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
  """Every (sub)command's --help shows each option's default (sub-parsers are of the parent's class)."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", _HelpFormatter)
    super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
  from cscnn.experiment import GRIDS
  from models.defaults import IMAGE_SIZE
  from spec import choices
  from spec import features as F
  from tfx_pipeline import configs
  cold_by = dict(default=F.COLD_BY[0], choices=list(F.COLD_BY),
                 help=f"the cold-ad slice: ads with fewer than {F.COLD_THRESHOLD} training impressions (rows), or "
                      "positives (for implicit feedback with sampled negatives, e.g. MovieLens)")
  p = _Parser(prog="cscnn", description="Visual-aware CTR prediction (CSCNN + DCN) on TFX.")
  sub = p.add_subparsers(dest="command", required=True)

  data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
  s = data.add_parser("sample", help="generate the synthetic sample data set (see cscnn/data/sample.py)")
  s.add_argument("--out", required=True, help="output folder")
  from cscnn.data.sample import SampleConfig  # pylint: disable=import-outside-toplevel
  defaults = SampleConfig()
  s.add_argument("--impressions", type=int, default=defaults.impressions, help="rows of the impression log")
  s.add_argument("--ads", type=int, default=defaults.ads, help="ads in the catalogue, one image each")
  s.add_argument("--categories", type=int, default=defaults.categories,
                 help="K: ad categories, each with its own key quadrant and preferred colour")
  s.add_argument("--users", type=int, default=defaults.users, help="distinct users")
  s.add_argument("--image-size", type=int, default=defaults.image_size, help="S: images are S x S RGB PNGs")
  s.add_argument("--visual-strength", type=float, default=defaults.visual_strength,
                 help="weight of the category-specific visual effect on the click logit")
  s.add_argument("--overlays", type=int, default=defaults.overlays,
                 help="small palette-coloured squares drawn over each image (price tags, stickers, "
                      "text); category-independent clutter with no click signal")
  s.add_argument("--category-backgrounds", action="store_true",
                 help="each category's images share a background brightness (its studio look), so "
                      "an image shows its category; the click effect is unchanged")
  s.add_argument("--seed", type=int, default=defaults.seed, help="the same seed gives the same bytes")
  s.set_defaults(func=_cmd_data_sample)
  from cscnn.data.movielens import DEFAULT_USERS
  ml = data.add_parser("movielens", help="convert MovieLens-1M + posters into the pre-split input "
                                         "format (see cscnn/data/movielens.py)")
  ml.add_argument("--source", required=True,
                  help="the MovieLens-1M posters folder (ratings.csv, movies.dat, users.dat, posters/)")
  ml.add_argument("--out", required=True, help="output folder, outside the repo (licence)")
  ml.add_argument("--users", type=int, default=DEFAULT_USERS, help="random subset of users; 0 = all 6,040")
  ml.add_argument("--negatives", type=int, default=1, help="K: sampled negatives per training positive")
  ml.add_argument("--eval-negatives", type=int, default=20,
                  help="M: sampled negatives per held-out test / validation positive")
  ml.add_argument("--seed", type=int, default=0, help="user subset and negative sampling; the same seed gives the same bytes")
  ml.set_defaults(func=_cmd_data_movielens)

  pipe = sub.add_parser("pipeline", help="the TFX pipeline").add_subparsers(dest="pipeline_command", required=True)
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
  r.add_argument("--train-steps", type=int, default=configs.TRAIN_STEPS, help="Trainer budget: batches in all")
  r.add_argument("--eval-steps", type=int, default=configs.EVAL_STEPS,
                 help="batches of the eval split for the Trainer's validation after each epoch "
                      "(the Evaluator always reads the whole split)")
  r.add_argument("--epochs", type=int, default=3,
                 help="the train steps are split into this many Keras epochs (validation and TensorBoard "
                      "logs after each)")
  r.add_argument("--batch-size", type=int, default=configs.TRAIN_BATCH_SIZE, help="impressions per training batch")
  r.add_argument("--learning-rate", type=float, default=None, help="Adam's learning rate (None: the model's 1e-3)")
  r.add_argument("--embedding-dim", type=int, default=None, help="d_e (paper: 4)")
  r.add_argument("--target-attention", action="store_true",
                 help="pool the user's clicked categories by target attention from the ad's category "
                      "(DIN's unit, models/layers.py) into x_nv")
  r.add_argument("--seed", type=int, default=0, help="the trainer's seed: initial weights and shuffling")
  r.add_argument("--auc-floor", type=float, default=configs.AUC_FLOOR,
                 help="the Evaluator blesses (and the Pusher pushes) a model only with eval AUC >= this")
  r.add_argument("--auc-tolerance", type=float, default=configs.AUC_TOLERANCE,
                 help="nor a model whose eval AUC is more than this below the latest blessed model's")
  r.add_argument("--baseline-margin", type=float, default=configs.BASELINE_MARGIN,
                 help="nor a model whose per-user AUC is below the best heuristic baseline's (popularity, "
                      "category affinity, item co-occurrence, blend) plus this; negative: no baseline gate")
  r.add_argument("--variant", default=choices.VISUAL_VARIANT,
                 choices=choices.VISUAL_VARIANTS,
                 help="visual model (paper Table 8); none = DCN without images")
  r.add_argument("--backbone", default=choices.BACKBONE, choices=choices.BACKBONES,
                 help="CNN of the visual tower (light: small residual net for CPUs)")
  r.add_argument("--backbone-weights", default=None, metavar="imagenet|PATH",
                 help="start the backbone from weights: imagenet (efficientnet_lite0: the ImageNet weights "
                      "make setup converts) or a Keras weights file of the same backbone (default: random)")
  r.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="S: images are resized to S x S")
  r.add_argument("--impressions-per-ad", type=int, default=configs.IMPRESSIONS_PER_AD,
                 help="G: up to G impressions of the same ad share a batch (paper: 25)")
  r.add_argument("--no-dedup", action="store_true", help="run the CNN on every impression")
  r.add_argument("--spatial-norm", action="store_true",
                 help="batch norm after the spatial gate's 7x7 conv, as the official CBAM code")
  r.add_argument("--attention", default=None,
                 choices=list(choices.ATTENTION_KINDS),
                 help="override the variant's attention kind (paper Table 5)")
  r.add_argument("--channel-prior", type=int, default=None, help="C' (None: 20)")
  r.add_argument("--spatial-prior", type=int, default=None, help="H' = W' (None: 7)")
  r.add_argument("--attention-layers", type=int, default=None,
                 help="L': attention on the last L' conv layers (None: all)")
  r.add_argument("--mixed-precision", action="store_true", help="Keras mixed_float16 policy (for GPUs)")
  r.add_argument("--distribution", default="default", choices=["default", "mirrored"],  # TrainerSettings
                 help="tf.distribute strategy of the Trainer (mirrored: every local GPU)")
  r.add_argument("--on-bad-image", default="error", choices=["error", "blank"],
                 help="a missing or undecodable catalogue image: stop naming it, or use a grey image")
  r.add_argument("--table-min-impressions", type=int, default=0,
                 help="visual table frequency control: keep ads with >= N training impressions")
  r.add_argument("--table-top-k", type=int, default=0, help="keep only the K most shown ads (0 = all)")
  r.add_argument("--cold-by", **cold_by)
  r.add_argument("--cache", action="store_true",
                 help="reuse outputs of earlier runs in OUTPUT whose inputs did not change (TFX cache), "
                      "e.g. ExampleGen and Transform when only the trainer's options change")
  r.add_argument("--skip-input-check", action="store_true", help="skip the CSV pre-flight check")
  r.add_argument("--json", action="store_true", help="print the summary as JSON")
  r.add_argument("--only-node", default=None, metavar="COMPONENT_ID",
                 help="run one component (a TFX partial run on the latest run's artifacts in OUTPUT)")
  r.add_argument("-v", "--verbose", action="store_true", help="TFX/Beam INFO logs")
  r.set_defaults(func=_cmd_pipeline_run)
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
                  choices=choices.VISUAL_VARIANTS, help="visual model (paper Table 8)")
  cp.add_argument("--cold-by", **cold_by)
  cp.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                  help="Beam pipeline argument for the cluster, repeatable, e.g. --beam-arg=--runner=DataflowRunner")
  cp.set_defaults(func=_cmd_pipeline_compile)
  nd = pipe.add_parser("nodes", help="the pipeline's components in order, with their upstream ones")
  nd.add_argument("--variant", default=choices.VISUAL_VARIANT,
                  choices=choices.VISUAL_VARIANTS, help="visual model (none has no visual components)")
  nd.add_argument("--json", action="store_true", help="print JSON")
  nd.set_defaults(func=_cmd_pipeline_nodes)
  sm = pipe.add_parser("summary", help="print the outcome of the latest run in OUTPUT")
  sm.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  sm.add_argument("--json", action="store_true", help="print JSON")
  sm.set_defaults(func=_cmd_pipeline_summary)

  models = sub.add_parser("models", help="the Keras models").add_subparsers(dest="models_command", required=True)
  ms = models.add_parser("summary", help="parameters and FLOPs of a visual tower (paper Table 2)")
  ms.add_argument("--backbone", default="resnet18", choices=choices.BACKBONES, help="CNN to count")
  ms.add_argument("--attention", default="cscnn",
                  choices=list(choices.ATTENTION_KINDS),
                  help="attention module on the conv layers")
  ms.add_argument("--placement", default="per-conv", choices=["per-conv", "per-block"],
                  help="ResNet-18: a module after every conv (the paper's 16) or one per block (8)")
  ms.add_argument("--image-size", type=int, default=224, help="S: input images S x S (the paper: 224)")
  ms.add_argument("--categories", type=int, default=3310, help="|K|")
  ms.add_argument("--channel-prior", type=int, default=20, help="C'")
  ms.add_argument("--spatial-prior", type=int, default=7, help="H' = W'")
  ms.add_argument("--reduction", type=int, default=4, help="r")
  ms.add_argument("--attention-layers", type=int, default=None,
                  help="L': attention on the last L' conv layers (None: all)")
  ms.add_argument("--output-dim", type=int, default=150, help="|x_v|")
  ms.add_argument("--json", action="store_true", help="print JSON")
  ms.set_defaults(func=_cmd_models_summary)

  bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
  bt = bench.add_parser("training", help="training step time: attention kinds, backbones, de-duplication")
  bt.add_argument("--backbones", default="light,resnet18", help="comma-separated backbones to time")
  bt.add_argument("--attention", default="none,cbam,cscnn", help="comma-separated attention kinds to time")
  bt.add_argument("--per-ad", type=_positive_ints, default="1,5,25",
                  help="impressions per ad in a batch (G), comma-separated")
  bt.add_argument("--batch", type=int, default=100, help="impressions per batch")
  bt.add_argument("--image-size", type=int, default=32, help="S: random S x S images")
  bt.add_argument("--rounds", type=int, default=10,
                  help="timed rounds per backbone, one measurement of each of its configurations "
                       "each; more rounds narrow the ratios' intervals (a CSCNN / CBAM goal verdict "
                       "of 'undecided' asks for more)")
  bt.add_argument("--measure-seconds", type=float, default=1.0,
                  help="each measurement runs consecutive steps for about this long (at least one "
                       "step); longer ones average out the machine's moment-to-moment speed")
  bt.add_argument("--json", action="store_true", help="one JSON object, per-round times included")
  bt.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  bt.set_defaults(func=_cmd_bench_training)
  bs = bench.add_parser("serving", help="gRPC vs in-process latency and throughput of the serving model")
  bs.add_argument("--model-base-path", default="demo/out/serving/cscnn_ctr",
                  help="pushed model folder (numeric versions; the latest is served)")
  bs.add_argument("--model-name", default="cscnn_ctr", help="name the model is served under")
  bs.add_argument("--candidates", default="demo/data/impressions/impressions.csv",
                  help="CSV of candidates (impressions; the label column is ignored)")
  bs.add_argument("--sizes", type=_positive_ints, default="1,100,1000",
                  help="candidates per request, comma-separated")
  bs.add_argument("--requests", type=int, default=200, help="timed requests per size and path in each repeat")
  bs.add_argument("--repeats", type=int, default=3, help="repeats; latencies are medians over them")
  bs.add_argument("--concurrency", type=_positive_ints, default="1,4,8",
                  help="client threads for the throughput figure, comma-separated")
  bs.add_argument("--profile", type=int, nargs="?", const=100, default=0, metavar="N",
                  help="also the cost of each stage of a request of N candidates (default 100): the "
                       "server's steps timed in process and the graph's op time per stage (TF profiler)")
  bs.add_argument("--json", action="store_true", help="one JSON object")
  bs.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  bs.set_defaults(func=_cmd_bench_serving)

  sv = sub.add_parser("serve", help="serve pushed models with TF Serving's gRPC and REST protocol")
  sv.add_argument("--model-base-path", help="e.g. OUT/serving/cscnn_ctr (holds numeric versions)")
  sv.add_argument("--model-name", help="name clients ask for (with --model-base-path)")
  sv.add_argument("--model-config-file", help="TF Serving models.config (several models, version labels)")
  sv.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port, printed)")
  sv.add_argument("--rest-port", type=int, default=None, help="REST port (TF Serving's JSON API); none by default")
  sv.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
  sv.add_argument("--file-system-poll-wait-seconds", type=float, default=1.0,
                  help="how often new versions under the base path are looked for")
  sv.add_argument("--enable-batching", action="store_true",
                  help="merge concurrent requests to a model version and signature into one run")
  sv.add_argument("--max-batch-size", type=int, default=1024, help="rows of a merged batch, at most")
  sv.add_argument("--batch-timeout-micros", type=int, default=1000,
                  help="how long a batch waits for more requests")
  sv.add_argument("--intra-op-threads", type=int, default=0,
                  help="threads one op may use (TF Serving's --tensorflow_intra_op_parallelism; 0: TF's default, the cores)")
  sv.add_argument("--inter-op-threads", type=int, default=0,
                  help="ops run at once (TF Serving's --tensorflow_inter_op_parallelism; 0: TF's default)")
  sv.add_argument("--max-request-rows", type=int, default=10_000,
                  help="rows (candidates) a request may carry; more -> INVALID_ARGUMENT")
  sv.add_argument("--max-request-bytes", type=int, default=64 << 20,
                  help="bytes a request may have; more -> RESOURCE_EXHAUSTED (gRPC) / HTTP 413 (REST)")
  sv.set_defaults(func=_cmd_serve)

  pr = sub.add_parser("predict", help="score candidates (CSV or JSON) over gRPC")
  pr.add_argument("--server", required=True, help="HOST:PORT")
  pr.add_argument("--model", required=True, help="the served model's name")
  pr.add_argument("--input", required=True, help="CSV with a header of feature names, or JSON")
  pr.add_argument("--signature", default="serving_raw", help="SignatureDef to call")
  pr.add_argument("--version", type=int, default=None, help="model version (None: the latest loaded)")
  pr.add_argument("--timeout", type=float, default=10.0, help="gRPC deadline in seconds")
  pr.add_argument("--json", action="store_true", help="print JSON")
  pr.set_defaults(func=_cmd_predict)

  ex = sub.add_parser("experiment", help="experiments").add_subparsers(dest="experiment_command", required=True)
  ab = ex.add_parser("ablation", help="restartable grid of pipeline runs over configurations and seeds")
  ab.add_argument("--data", required=True, help="input folder, as for `pipeline run --data`")
  ab.add_argument("--output", required=True,
                  help="experiment folder: run/ (the shared pipeline output), cells/, GRID.md/.csv/.png")
  ab.add_argument("--grid", default="variants", choices=["variants", *GRIDS],
                  help="variants: --variants (paper Tables 4, 8); table5: attention kinds with and "
                       "without the category prior; figure5: C', H' = W', L'")
  ab.add_argument("--variants", default=None,
                  help="comma-separated `pipeline run --variant` values, for the variants grid only "
                       f"(None: {','.join(choices.VISUAL_VARIANTS)})")
  ab.add_argument("--seeds", type=int, default=3, help="trainer seeds 0 .. N-1 per configuration")
  ab.add_argument("--train-steps", type=int, default=configs.TRAIN_STEPS, help="the same budget for every cell")
  ab.add_argument("--backbone", default=choices.BACKBONE, choices=choices.BACKBONES, help="CNN of every cell")
  ab.add_argument("--run-arg", action="append", default=[], help="extra `pipeline run` argument, repeatable")
  ab.set_defaults(func=_cmd_experiment_ablation)

  rp = sub.add_parser("report", help="HTML report of the latest pipeline run in OUTPUT")
  rp.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  rp.add_argument("--report-dir", default=None, help="where the report goes (None: OUTPUT/report)")
  rp.set_defaults(func=_cmd_report)
  tb = sub.add_parser("tensorboard", help="TensorBoard over the training logs of OUTPUT")
  tb.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  tb.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
  tb.add_argument("--port", type=int, default=6006, help="TensorBoard's port")
  tb.set_defaults(func=_cmd_tensorboard)

  sp = sub.add_parser("spec", help="feature spec files").add_subparsers(dest="spec_command", required=True)
  si = sp.add_parser("infer", help="propose a feature spec from the impressions CSVs (TFDV statistics)")
  si.add_argument("--data", required=True, help="folder with impressions/*.csv or impressions/train/*.csv")
  si.add_argument("--out", required=True, help="the spec file to write (YAML)")
  si.add_argument("--force", action="store_true", help="overwrite --out if it exists")
  si.set_defaults(func=_cmd_spec_infer)
  ss = sp.add_parser("show", help="print a spec in file form, checked (default: the project's own)")
  ss.add_argument("--spec", default=None, metavar="FILE", help="a spec file to check and print")
  ss.set_defaults(func=_cmd_spec_show)

  sc = sub.add_parser("schema", help="print, write or check the curated schema")
  g = sc.add_mutually_exclusive_group()
  g.add_argument("--write", action="store_true", help="write the schema file from the feature spec")
  g.add_argument("--check", action="store_true", help="exit 1 if the schema file is stale")
  sc.add_argument("--spec", default=None, metavar="FILE", help="print the schema of this feature spec file")
  sc.set_defaults(func=_cmd_schema)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)
