"""Loads, watches and swaps SavedModel versions under TF Serving's layout BASE/NAME/VERSION/.

- A version is a folder with a numeric name; others (temporary copies, dot-folders) are ignored.
- A version is loaded only when complete and stable: ``saved_model.pb`` present, the variables
  index present when there is a ``variables/`` folder, and the folder's listing (names, sizes,
  modification times) unchanged between two polls. A half-written version is never loaded.
- Policy ``latest`` (TF Serving's default): the highest version is served. A version that is
  loaded stays a candidate while its ``saved_model.pb`` exists, whatever happens to its listing,
  so the served version never goes back to an older one because a newer one's files were
  touched or rewritten; only removing the newer version's folder makes an older one the latest.
  When a newer version has loaded it becomes live atomically and the previous one is unloaded.
- Requests hold a lease on the version they run on (`ModelManager.lease`): a version taken out
  of service is unloaded only after its last lease ends, so requests already running on it
  finish on it. Versions named in ``version_labels`` are kept too.
- A version that fails to load (e.g. truncated variables) is logged and skipped until its files
  change; serving goes on with the version already loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving.batching import Batcher
from serving.errors import InvalidArgument, NotFound

log = logging.getLogger("cscnn.serving")


@dataclasses.dataclass
class BatchingConfig:
  enabled: bool = False
  max_batch_size: int = 256
  batch_timeout: float = 0.001


def _flat_call(fn, specs: Mapping[str, tf.TensorSpec]):
  """A call of the signature function `fn` on validated arrays that skips its keyword front end
  (binding the keywords to the function type, checking and casting every tensor against its
  spec: about 0.2 ms of Python per call of an 11-input signature, and `Servable.validate` has
  checked names, dtypes and shapes already): the tensors in the function's flat input order,
  then its captured variables and tables. None when `fn` does not offer a flat call or its flat
  inputs are not the signature's inputs by name; the keyword call is used then."""
  call_flat = getattr(fn, "_call_flat", None)
  names = [t.name.split(":")[0] for t in getattr(fn, "inputs", [])[:len(specs)]]
  if call_flat is None or sorted(names) != sorted(specs):
    return None
  captured = fn.captured_inputs
  return lambda inputs: call_flat([tf.constant(inputs[n]) for n in names], captured)


