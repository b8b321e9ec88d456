"""Where a gRPC Predict's time goes between the client and the handler, measured in the serving
process itself: `cscnn serve` from a checkout with `PredictionService.Predict` wrapped in a timer,
and one client alternating, request by request,

- a Predict of N candidates (the round trip; the handler's own time inside the server, paired);
- a GetModelStatus on the same server (an RPC with next to no work: the server's transport);
- an echo of the Predict's request and response sizes on a bare Python gRPC server (the floor of
  a Python gRPC round trip on the machine, without TensorFlow in the process).

  bin/env python scripts/serving_grpc_split.py --checkout . --model-base-path BASE/cscnn_ctr [-n 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _serve_timed(checkout: str, out: str, argv) -> None:
  """In the server subprocess: the handler's durations to `out` on SIGUSR1."""
  sys.path.insert(0, checkout)
  import serving.server as server
  times, predict = [], server.PredictionService.Predict

  def timed(self, request, context):
    t0 = time.perf_counter()
    response = predict(self, request, context)
    times.append((time.perf_counter() - t0) * 1e3)
    return response

  server.PredictionService.Predict = timed

  def dump(*_):
    with open(out, "w") as f:
      json.dump(times, f)
    os._exit(0)

  signal.signal(signal.SIGUSR1, dump)
  from cscnn.cli import main
  sys.exit(main(["serve", *argv]))


def _serve_echo(port: int, reply_bytes: int) -> None:
  from concurrent import futures

  import grpc
  reply = b"x" * reply_bytes
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
  server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
      "echo.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: reply)}),))
  server.add_insecure_port(f"127.0.0.1:{port}")
  server.start()
  server.wait_for_termination()


def main() -> int:
  if sys.argv[1:2] == ["--timed-server"]:
    _serve_timed(sys.argv[2], sys.argv[3], sys.argv[4:])
  if sys.argv[1:2] == ["--echo-server"]:
    _serve_echo(int(sys.argv[2]), int(sys.argv[3]))
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--checkout", default=ROOT, help="checkout whose `cscnn serve` runs")
  ap.add_argument("--model-base-path", required=True)
  ap.add_argument("--model-name", default="cscnn_ctr")
  ap.add_argument("--candidates", default="/tmp/sample/impressions/impressions.csv")
  ap.add_argument("-n", type=int, default=100, help="candidates per request")
  ap.add_argument("--requests", type=int, default=400)
  args = ap.parse_args()
  sys.path.insert(0, ROOT)
  import grpc
  from tensorflow_serving.apis import get_model_status_pb2

  from serving.client import CtrClient, predict_request, read_candidates

  port, echo_port = _free_port(), _free_port()
  checkout = os.path.abspath(args.checkout)
  times_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
  request = predict_request(args.model_name, read_candidates(args.candidates)[:args.n])
  procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--timed-server", checkout, times_file,
                             "--model-base-path", os.path.abspath(args.model_base_path),
                             "--model-name", args.model_name, "--port", str(port)],
                            cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
  client = CtrClient(f"127.0.0.1:{port}", timeout=30)
  try:
    deadline = time.time() + 120
    while True:
      try:
        client.status(args.model_name)
        break
      except grpc.RpcError:
        if time.time() > deadline or procs[0].poll() is not None:
          raise RuntimeError(f"the model server of {checkout} did not come up") from None
        time.sleep(0.3)
    for _ in range(10):
      response = client.predictions.Predict(request, timeout=30)
    procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo-server", str(echo_port),
                                   str(response.ByteSize())]))
    echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
    grpc.channel_ready_future(echo_channel).result(timeout=60)
    echo, payload = echo_channel.unary_unary("/echo.Echo/Call"), request.SerializeToString()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = args.model_name
    calls = {"round trip": lambda: client.predictions.Predict(request, timeout=30),
             "status RPC": lambda: client.models.GetModelStatus(status, timeout=30),
             "bare echo": lambda: echo(payload, timeout=30)}
    for _ in range(10):
      echo(payload)
    times = {k: [] for k in calls}
    for _ in range(args.requests):
      for k, call in calls.items():
        t0 = time.perf_counter()
        call()
        times[k].append((time.perf_counter() - t0) * 1e3)
    procs[0].send_signal(signal.SIGUSR1)
    procs[0].wait(timeout=60)
    with open(times_file) as f:
      handler = json.load(f)[10:]
  finally:
    client.close()
    for p in procs:
      if p.poll() is None:
        p.terminate()
        p.wait(timeout=30)
    os.unlink(times_file)
  q = lambda xs: f"p50 {np.percentile(xs, 50):7.3f}  p99 {np.percentile(xs, 99):7.3f}"  # noqa: E731
  print(f"{checkout}, {args.n} candidates, {args.requests} requests of each kind, alternating (ms)")
  print(f"  Predict round trip (client)     {q(times['round trip'])}")
  print(f"  Predict handler (in the server) {q(handler)}")
  print(f"  round trip - handler, paired    p50 {np.median(np.subtract(times['round trip'], handler)):7.3f}")
  print(f"  GetModelStatus round trip       {q(times['status RPC'])}")
  print(f"  bare Python gRPC echo           {q(times['bare echo'])}  ({len(payload)} bytes in, "
        f"{response.ByteSize()} out)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
