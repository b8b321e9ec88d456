"""Before / after of the model server, side by side in one run: `cscnn serve` started from two
checkouts (e.g. main and a branch) on the same model, one gRPC client alternating requests
between them, so machine drift hits both alike.

  bin/env python scripts/bench_serving_ab.py --a ../main --b . \
      --model-base-path demo/out/serving/cscnn_ctr --candidates demo/data/impressions/impressions.csv

Per candidate count: p50 and p99 latency of each server (median over --repeats runs of --requests
alternating requests) and the per-run ratio b / a of the p50s and p99s (median and range); then
items/s of 100-candidate requests at --concurrency client threads, a and b alternately, --repeats
times (median). Both servers answer the same request; their scores must agree to 1e-5.
--b-model-base-path serves b another export of the same weights (e.g. one made by
`scripts/reexport_serving.py` with b's export code) to measure an export change.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(checkout: str, base_path: str, model: str, extra_args):
  import grpc
  from serving.client import CtrClient
  port = _free_port()
  proc = subprocess.Popen([sys.executable, "-m", "cscnn", "serve", "--model-base-path", base_path,
                           "--model-name", model, "--port", str(port), *extra_args], cwd=checkout,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  client = CtrClient(f"127.0.0.1:{port}", timeout=30)
  deadline = time.time() + 120
  while True:
    try:
      client.status(model)
      return proc, client
    except grpc.RpcError:
      if time.time() > deadline or proc.poll() is not None:
        raise RuntimeError(f"the model server of {checkout} did not come up")
      time.sleep(0.3)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--a", required=True, help="checkout of the 'before' server")
  ap.add_argument("--b", default=ROOT, help="checkout of the 'after' server (default: this one)")
  ap.add_argument("--a-arg", action="append", default=[], help="one more argument of a's `cscnn serve`")
  ap.add_argument("--b-arg", action="append", default=[], help="one more argument of b's `cscnn serve`, "
                  "e.g. --b-arg=--intra-op-threads=1 with --a . --b .")
  ap.add_argument("--model-base-path", required=True)
  ap.add_argument("--b-model-base-path", help="b's model base path (default: --model-base-path)")
  ap.add_argument("--model-name", default="cscnn_ctr")
  ap.add_argument("--candidates", required=True, help="CSV of candidates (impressions)")
  ap.add_argument("--sizes", default="1,100,1000")
  ap.add_argument("--requests", type=int, default=200)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--concurrency", type=int, default=8)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args()
  import tensorflow as tf

  base_paths = {"a": os.path.abspath(args.model_base_path),
                "b": os.path.abspath(args.b_model_base_path or args.model_base_path)}
  sizes = [int(s) for s in args.sizes.split(",")]
  with open(args.candidates, newline="") as f:
    rows = [r for _, r in zip(range(max(sizes)), csv.DictReader(f))]
  while len(rows) < max(sizes):
    rows = rows + rows
  servers = {k: _start(os.path.abspath(c), base_paths[k], args.model_name, extra)
             for k, c, extra in (("a", args.a, args.a_arg), ("b", args.b, args.b_arg))}
  out = {"a": " ".join([os.path.abspath(args.a), *args.a_arg]), "b": " ".join([os.path.abspath(args.b), *args.b_arg]),
         "a_model": base_paths["a"], "b_model": base_paths["b"],
         "requests": args.requests,
         "repeats": args.repeats}
  try:
    for n in sizes:
      request = servers["a"][1].predict_request(args.model_name, rows[:n])
      scores = {k: tf.make_ndarray(c.predictions.Predict(request, timeout=30).outputs["ctr"]).ravel()
                for k, (_, c) in servers.items()}
      out[f"max_score_difference_{n}"] = float(np.max(np.abs(scores["a"] - scores["b"])))
      for _ in range(5):
        for _, c in servers.values():
          c.predictions.Predict(request, timeout=30)
      runs = {k: {"p50": [], "p99": []} for k in servers}
      for _ in range(args.repeats):
        times = {k: [] for k in servers}
        for i in range(args.requests):
          for k in (("a", "b") if i % 2 else ("b", "a")):
            t0 = time.perf_counter()
            servers[k][1].predictions.Predict(request, timeout=30)
            times[k].append((time.perf_counter() - t0) * 1000)
        for k, t in times.items():
          runs[k]["p50"].append(float(np.percentile(t, 50)))
          runs[k]["p99"].append(float(np.percentile(t, 99)))
      for q in ("p50", "p99"):
        for k in servers:
          out[f"{k}_{q}_ms_{n}"] = round(statistics.median(runs[k][q]), 3)
        ratios = [b / a for a, b in zip(runs["a"][q], runs["b"][q])]
        out[f"ratio_{q}_{n}"] = [round(statistics.median(ratios), 3), round(min(ratios), 3), round(max(ratios), 3)]
      print(f"  {n} candidates done", file=sys.stderr)
    request = servers["a"][1].predict_request(args.model_name, rows[:100])
    items = {k: [] for k in servers}
    for _ in range(args.repeats):
      for k, (_, c) in servers.items():
        def worker(c=c):
          for _ in range(50):
            c.predictions.Predict(request, timeout=30)
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        t0 = time.perf_counter()
        for t in threads:
          t.start()
        for t in threads:
          t.join()
        items[k].append(args.concurrency * 50 * 100 / (time.perf_counter() - t0))
    for k, v in items.items():
      out[f"{k}_items_per_s_c{args.concurrency}"] = round(statistics.median(v), 1)
  finally:
    for proc, client in servers.values():
      client.close()
      proc.terminate()
      proc.wait(timeout=30)
  if args.json:
    print(json.dumps(out))
    return 0
  print(f"a = {out['a']} on {out['a_model']}\nb = {out['b']} on {out['b_model']}\n"
        f"{args.requests} requests per size alternating a and b, "
        f"median of {args.repeats} runs; ratio b/a: median [min, max] over runs")
  print(f"{'candidates':>10} {'a p50':>8} {'b p50':>8} {'b/a p50':>20} "
        f"{'a p99':>8} {'b p99':>8} {'b/a p99':>20} {'max |a-b|':>10}")
  for n in sizes:
    r50, r99 = out[f"ratio_p50_{n}"], out[f"ratio_p99_{n}"]
    ratio50, ratio99 = f"{r50[0]:.3f} [{r50[1]:.3f}, {r50[2]:.3f}]", f"{r99[0]:.3f} [{r99[1]:.3f}, {r99[2]:.3f}]"
    print(f"{n:>10} {out[f'a_p50_ms_{n}']:>8.2f} {out[f'b_p50_ms_{n}']:>8.2f} {ratio50:>20} "
          f"{out[f'a_p99_ms_{n}']:>8.2f} {out[f'b_p99_ms_{n}']:>8.2f} {ratio99:>20} "
          f"{out[f'max_score_difference_{n}']:>10.2e}")
  c = args.concurrency
  print(f"items/s at {c} client threads (100 candidates): a {out[f'a_items_per_s_c{c}']:,.0f}, "
        f"b {out[f'b_items_per_s_c{c}']:,.0f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