class Servable:
  """One loaded version of a model. ``leases`` counts the requests running on it."""

  def __init__(self, name: str, version: int, path: str, batching: BatchingConfig):
    self.name, self.version, self.path = name, version, path
    self.leases = 0
    self._idle = threading.Condition()
    self.loaded = tf.saved_model.load(path)
    sm = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
      sm.ParseFromString(f.read())
    self.signature_defs = dict(sm.meta_graphs[0].signature_def)
    self.signatures = dict(self.loaded.signatures)
    self.input_specs = {k: dict(fn.structured_input_signature[1]) for k, fn in self.signatures.items()}
    self._flat_calls = {k: _flat_call(fn, self.input_specs[k]) for k, fn in self.signatures.items()}
    self._batchers: Dict[str, Batcher] = {}
    if batching.enabled:
      for k in self.signatures:
        self._batchers[k] = Batcher(lambda x, k=k: self._call(k, x), batching.max_batch_size,
                                    batching.batch_timeout, name=f"batcher-{name}-{version}-{k}")

  def signature(self, name: str):
    name = name or "serving_default"
    if name not in self.signatures:
      raise NotFound(f'Serving signature name: "{name}" not found in signature def '
                     f'(model {self.name!r} version {self.version} has {sorted(self.signatures)})')
    return name

  def validate(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Checks names, dtypes and shapes against the signature; returns arrays of the right dtype."""
    specs = self.input_specs[signature]
    if set(inputs) != set(specs):
      missing, extra = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
      raise InvalidArgument(f"signature {signature!r} expects inputs {sorted(specs)}; "
                            f"missing {missing}, unexpected {extra}")
    out, batch = {}, None
    for name, spec in specs.items():
      value = np.asarray(inputs[name])
      want = spec.dtype.as_numpy_dtype
      if spec.dtype == tf.string:
        if value.dtype.kind not in ("S", "U", "O"):
          raise InvalidArgument(f"input {name!r}: expects DT_STRING, got {value.dtype}")
        value = value.astype(object, copy=False)
      elif value.dtype != want:
        same_family = (value.dtype.kind in "iu" and np.dtype(want).kind in "iu") or \
            (value.dtype.kind in "iuf" and np.dtype(want).kind == "f")
        if not same_family:
          raise InvalidArgument(f"input {name!r}: expects {spec.dtype.name}, got {value.dtype}")
        value = value.astype(want)
      if spec.shape.rank is not None:
        if value.ndim != spec.shape.rank or any(d is not None and d != v
                                                for d, v in zip(spec.shape.as_list(), value.shape)):
          raise InvalidArgument(f"input {name!r}: expects shape {spec.shape.as_list()} (None = any), "
                                f"got {list(value.shape)}")
      if value.ndim:
        if batch is not None and value.shape[0] != batch:
          raise InvalidArgument(f"input {name!r}: batch size {value.shape[0]} differs from {batch} of the other inputs")
        batch = value.shape[0]
      out[name] = value
    return out

  def _call(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    flat = self._flat_calls[signature]
    if flat is not None:
      result = flat(inputs)
    else:
      result = self.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in result.items()}

  def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Validates `inputs` and runs the signature (through the batcher when batching is on).
    Errors of the model on the request's data (e.g. serialized bytes that are not a
    tf.Example) are INVALID_ARGUMENT with a message naming the inputs."""
    signature = self.signature(signature)
    arrays = self.validate(signature, inputs)
    batcher = self._batchers.get(signature)
    try:
      return batcher.submit(arrays) if batcher else self._call(signature, arrays)
    except tf.errors.InvalidArgumentError as e:
      raise InvalidArgument(f"inputs {sorted(arrays)} of signature {signature!r}: {e.message}") from None
    except UnicodeDecodeError as e:
      # TF formats an error status whose message quotes the request's bytes (ParseExample's
      # "Could not parse example input, value: '...'") as UTF-8 and fails on binary input;
      # such messages only come from the op rejecting its input.
      raw = e.object if isinstance(e.object, bytes) else b""
      message = raw.decode("utf-8", "backslashreplace")[:400]
      raise InvalidArgument(f"inputs {sorted(arrays)} of signature {signature!r}: {message}") from None

  def _acquire(self) -> None:
    with self._idle:
      self.leases += 1

  def _release(self) -> None:
    with self._idle:
      self.leases -= 1
      if self.leases == 0:
        self._idle.notify_all()

  def unload(self, drain_timeout: float = 60.0) -> None:
    """Waits until no request runs on this version (at most `drain_timeout` seconds), then
    stops its batchers."""
    with self._idle:
      if not self._idle.wait_for(lambda: self.leases == 0, timeout=drain_timeout):
        log.warning("%s version %d: %d requests still running after %.0f s; unloading anyway",
                    self.name, self.version, self.leases, drain_timeout)
    for b in self._batchers.values():
      b.stop()


def numeric_versions(base: str) -> List[int]:
  try:
    names = tf.io.gfile.listdir(base)
  except tf.errors.NotFoundError:
    return []
  return sorted(int(n.rstrip("/")) for n in names if n.rstrip("/").isdigit())


def _snapshot(path: str) -> Optional[Tuple]:
  """Listing of a version folder, or None if it is not (yet) a complete SavedModel or a file
  vanished while it was listed (a writer renaming its temporary files)."""
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    return None
  if os.path.isdir(os.path.join(path, "variables")) and not os.path.exists(
      os.path.join(path, "variables", "variables.index")):
    return None
  entries = []
  for dirpath, _, files in os.walk(path):
    for f in files:
      try:
        st = os.stat(os.path.join(dirpath, f))
      except FileNotFoundError:
        return None
      entries.append((os.path.relpath(os.path.join(dirpath, f), path), st.st_size, st.st_mtime_ns))
  return tuple(sorted(entries))


@dataclasses.dataclass
class ModelConfig:
  name: str
  base_path: str
  version_labels: Dict[str, int] = dataclasses.field(default_factory=dict)


class ModelManager:
  """Serves the latest stable version of each configured model; polls for new ones."""

  def __init__(self, models: List[ModelConfig], poll_interval: float = 1.0,
               batching: BatchingConfig = BatchingConfig()):
    if not models:
      raise ValueError("no models configured")
    self.models = {m.name: m for m in models}
    self.poll_interval, self.batching = poll_interval, batching
    self._live: Dict[str, Dict[int, Servable]] = {m.name: {} for m in models}
    self._seen: Dict[Tuple[str, int], Tuple] = {}
    self._failed: Dict[Tuple[str, int], Tuple] = {}
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # -- lookups ------------------------------------------------------------------------------
  def get(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
    """The servable a request names (latest loaded version by default), without a lease: for
    metadata. Requests that run the model use `lease`."""
    with self._lock:
      return self._pick(name, version, label)

  @contextlib.contextmanager
  def lease(self, name: str, version: Optional[int] = None,
            label: Optional[str] = None) -> Iterator[Servable]:
    """The servable a request names, kept loaded until the ``with`` block ends."""
    with self._lock:
      servable = self._pick(name, version, label)
      servable._acquire()  # pylint: disable=protected-access
    try:
      yield servable
    finally:
      servable._release()  # pylint: disable=protected-access

  def _pick(self, name: str, version: Optional[int], label: Optional[str]) -> Servable:
    if name not in self.models:
      raise NotFound(f"Servable not found for request: model {name!r} is not served "
                     f"(models: {sorted(self.models)})")
    live = self._live[name]
    if label:
      if label not in self.models[name].version_labels:
        raise NotFound(f"Unrecognized servable version label: {label!r} for model {name!r}")
      version = self.models[name].version_labels[label]
    if version is None:
      if not live:
        raise NotFound(f"Servable not found for request: no version of {name!r} is loaded")
      return live[max(live)]
    if version not in live:
      raise NotFound(f"Servable not found for request: Specific({name}, {version}); "
                     f"available versions {sorted(live)}")
    return live[version]

  def status(self, name: str, version: Optional[int] = None) -> List[Tuple[int, str]]:
    if name not in self.models:
      raise NotFound(f"Could not find any versions of model {name!r}")
    live = sorted(self._live[name])
    if version is not None:
      if version not in live:
        raise NotFound(f"Could not find version {version} of model {name!r}")
      live = [version]
    return [(v, "AVAILABLE") for v in live]

  # -- watching -----------------------------------------------------------------------------
  def poll_once(self, initial: bool = False) -> None:
    for name, cfg in self.models.items():
      wanted = self._wanted(name, cfg, initial)
      for version in wanted:
        if version in self._live[name]:
          continue
        path = os.path.join(cfg.base_path, str(version))
        try:
          t0 = time.time()
          servable = Servable(name, version, path, self.batching)
          log.info("loaded %s version %d in %.1f s", name, version, time.time() - t0)
        except Exception as e:  # pylint: disable=broad-except
          log.error("failed to load %s version %d from %s: %s", name, version, path, e)
          self._failed[(name, version)] = self._seen.get((name, version))
          continue
        with self._lock:
          self._live[name] = {**self._live[name], version: servable}
      with self._lock:                # never drop to zero versions
        live, old = self._live[name], []
        if any(v in live for v in wanted):
          old = [s for v, s in live.items() if v not in wanted]
          self._live[name] = {v: s for v, s in live.items() if v in wanted}
      for s in old:                   # no new request can lease these any more
        s.unload()
        log.info("unloaded %s version %d", name, s.version)

  def _wanted(self, name: str, cfg: ModelConfig, initial: bool) -> List[int]:
    """The latest version, plus the labelled ones. Candidates are the loaded versions whose
    ``saved_model.pb`` is still there and the stable, loadable versions not loaded yet."""
    live = self._live[name]
    candidates = {v for v in live if os.path.exists(os.path.join(cfg.base_path, str(v), "saved_model.pb"))}
    for version in numeric_versions(cfg.base_path):
      if version in candidates:
        continue
      path = os.path.join(cfg.base_path, str(version))
      snap = _snapshot(path)
      if initial and snap is not None:
        time.sleep(0.05)
        prev, snap = snap, _snapshot(path)
      else:
        prev = self._seen.get((name, version))
      self._seen[(name, version)] = snap
      if snap is None or snap != prev:
        continue                              # incomplete, or still changing
      if self._failed.get((name, version)) == snap:
        continue                              # failed before with these very files
      candidates.add(version)
    wanted = {max(candidates)} if candidates else set()
    wanted |= {v for v in cfg.version_labels.values() if v in candidates}
    return sorted(wanted)

  def start(self) -> None:
    self.poll_once(initial=True)
    self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)
    self._thread.start()

  def _loop(self) -> None:
    while not self._stop.wait(self.poll_interval):
      try:
        self.poll_once()
      except Exception:  # pylint: disable=broad-except
        log.exception("model watcher poll failed")

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=5)
    for versions in self._live.values():
      for s in versions.values():
        s.unload(drain_timeout=5.0)


def parse_model_config_file(path: str) -> List[ModelConfig]:
  """TF Serving's models.config (text ModelServerConfig with a model_config_list)."""
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=import-outside-toplevel
  cfg = model_server_config_pb2.ModelServerConfig()
  with open(path) as f:
    text_format.Parse(f.read(), cfg)
  return [ModelConfig(c.name, c.base_path, dict(c.version_labels)) for c in cfg.model_config_list.config]
