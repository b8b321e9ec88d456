"""`cscnn serve` and `cscnn predict`: serving pushed models and scoring candidates."""

from __future__ import annotations

import json
import logging
import os
import sys

from cscnn.cli.errors import UsageError


def _add_serve(sub) -> None:
  # Port, host, poll interval and request limits are the serving package's defaults (ModelServer,
  # ModelManager, RequestLimits; tests/test_cli.py compares them) written out: importing it here
  # would load gRPC and the TF Serving protos for every --help. The batching ones are the command's.
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
                  help="threads one op may use (TF Serving's --tensorflow_intra_op_parallelism; "
                       "0: TF's default, the cores)")
  sv.add_argument("--inter-op-threads", type=int, default=0,
                  help="ops run at once (TF Serving's --tensorflow_inter_op_parallelism; 0: TF's default)")
  sv.add_argument("--max-request-rows", type=int, default=10_000,
                  help="rows (candidates) a request may carry; more -> INVALID_ARGUMENT")
  sv.add_argument("--max-request-bytes", type=int, default=64 << 20,
                  help="bytes a request may have; more -> RESOURCE_EXHAUSTED (gRPC) / HTTP 413 (REST)")
  sv.set_defaults(func=_cmd_serve)


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
    raise UsageError("give --model-base-path and --model-name, or --model-config-file")
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


def _add_predict(sub) -> None:
  from spec.names import SERVING_RAW
  # --timeout: CtrClient's default written out, as in _add_serve (tests/test_cli.py compares it)
  pr = sub.add_parser("predict", help="score candidates (CSV or JSON) over gRPC")
  pr.add_argument("--server", required=True, help="HOST:PORT")
  pr.add_argument("--model", required=True, help="the served model's name")
  pr.add_argument("--input", required=True, help="CSV with a header of feature names, or JSON")
  pr.add_argument("--signature", default=SERVING_RAW, help="SignatureDef to call")
  pr.add_argument("--version", type=int, default=None, help="model version (None: the latest loaded)")
  pr.add_argument("--timeout", type=float, default=10.0, help="gRPC deadline in seconds")
  pr.add_argument("--json", action="store_true", help="print JSON")
  pr.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
  from serving.client import CandidateError, CtrClient, read_candidates
  try:
    candidates = read_candidates(args.input)
    client = CtrClient(args.server, timeout=args.timeout)
    out = client.predict(args.model, candidates, args.signature, args.version)
  except (CandidateError, OSError) as e:
    raise UsageError(str(e)) from e
  except Exception as e:  # grpc.RpcError and friends  # pylint: disable=broad-except
    code = getattr(e, "code", lambda: None)()
    details = e.details() if callable(getattr(e, "details", None)) else str(e)
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


def register(sub) -> None:
  _add_serve(sub)
  _add_predict(sub)
