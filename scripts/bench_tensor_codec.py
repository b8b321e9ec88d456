"""The server's TensorProto codec (`serving/tensors.py`) against TensorFlow's own, side by side in
one process: decoding a Predict request's inputs and encoding its outputs, interleaved call by
call; per codec the median over --runs of each run's p50.

  bin/env python scripts/bench_tensor_codec.py --candidates demo/data/impressions/impressions.csv [--rows 100]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--candidates", required=True, help="CSV of candidates (impressions)")
  ap.add_argument("--rows", type=int, default=100, help="candidates per request")
  ap.add_argument("--calls", type=int, default=400, help="calls of each codec per run")
  ap.add_argument("--runs", type=int, default=5)
  args = ap.parse_args()
  import tensorflow as tf
  from serving.client import predict_request
  from serving.tensors import to_array, to_proto

  with open(args.candidates, newline="") as f:
    rows = [r for _, r in zip(range(args.rows), csv.DictReader(f))]
  request = predict_request("m", rows)
  rng = np.random.default_rng(0)
  outputs = {"ctr": rng.random((len(rows), 1), np.float32), "visual_fallback": np.zeros((len(rows), 1), np.float32)}
  codecs = {
      "decode inputs: tf.make_ndarray": lambda: {k: tf.make_ndarray(v) for k, v in request.inputs.items()},
      "decode inputs: serving.tensors.to_array": lambda: {k: to_array(v) for k, v in request.inputs.items()},
      "encode outputs: tf.make_tensor_proto": lambda: [tf.make_tensor_proto(v) for v in outputs.values()],
      "encode outputs: serving.tensors.to_proto": lambda: [to_proto(v) for v in outputs.values()],
  }
  for fn in codecs.values():
    for _ in range(20):
      fn()
  p50s = {k: [] for k in codecs}
  for _ in range(args.runs):
    times = {k: [] for k in codecs}
    for _ in range(args.calls):
      for k, fn in codecs.items():
        t0 = time.perf_counter()
        fn()
        times[k].append(time.perf_counter() - t0)
    for k, t in times.items():
      p50s[k].append(float(np.percentile(t, 50)) * 1e6)
  print(f"{len(rows)} candidates ({len(request.inputs)} inputs), median over {args.runs} runs of the p50 of "
        f"{args.calls} interleaved calls")
  for k, v in p50s.items():
    print(f"  {k:<42} {statistics.median(v):8.1f} us   (runs: {', '.join(f'{x:.0f}' for x in v)})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
