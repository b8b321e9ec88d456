"""`cscnn data sample` and `cscnn data movielens`: the input data sets."""

from __future__ import annotations

import math

from cscnn.cli.errors import UsageError


def _add_sample(data) -> None:
  from cscnn.data.sample import SampleConfig
  sample = SampleConfig()    # the generator's defaults are the flags' defaults
  s = data.add_parser("sample", help="generate the synthetic sample data set (see cscnn/data/sample.py)")
  s.add_argument("--out", required=True, help="output folder")
  s.add_argument("--impressions", type=int, default=sample.impressions, help="rows of the impression log")
  s.add_argument("--ads", type=int, default=sample.ads, help="ads in the catalogue, one image each")
  s.add_argument("--categories", type=int, default=sample.categories,
                 help="K: ad categories, each with its own key quadrant and preferred colour")
  s.add_argument("--users", type=int, default=sample.users, help="distinct users")
  s.add_argument("--image-size", type=int, default=sample.image_size, help="S: images are S x S RGB PNGs")
  s.add_argument("--visual-strength", type=float, default=sample.visual_strength,
                 help="weight of the category-specific visual effect on the click logit")
  s.add_argument("--overlays", type=int, default=sample.overlays,
                 help="small palette-coloured squares drawn over each image (price tags, stickers, "
                      "text); category-independent clutter with no click signal")
  s.add_argument("--category-backgrounds", action="store_true",
                 help="each category's images share a background brightness (its studio look), so "
                      "an image shows its category; the click effect is unchanged")
  s.add_argument("--seed", type=int, default=sample.seed, help="the same seed gives the same bytes")
  s.set_defaults(func=_cmd_data_sample)


def _cmd_data_sample(args) -> int:
  from cscnn.data.sample import SampleConfig, generate
  try:
    cfg = SampleConfig(impressions=args.impressions, ads=args.ads, categories=args.categories,
                       users=args.users, image_size=args.image_size, seed=args.seed,
                       visual_strength=args.visual_strength, overlays=args.overlays,
                       category_backgrounds=args.category_backgrounds)
  except ValueError as e:
    raise UsageError(str(e)) from e
  generate(cfg, args.out)
  return 0


def _add_movielens(data) -> None:
  from cscnn.data.movielens import NEGATIVE_SAMPLING, MovieLensConfig
  movielens = MovieLensConfig()    # the converter's defaults are the flags' defaults
  ml = data.add_parser("movielens", help="convert MovieLens-1M + posters into the pre-split input "
                                         "format (see cscnn/data/movielens.py)")
  ml.add_argument("--source", required=True,
                  help="the MovieLens-1M posters folder (ratings.csv, movies.dat, users.dat, posters/)")
  ml.add_argument("--out", required=True, help="output folder, outside the repo (licence)")
  ml.add_argument("--users", type=int, default=movielens.users, help="random subset of users; 0 = all 6,040")
  ml.add_argument("--negatives", type=int, default=movielens.negatives,
                  help="K: sampled negatives per training positive")
  ml.add_argument("--train-negatives", choices=NEGATIVE_SAMPLING, default=movielens.train_negatives,
                  help="how training negatives are drawn: uniformly over the catalogue, or in proportion to "
                       "1 + each movie's training positives (eval negatives stay uniform)")
  ml.add_argument("--eval-negatives", type=int, default=movielens.eval_negatives,
                  help="M: sampled negatives per held-out test / validation positive")
  ml.add_argument("--seed", type=int, default=movielens.seed,
                  help="user subset and negative sampling; the same seed gives the same bytes")
  ml.add_argument("--new-movies", type=float, default=movielens.new_movies, metavar="SHARE",
                  help="share of the catalogue treated as new ads: no training row, held-out ratings kept "
                       "(strict item cold start; 0 = the shared protocol)")
  ml.set_defaults(func=_cmd_data_movielens)


PASSES = 3   # the training budget the MovieLens figures in docs/results.md use


def _cmd_data_movielens(args) -> int:
  from cscnn.data.movielens import MovieLensConfig, convert
  try:
    cfg = MovieLensConfig(users=args.users, negatives=args.negatives,
                          eval_negatives=args.eval_negatives, seed=args.seed,
                          train_negatives=args.train_negatives, new_movies=args.new_movies)
    summary = convert(args.source, args.out, cfg, log=lambda m: print(m, flush=True))
  except (ValueError, OSError) as e:   # SourceError is a ValueError
    raise UsageError(str(e)) from e
  from tfx_pipeline import configs
  steps = math.ceil(PASSES * summary["rows"]["train"] / configs.TRAIN_BATCH_SIZE)
  new = f" --ad-id-dropout {args.new_movies:g}" if args.new_movies > 0 else ""   # content must rank the new movies
  print(f"next: bin/cscnn pipeline run --data {args.out} --output OUT --on-bad-image blank --cold-by positives "
        f"--train-steps {steps}{new}   # {PASSES} passes over the {summary['rows']['train']:,} training rows")
  return 0


def register(sub) -> None:
  data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
  _add_sample(data)
  _add_movielens(data)
