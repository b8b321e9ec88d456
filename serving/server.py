"""gRPC and REST front ends with TF Serving's protocol over a `ModelManager`.

gRPC (``tensorflow.serving``): PredictionService/Predict, GetModelMetadata, Classify, Regress;
ModelService/GetModelStatus. REST: ``POST /v1/models/NAME[/versions/N | /labels/L]:predict``
(``instances`` row format or ``inputs`` columnar format, ``{"b64": ...}`` for binary strings),
``GET /v1/models/NAME[/versions/N]`` (status) and ``.../metadata``.
Errors carry TF Serving's codes: unknown model / version / signature -> NOT_FOUND (HTTP 404);
bad input names, dtypes, shapes, unparsable tf.Examples or more rows than ``max_request_rows``
-> INVALID_ARGUMENT (HTTP 400); a request larger than ``max_request_bytes`` ->
RESOURCE_EXHAUSTED (HTTP 413); any other failure -> INTERNAL (HTTP 500), never UNKNOWN.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.errors import Internal, InvalidArgument, ResourceExhausted, ServingError, Unimplemented
from serving.model_manager import ModelManager, Servable
from serving.tensors import to_array, to_proto
from spec.names import OUTPUT_KEY as CTR_OUTPUT

log = logging.getLogger("cscnn.serving")


def _spec_version(model_spec) -> Dict:
  which = model_spec.WhichOneof("version_choice")
  if which == "version":
    return {"version": model_spec.version.value}
  if which == "version_label":
    return {"label": model_spec.version_label}
  return {}


def _set_spec(spec, servable: Servable, signature: str = "") -> None:
  """The model_spec a response echoes: the servable that answered and the signature used."""
  spec.name = servable.name
  spec.version.value = servable.version
  if signature:
    spec.signature_name = signature


@dataclasses.dataclass(frozen=True)
class RequestLimits:
  """What one request may carry: rows (the batch dimension) and bytes on the wire."""
  max_rows: int = 10_000
  max_bytes: int = 64 << 20

  def check_rows(self, rows: int, what: str) -> None:
    if rows > self.max_rows:
      raise InvalidArgument(f"{what} has {rows} rows; a request may have at most {self.max_rows} "
                            f"(--max-request-rows)")


def _rpc(method):
  """Runs a gRPC handler; a ServingError becomes its status code, anything else INTERNAL."""

  @functools.wraps(method)
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      error = e
    except Exception as e:  # pylint: disable=broad-except
      log.exception("%s failed", method.__name__)
      error = Internal(f"{type(e).__name__}: {e}")
    context.abort(getattr(grpc.StatusCode, error.grpc_code), str(error))

  return wrapper


def decode_inputs(inputs, limits: RequestLimits) -> Dict[str, np.ndarray]:
  """Predict's input TensorProtos as arrays (numpy views on the protos' content where they
  can be); the row limit is checked before decoding."""
  for k, v in inputs.items():
    if v.tensor_shape.dim:
      limits.check_rows(v.tensor_shape.dim[0].size, f"input {k!r}")
  out = {}
  for k, v in inputs.items():
    try:
      out[k] = to_array(v)
    except Exception as e:  # pylint: disable=broad-except
      raise InvalidArgument(f"input {k!r}: cannot decode the tensor: {e}") from None
  return out


def predict_response(servable: Servable, request, outputs: Dict[str, np.ndarray]) -> predict_pb2.PredictResponse:
  """The PredictResponse of `outputs`, with the request's output_filter applied."""
  wanted = list(request.output_filter) or list(outputs)
  unknown = [k for k in wanted if k not in outputs]
  if unknown:
    raise InvalidArgument(f"output_filter names unknown outputs {unknown}; outputs are {sorted(outputs)}")
  response = predict_pb2.PredictResponse()
  _set_spec(response.model_spec, servable, servable.signature(request.model_spec.signature_name))
  for k in wanted:
    response.outputs[k].CopyFrom(to_proto(outputs[k]))
  return response


