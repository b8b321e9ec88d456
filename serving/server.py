"""gRPC and REST front ends with TF Serving's protocol over a `ModelManager`.

gRPC (``tensorflow.serving``): PredictionService/Predict, GetModelMetadata, Classify, Regress;
ModelService/GetModelStatus. REST: ``POST /v1/models/NAME[/versions/N | /labels/L]:predict``
(``instances`` row format or ``inputs`` columnar format, ``{"b64": ...}`` for binary strings),
``GET /v1/models/NAME[/versions/N]`` (status) and ``.../metadata``.
Errors carry TF Serving's codes: unknown model / version / signature -> NOT_FOUND (HTTP 404),
bad input names, dtypes or shapes -> INVALID_ARGUMENT (HTTP 400).
"""

from __future__ import annotations

import base64
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

from models.dcn import OUTPUT_KEY as CTR_OUTPUT
from serving.errors import InvalidArgument, NotFound, ServingError, Unimplemented
from serving.model_manager import ModelManager, Servable

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


def _abort(context, error: ServingError):
  context.abort(getattr(grpc.StatusCode, error.grpc_code), str(error))


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

  def __init__(self, manager: ModelManager):
    self.manager = manager

  def _servable(self, model_spec) -> Servable:
    return self.manager.get(model_spec.name, **_spec_version(model_spec))

  def Predict(self, request, context):
    try:
      servable = self._servable(request.model_spec)
      try:
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      except Exception as e:  # pylint: disable=broad-except
        raise InvalidArgument(f"cannot decode input tensors: {e}") from None
      outputs = servable.run(request.model_spec.signature_name, inputs)
      wanted = list(request.output_filter) or list(outputs)
      unknown = [k for k in wanted if k not in outputs]
      if unknown:
        raise InvalidArgument(f"output_filter names unknown outputs {unknown}; outputs are {sorted(outputs)}")
      response = predict_pb2.PredictResponse()
      _set_spec(response.model_spec, servable, servable.signature(request.model_spec.signature_name))
      for k in wanted:
        response.outputs[k].CopyFrom(tf.make_tensor_proto(outputs[k]))
      return response
    except ServingError as e:
      _abort(context, e)

  def GetModelMetadata(self, request, context):
    try:
      fields = set(request.metadata_field)
      if fields - {"signature_def"}:
        raise InvalidArgument(f"metadata_field must be 'signature_def', got {sorted(fields)}")
      servable = self._servable(request.model_spec)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      _set_spec(response.model_spec, servable)
      sigs = get_model_metadata_pb2.SignatureDefMap()
      for k, v in servable.signature_defs.items():
        sigs.signature_def[k].CopyFrom(v)
      response.metadata["signature_def"].Pack(sigs)
      return response
    except ServingError as e:
      _abort(context, e)

  def _score_examples(self, request):
    servable = self._servable(request.model_spec)
    signature = request.model_spec.signature_name or "serving_default"
    out = servable.run(signature, {"examples": _examples(request.input)})
    if CTR_OUTPUT not in out:
      raise InvalidArgument(f"signature {signature!r} has no {CTR_OUTPUT!r} output")
    return servable, signature, out[CTR_OUTPUT].reshape(-1)

  def Regress(self, request, context):
    """Regression on tf.Examples: the value is P(click)."""
    try:
      servable, signature, p = self._score_examples(request)
      response = regression_pb2.RegressionResponse()
      _set_spec(response.model_spec, servable, signature)
      for v in p:
        response.result.regressions.add(value=float(v))
      return response
    except ServingError as e:
      _abort(context, e)

  def Classify(self, request, context):
    """Classification on tf.Examples: classes "0" (no click) and "1" (click) with scores."""
    try:
      servable, signature, p = self._score_examples(request)
      response = classification_pb2.ClassificationResponse()
      _set_spec(response.model_spec, servable, signature)
      for v in p:
        c = response.result.classifications.add()
        c.classes.add(label="0", score=float(1 - v))
        c.classes.add(label="1", score=float(v))
      return response
    except ServingError as e:
      _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, manager: ModelManager):
    self.manager = manager

  def GetModelStatus(self, request, context):
    try:
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
    except ServingError as e:
      _abort(context, e)

  def HandleReloadConfigRequest(self, request, context):
    _abort(context, Unimplemented("reloading the model config is not supported; restart the server"))


# ---- REST ------------------------------------------------------------------------------------

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<verb>:predict|/metadata)?$")


def _decode(value):
  if isinstance(value, dict) and set(value) == {"b64"}:
    return base64.b64decode(value["b64"])
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


def _encode(array: np.ndarray):
  if array.dtype == object or array.dtype.kind == "S":
    return [_encode(a) for a in array] if array.ndim else (
        array.item().decode("utf-8", "replace") if isinstance(array.item(), bytes) else array.item())
  return array.tolist()


def rest_predict(manager: ModelManager, name, version, label, body) -> Dict:
  servable = manager.get(name, version, label)
  signature = servable.signature(body.get("signature_name", ""))
  specs = servable.input_specs[signature]
  if ("instances" in body) == ("inputs" in body):
    raise InvalidArgument('the request must have exactly one of "instances" (row format) or "inputs" (columnar)')
  if "instances" in body:
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
      raise InvalidArgument('"instances" must be a non-empty list')
    if all(isinstance(r, dict) for r in rows):
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
  arrays = {}
  for k, v in inputs.items():
    spec = specs.get(k)
    try:
      arrays[k] = np.array(v, dtype=object if spec is not None and spec.dtype == tf.string else None)
    except ValueError as e:
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


def make_rest_handler(manager: ModelManager):

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
          length = int(self.headers.get("Content-Length") or 0)
          try:
            body = json.loads(self.rfile.read(length) or b"{}")
          except json.JSONDecodeError as e:
            raise InvalidArgument(f"JSON parse error: {e}") from None
          if not isinstance(body, dict):
            raise InvalidArgument("the request body must be a JSON object")
          return self._reply(200, rest_predict(manager, name, version, label, body))
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
               host: str = "127.0.0.1", workers: int = 16):
    self.manager = manager
    self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   options=[("grpc.max_receive_message_length", 256 << 20),
                                            ("grpc.max_send_message_length", 256 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), self.grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), self.grpc_server)
    self.port = self.grpc_server.add_insecure_port(f"{host}:{port}")
    if self.port == 0:
      raise OSError(f"cannot bind gRPC port {host}:{port}")
    self.rest = None
    if rest_port is not None:
      self.rest = ThreadingHTTPServer((host, rest_port), make_rest_handler(manager))
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
