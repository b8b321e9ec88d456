"""`cscnn experiment`: grids of pipeline runs (ablation), the BPR setting (table4), tables across grids (compare)."""

from __future__ import annotations

import os
import sys

from cscnn.cli.common import defaults
from cscnn.cli.errors import UsageError
from spec.choices import IMAGENET_BACKBONE


def _cmd_experiment_ablation(args) -> int:
  from cscnn.experiment import run_ablation, table_paths
  from spec import choices
  run_args = ["--train-steps", str(args.train_steps), "--backbone", args.backbone, *args.run_arg]
  if args.variants is not None and args.grid not in ("variants", "init"):
    raise UsageError(f"--variants is for the variants and init grids; the {args.grid} grid has its own cells")
  if args.inits is not None and args.grid != "init":
    raise UsageError(f"--inits is for the init grid, not {args.grid}")
  default_variants = choices.TABLE8_VARIANTS if args.grid != "init" else (choices.VISUAL_VARIANT,)
  variants = args.variants.split(",") if args.variants else default_variants
  inits = args.inits.split(",") if args.inits else (
      choices.SCRATCH, choices.CATALOGUE, *((choices.IMAGENET,) if args.backbone == IMAGENET_BACKBONE else ()))
  if choices.IMAGENET in inits and args.backbone != IMAGENET_BACKBONE:
    raise UsageError(f"--inits {choices.IMAGENET} needs --backbone {IMAGENET_BACKBONE}, not {args.backbone}")
  try:
    run_ablation(args.data, args.output, grid=args.grid, variants=variants, inits=inits,
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


def _cmd_experiment_table4(args) -> int:
  import dataclasses
  import logging
  from cscnn.table4 import BPRConfig, run_table
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  cfg = BPRConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BPRConfig)})   # a flag per field
  try:
    run_table(args.data, args.output, args.methods.split(","), args.seeds, cfg, args.visual_init,
              log=lambda m: print(m, flush=True))
  except ValueError as e:
    print(f"cscnn experiment table4: {e}", file=sys.stderr)
    return 1
  with open(os.path.join(args.output, "table4.md")) as f:
    print(f.read())
  print(f"table: {os.path.join(args.output, 'table4.md')}, {os.path.join(args.output, 'table4.csv')}")
  return 0


def _cmd_experiment_compare(args) -> int:
  from cscnn.experiment import compare, parse_configuration
  try:
    paths = compare([parse_configuration(c) for c in args.configurations], args.output, args.other_data)
  except ValueError as e:
    print(f"cscnn experiment compare: {e}", file=sys.stderr)
    return 1
  with open(paths["markdown"]) as f:
    print(f.read())
  print(f"table: {paths['markdown']}, {paths['csv']}, gains {paths['steps_csv']}; "
        f"plots: {paths['plot']}, {paths['gains_plot']}")
  return 0