def _examples(input_proto) -> np.ndarray:
  kind = input_proto.WhichOneof("kind")
  if kind == "example_list":
    examples = input_proto.example_list.examples
  elif kind == "example_list_with_context":
    raise Unimplemented("ExampleListWithContext is not supported; send an example_list")
  else:
    raise InvalidArgument("request.input is empty")
  if not examples:
    raise InvalidArgument("request.input has no examples")
  return np.array([e.SerializeToString() for e in examples], dtype=object)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, manager: ModelManager, limits: RequestLimits = RequestLimits()):
    self.manager, self.limits = manager, limits

  def _lease(self, model_spec):
    return self.manager.lease(model_spec.name, **_spec_version(model_spec))

  @_rpc
  def Predict(self, request, context):
    with self._lease(request.model_spec) as servable:
      inputs = decode_inputs(request.inputs, self.limits)
      outputs = servable.run(request.model_spec.signature_name, inputs)
      return predict_response(servable, request, outputs)

  @_rpc
  def GetModelMetadata(self, request, context):
    fields = set(request.metadata_field)
    if fields - {"signature_def"}:
      raise InvalidArgument(f"metadata_field must be 'signature_def', got {sorted(fields)}")
    servable = self.manager.get(request.model_spec.name, **_spec_version(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _set_spec(response.model_spec, servable)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    for k, v in servable.signature_defs.items():
      sigs.signature_def[k].CopyFrom(v)
    response.metadata["signature_def"].Pack(sigs)
    return response

  def _score_examples(self, request):
    with self._lease(request.model_spec) as servable:
      signature = request.model_spec.signature_name or "serving_default"
      examples = _examples(request.input)
      self.limits.check_rows(len(examples), "request.input")
      out = servable.run(signature, {"examples": examples})
    if CTR_OUTPUT not in out:
      raise InvalidArgument(f"signature {signature!r} has no {CTR_OUTPUT!r} output")
    return servable, signature, out[CTR_OUTPUT].reshape(-1)

  @_rpc
  def Regress(self, request, context):
    """Regression on tf.Examples: the value is P(click)."""
    servable, signature, p = self._score_examples(request)
    response = regression_pb2.RegressionResponse()
    _set_spec(response.model_spec, servable, signature)
    for v in p:
      response.result.regressions.add(value=float(v))
    return response

  @_rpc
  def Classify(self, request, context):
    """Classification on tf.Examples: classes "0" (no click) and "1" (click) with scores."""
    servable, signature, p = self._score_examples(request)
    response = classification_pb2.ClassificationResponse()
    _set_spec(response.model_spec, servable, signature)
    for v in p:
      c = response.result.classifications.add()
      c.classes.add(label="0", score=float(1 - v))
      c.classes.add(label="1", score=float(v))
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, manager: ModelManager):
    self.manager = manager

  @_rpc
  def GetModelStatus(self, request, context):
    spec = _spec_version(request.model_spec)
    version = spec.get("version")
    if "label" in spec:
      version = self.manager.get(request.model_spec.name, label=spec["label"]).version
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, _ in self.manager.status(request.model_spec.name, version):
      s = response.model_version_status.add()
      s.version = v
      s.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response

  @_rpc
  def HandleReloadConfigRequest(self, request, context):
    raise Unimplemented("reloading the model config is not supported; restart the server")


# ---- REST ------------------------------------------------------------------------------------

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<verb>:predict|/metadata)?$")


def _decode(value):
  if isinstance(value, dict) and set(value) == {"b64"}:
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError) as e:
      raise InvalidArgument(f"bad base64 in {{\"b64\": ...}}: {e}") from None
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


def _encode(array: np.ndarray):
  if array.dtype == object or array.dtype.kind == "S":
    return [_encode(a) for a in array] if array.ndim else (
        array.item().decode("utf-8", "replace") if isinstance(array.item(), bytes) else array.item())
  return array.tolist()


def rest_predict(manager: ModelManager, name, version, label, body,
                 limits: RequestLimits = RequestLimits()) -> Dict:
  with manager.lease(name, version, label) as servable:
    return _rest_predict(servable, body, limits)


