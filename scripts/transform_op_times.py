"""Op time of the Transform layer inside the served call, per op type: SavedModels' `serving_raw`
on the same candidates, each traced by the TF profiler (`--calls` calls per trace) in
alternating rounds; medians over the rounds.

  bin/env python scripts/transform_op_times.py BEFORE/VERSION AFTER/VERSION [-n 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cscnn.bench import traced_ops  # noqa: E402


def transform_op_times(fn, kwargs, calls: int) -> collections.Counter:
  """ms per call of each op type under the Transform layer's scope, from one profiler trace."""
  ops = collections.Counter()
  for name, op, ms in traced_ops(fn, kwargs, calls):
    if "transform_features_layer" in name:
      ops[op] += ms
  return ops


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("models", nargs="+", help="SavedModel folders")
  ap.add_argument("--candidates", default="/tmp/sample/impressions/impressions.csv")
  ap.add_argument("-n", type=int, default=100)
  ap.add_argument("--calls", type=int, default=50)
  ap.add_argument("--rounds", type=int, default=3)
  args = ap.parse_args()
  import tensorflow as tf

  from serving.client import candidate_tensors, read_candidates

  kwargs = candidate_tensors(read_candidates(args.candidates)[:args.n])
  fns = {m: tf.saved_model.load(m).signatures["serving_raw"] for m in args.models}
  for fn in fns.values():
    for _ in range(5):
      fn(**kwargs)
  traces = {m: [] for m in fns}
  for _ in range(args.rounds):
    for m, fn in fns.items():
      traces[m].append(transform_op_times(fn, kwargs, args.calls))
  print(f"Transform layer op ms per serving_raw call of {args.n} candidates, median of {args.rounds} "
        f"traces of {args.calls} calls")
  for m, ops in traces.items():
    total = statistics.median(sum(o.values()) for o in ops)
    kinds = sorted(set().union(*ops), key=lambda k: -statistics.median(o.get(k, 0.0) for o in ops))
    top = ", ".join(f"{k} {statistics.median(o.get(k, 0.0) for o in ops):.3f}" for k in kinds[:5])
    init = statistics.median(o.get("InitializeTableFromTextFileV2", 0.0) for o in ops)
    print(f"{m}\n  total {total:.3f} (traces {', '.join(f'{sum(o.values()):.3f}' for o in ops)}); "
          f"InitializeTableFromTextFileV2 {init:.3f}\n  largest: {top}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
