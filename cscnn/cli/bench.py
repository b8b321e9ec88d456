"""`cscnn bench training | serving`: benchmarks."""

from __future__ import annotations

import argparse
import json

from cscnn.cli.common import defaults, joined
from cscnn.cli.errors import UsageError


def _positive_ints(text: str) -> tuple:
  """argparse type of a comma-separated list of whole numbers >= 1 ("1,5,25")."""
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
  return values


def _add_training(bench) -> None:
  from cscnn.bench import GROUPS, bench_training
  training = defaults(bench_training)
  bt = bench.add_parser("training", help="training step time: attention kinds, backbones, de-duplication, "
                                         "frozen features")
  bt.add_argument("--backbones", default=joined(training["backbones"]), help="comma-separated backbones to time")
  bt.add_argument("--attention", default=joined(training["attentions"]),
                  help="comma-separated attention kinds to time")
  bt.add_argument("--per-ad", type=_positive_ints, default=joined(training["per_ad"]),
                  help="impressions per ad in a batch (G), comma-separated")
  bt.add_argument("--batch", type=int, default=training["batch"], help="impressions per batch")
  bt.add_argument("--image-size", type=int, default=training["image_size"], help="S: random S x S images")
  bt.add_argument("--rounds", type=int, default=training["rounds"],
                  help="timed rounds per backbone, one measurement of each of its configurations "
                       "each; more rounds narrow the ratios' intervals (a CSCNN / CBAM goal verdict "
                       "of 'undecided' asks for more)")
  bt.add_argument("--measure-seconds", type=float, default=training["min_measure_s"],
                  help="each measurement runs consecutive steps for about this long (at least one "
                       "step); longer ones average out the machine's moment-to-moment speed")
  bt.add_argument("--groups", default=joined(training["groups"]),
                  help=f"comma-separated configurations to time, of {joined(GROUPS)}: attention kinds, "
                       "de-duplication on / off, a frozen backbone on images against on features "
                       "computed once per ad")
  bt.add_argument("--json", action="store_true", help="one JSON object, per-round times included")
  bt.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  bt.set_defaults(func=_cmd_bench_training)


def _cmd_bench_training(args) -> int:
  import keras
  from cscnn.bench import bench_training, format_training
  keras.utils.set_random_seed(0)
  try:
    out = bench_training(backbones=args.backbones.split(","), attentions=args.attention.split(","),
                         per_ad=args.per_ad, batch=args.batch,
                         image_size=args.image_size, rounds=args.rounds,
                         min_measure_s=args.measure_seconds, groups=args.groups.split(","),
                         log=lambda *a, **k: None if args.quiet else print(*a, **k))
  except ValueError as e:
    raise UsageError(str(e)) from e
  print(json.dumps(out) if args.json else format_training(out))
  return 0


def _add_serving(bench) -> None:
  from cscnn.bench import bench_serving
  from tfx_pipeline import configs
  serving = defaults(bench_serving)
  bs = bench.add_parser("serving", help="gRPC vs in-process latency and throughput of the serving model")
  bs.add_argument("--model-base-path", default="demo/out/serving/cscnn_ctr",
                  help="pushed model folder (numeric versions; the latest is served)")
  bs.add_argument("--model-name", default=configs.MODEL_NAME, help="name the model is served under")
  bs.add_argument("--candidates", default="demo/data/impressions/impressions.csv",
                  help="CSV of candidates (impressions; the label column is ignored)")
  bs.add_argument("--sizes", type=_positive_ints, default=joined(serving["sizes"]),
                  help="candidates per request, comma-separated")
  bs.add_argument("--requests", type=int, default=serving["requests"],
                  help="timed requests per size and path in each repeat")
  bs.add_argument("--repeats", type=int, default=serving["repeats"], help="repeats; latencies are medians over them")
  bs.add_argument("--concurrency", type=_positive_ints, default=joined(serving["concurrency"]),
                  help="client threads for the throughput figure, comma-separated")
  bs.add_argument("--profile", type=int, nargs="?", const=100, default=serving["profile"], metavar="N",
                  help="also the cost of each stage of a request of N candidates (default 100): the "
                       "server's steps timed in process and the graph's op time per stage (TF profiler)")
  bs.add_argument("--json", action="store_true", help="one JSON object")
  bs.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  bs.set_defaults(func=_cmd_bench_serving)


def _cmd_bench_serving(args) -> int:
  from cscnn.bench import bench_serving, format_serving
  sizes = args.sizes
  try:
    out = bench_serving(args.model_base_path, args.model_name, args.candidates, sizes=sizes,
                        requests=args.requests, repeats=args.repeats,
                        concurrency=args.concurrency, profile=args.profile,
                        log=lambda *a, **k: None if args.quiet else print(*a, **k))
  except (FileNotFoundError, RuntimeError) as e:
    raise UsageError(str(e)) from e
  print(json.dumps(out) if args.json else format_serving(out, sizes))
  return 0


def register(sub) -> None:
  bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
  _add_training(bench)
  _add_serving(bench)