def _rest_predict(servable: Servable, body, limits: RequestLimits) -> Dict:
  signature = servable.signature(body.get("signature_name", ""))
  specs = servable.input_specs[signature]
  if ("instances" in body) == ("inputs" in body):
    raise InvalidArgument('the request must have exactly one of "instances" (row format) or "inputs" (columnar)')
  if "instances" in body:
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
      raise InvalidArgument('"instances" must be a non-empty list')
    limits.check_rows(len(rows), '"instances"')
    if all(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
      inputs = {k: [_decode(r.get(k)) for r in rows] for k in specs}
      missing = [k for k in specs if any(k not in r for r in rows)]
      if missing:
        raise InvalidArgument(f"instances lack inputs {missing}")
    elif len(specs) == 1:
      inputs = {next(iter(specs)): [_decode(r) for r in rows]}
    else:
      raise InvalidArgument(f"signature {signature!r} has several inputs {sorted(specs)}: send objects")
  else:
    cols = body["inputs"]
    inputs = {k: _decode(v) for k, v in cols.items()} if isinstance(cols, dict) else {next(iter(specs)): _decode(cols)}
    for k, v in inputs.items():
      if isinstance(v, list):
        limits.check_rows(len(v), f"input {k!r}")
  arrays = {}
  for k, v in inputs.items():
    spec = specs.get(k)
    try:
      arrays[k] = np.array(v, dtype=object if spec is not None and spec.dtype == tf.string else None)
    except (ValueError, TypeError, OverflowError) as e:
      raise InvalidArgument(f"input {k!r}: {e}") from None
  outputs = servable.run(signature, arrays)
  if "instances" in body:
    if len(outputs) == 1:
      return {"predictions": _encode(next(iter(outputs.values())))}
    n = len(next(iter(outputs.values())))
    return {"predictions": [{k: _encode(v[i]) for k, v in outputs.items()} for i in range(n)]}
  if len(outputs) == 1:
    return {"outputs": _encode(next(iter(outputs.values())))}
  return {"outputs": {k: _encode(v) for k, v in outputs.items()}}


def rest_status(manager: ModelManager, name, version, label) -> Dict:
  if label:
    version = manager.get(name, label=label).version
  return {"model_version_status": [
      {"version": str(v), "state": state, "status": {"error_code": "OK", "error_message": ""}}
      for v, state in manager.status(name, version)]}


def rest_metadata(manager: ModelManager, name, version, label) -> Dict:
  servable = manager.get(name, version, label)
  sigs = get_model_metadata_pb2.SignatureDefMap()
  for k, v in servable.signature_defs.items():
    sigs.signature_def[k].CopyFrom(v)
  return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
          "metadata": {"signature_def": json_format.MessageToDict(sigs)}}


def make_rest_handler(manager: ModelManager, limits: RequestLimits = RequestLimits()):

  class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
      log.debug(fmt, *args)

    def _reply(self, status: int, body: Dict):
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _route(self, method: str):
      m = _ROUTE.match(self.path.split("?")[0])
      if not m:
        return self._reply(404, {"error": f"Malformed request: {method} {self.path}"})
      name, label, verb = m.group("name"), m.group("label"), m.group("verb")
      version = int(m.group("version")) if m.group("version") else None
      try:
        if method == "POST" and verb == ":predict":
          try:
            length = int(self.headers.get("Content-Length") or 0)
          except ValueError:
            self.close_connection = True
            raise InvalidArgument("bad Content-Length header") from None
          if length > limits.max_bytes:
            self.close_connection = True     # the body is not read
            raise ResourceExhausted(f"request body of {length} bytes is larger than the limit of "
                                    f"{limits.max_bytes} bytes (--max-request-bytes)")
          try:
            body = json.loads(self.rfile.read(length) or b"{}")
          except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"JSON parse error: {e}") from None
          if not isinstance(body, dict):
            raise InvalidArgument("the request body must be a JSON object")
          return self._reply(200, rest_predict(manager, name, version, label, body, limits))
        if method == "GET" and verb is None:
          return self._reply(200, rest_status(manager, name, version, label))
        if method == "GET" and verb == "/metadata":
          return self._reply(200, rest_metadata(manager, name, version, label))
        return self._reply(405, {"error": f"{method} is not supported on {self.path}"})
      except ServingError as e:
        return self._reply(e.http_status, {"error": str(e)})
      except Exception as e:  # pylint: disable=broad-except
        log.exception("REST request failed")
        return self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    def do_GET(self):
      self._route("GET")

    def do_POST(self):
      self._route("POST")

  return Handler


class ModelServer:
  """gRPC (and optionally REST) servers over one ModelManager."""

  def __init__(self, manager: ModelManager, port: int = 8500, rest_port: Optional[int] = None,
               host: str = "127.0.0.1", workers: int = 16, limits: RequestLimits = RequestLimits()):
    self.manager, self.limits = manager, limits
    # gRPC itself answers RESOURCE_EXHAUSTED to a message above max_bytes, before decoding it.
    self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   options=[("grpc.max_receive_message_length", limits.max_bytes),
                                            ("grpc.max_send_message_length", 256 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager, limits),
                                                                        self.grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), self.grpc_server)
    self.port = self.grpc_server.add_insecure_port(f"{host}:{port}")
    if self.port == 0:
      raise OSError(f"cannot bind gRPC port {host}:{port}")
    self.rest = None
    if rest_port is not None:
      self.rest = ThreadingHTTPServer((host, rest_port), make_rest_handler(manager, limits))
      self.rest.daemon_threads = True
      self.rest_port = self.rest.server_address[1]

  def start(self) -> "ModelServer":
    self.manager.start()
    self.grpc_server.start()
    if self.rest:
      threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True).start()
    return self

  def stop(self) -> None:
    self.grpc_server.stop(grace=1).wait()
    if self.rest:
      self.rest.shutdown()
      self.rest.server_close()
    self.manager.stop()