def register(sub) -> None:
  from cscnn.experiment import GRIDS, run_ablation
  from spec import choices
  from tfx_pipeline import configs
  ablation = defaults(run_ablation)
  ex = sub.add_parser("experiment", help="experiments").add_subparsers(dest="experiment_command", required=True)
  ab = ex.add_parser("ablation", help="restartable grid of pipeline runs over configurations and seeds")
  ab.add_argument("--data", required=True, help="input folder, as for `pipeline run --data`")
  ab.add_argument("--output", required=True,
                  help="experiment folder: run/ (the shared pipeline output), cells/, GRID.md/.csv/.png")
  ab.add_argument("--grid", default=ablation["grid"], choices=["variants", "init", *GRIDS],
                  help="variants: --variants (paper Tables 4, 8); init: --variants from each of --inits, "
                       "each start against scratch; table5: attention kinds with and without the category "
                       "prior; figure5: C', H' = W', L'")
  ab.add_argument("--variants", default=None,
                  help="comma-separated `pipeline run --variant` values, for the variants and init grids "
                       f"(None: {','.join(choices.TABLE8_VARIANTS)}, Table 8's rows, for variants; "
                       f"{choices.VISUAL_VARIANT} for init; also {choices.TRANSFER})")
  ab.add_argument("--inits", default=None,
                  help="comma-separated `pipeline run --visual-init` values, for the init grid (None: "
                       f"{choices.SCRATCH},{choices.CATALOGUE}, and {choices.IMAGENET} with --backbone "
                       f"{IMAGENET_BACKBONE})")
  ab.add_argument("--seeds", type=int, default=ablation["seeds"], help="trainer seeds 0 .. N-1 per configuration")
  ab.add_argument("--train-steps", type=int, default=configs.TRAIN_STEPS, help="the same budget for every cell")
  ab.add_argument("--backbone", default=choices.BACKBONE, choices=choices.BACKBONES, help="CNN of every cell")
  ab.add_argument("--run-arg", action="append", default=[], help="extra `pipeline run` argument, repeatable")
  ab.set_defaults(func=_cmd_experiment_ablation)

  cmp = ex.add_parser("compare", help="finished cells of several experiment folders in one table, each "
                                       "configuration against the first, paired by seed (nothing is trained)")
  cmp.add_argument("configurations", nargs="+", metavar="NAME=FOLDER[:LABEL]",
                   help="the cells labelled LABEL (default NAME) in the experiment folder FOLDER, shown as "
                        "NAME; the first is the reference, e.g. none=/tmp/exp_a:none cscnn=/tmp/exp_b:cscnn")
  cmp.add_argument("--output", required=True, help="folder for compare.md, .csv, _steps.csv, .png")
  cmp.add_argument("--other-data", action="store_true",
                   help="pair cells that ran on different data folders with the same eval rows (e.g. a "
                        "control on a copy of the data with other images); refused without it")
  cmp.set_defaults(func=_cmd_experiment_compare)

  from cscnn.table4 import METHODS, BPRConfig
  bpr = defaults(BPRConfig)
  t4 = ex.add_parser("table4", help="paper Table 4 in the BPR setting (eq. 12 trained with the pair-wise "
                                    "loss of eq. 14, per-user AUC eq. 13 on all and cold ads)")
  t4.add_argument("--data", required=True,
                  help="pre-split data with images, e.g. from `cscnn data movielens`: ads/ads.csv, "
                       "impressions/train/*.csv, impressions/eval/*.csv (test), validation/*.csv")
  t4.add_argument("--output", required=True, help="folder: cells/ (one JSON per run), table4.md/.csv")
  t4.add_argument("--methods", default=",".join(METHODS),
                  help="comma-separated rows: bpr-mf (no image), vbpr (frozen pretrained encoder), dvbpr "
                       "(CNN end to end), cbam, cscnn")
  t4.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per method")
  t4.add_argument("--visual-init", default=choices.CATALOGUE, metavar="catalogue|imagenet|scratch|PATH",
                  help="the encoder of every image row: catalogue (pretrained here on the ads' images, "
                       f"categories and title words, once per OUTPUT), imagenet (--backbone {IMAGENET_BACKBONE}), "
                       "scratch (not for vbpr) or a Keras weights file of the backbone")
  t4.add_argument("--epochs", type=int, default=bpr["epochs"],
                  help="passes over the training positives; each run reports the epoch with the best "
                       "validation AUC")
  t4.add_argument("--batch-size", type=int, default=bpr["batch_size"], help="triplets per step")
  t4.add_argument("--learning-rate", type=float, default=bpr["learning_rate"], help="Adam's")
  t4.add_argument("--l2", type=float, default=bpr["l2"], help="lambda of eq. 14 on the batch's parameters")
  t4.add_argument("--latent-dim", type=int, default=bpr["latent_dim"], help="d' of gamma_u, gamma_a")
  t4.add_argument("--visual-dim", type=int, default=bpr["visual_dim"], help="d_v of theta_u and Phi")
  t4.add_argument("--backbone", default=bpr["backbone"], choices=choices.BACKBONES, help="CNN of Phi")
  t4.add_argument("--image-size", type=int, default=bpr["image_size"], help="images are padded to S x S")
  t4.add_argument("--pretrain-steps", type=int, default=bpr["pretrain_steps"],
                  help="catalogue pretraining batches (--visual-init catalogue)")
  t4.set_defaults(func=_cmd_experiment_table4)
