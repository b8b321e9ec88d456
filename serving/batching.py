"""Server-side batching, as TF Serving's ``--enable_batching``: concurrent requests to the same
signature are merged along the batch dimension (up to ``max_batch_size`` rows, waiting at most
``batch_timeout`` seconds for more), run once, and split back.

`submit` and `stop` take one lock, so every request accepted before `stop` is queued ahead of the
stop marker and is served; a request after `stop` gets UNAVAILABLE. A request waits at most
``request_timeout`` seconds for its result (DEADLINE_EXCEEDED after that)."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Callable, Dict

import numpy as np

from serving.errors import DeadlineExceeded, Unavailable

Arrays = Dict[str, np.ndarray]
_STOP = object()


class Batcher:
  """One worker thread per (model version, signature); `fn` maps arrays with a leading batch
  dimension to arrays with the same leading dimension."""

  def __init__(self, fn: Callable[[Arrays], Arrays], max_batch_size: int = 256,
               batch_timeout: float = 0.001, name: str = "batcher", request_timeout: float = 60.0):
    if max_batch_size < 1 or batch_timeout < 0 or request_timeout <= 0:
      raise ValueError("max_batch_size must be >= 1, batch_timeout >= 0 and request_timeout > 0")
    self.fn, self.max_batch_size, self.batch_timeout = fn, max_batch_size, batch_timeout
    self.request_timeout = request_timeout
    self._queue: "queue.Queue" = queue.Queue()
    self._lock = threading.Lock()
    self._stopped = False
    self._thread = threading.Thread(target=self._run, name=name, daemon=True)
    self._thread.start()
    self.batches = 0   # calls of `fn` that succeeded, merged or single (for tests and stats)

  def submit(self, inputs: Arrays) -> Arrays:
    """Runs `inputs` in a merged batch and returns this request's rows of the outputs."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    rows = len(next(iter(inputs.values()))) if inputs else 0
    with self._lock:
      if self._stopped:
        raise Unavailable(f"{self._thread.name}: the model version is being unloaded; retry")
      self._queue.put((inputs, rows, future))
    try:
      return future.result(timeout=self.request_timeout)
    except concurrent.futures.TimeoutError:
      future.cancel()
      raise DeadlineExceeded(f"{self._thread.name}: no result within {self.request_timeout:g} s") from None

  def stop(self) -> None:
    """Serves every request already submitted, then ends the worker (without waiting for it)."""
    with self._lock:
      if self._stopped:
        return
      self._stopped = True
      self._queue.put(_STOP)

  def _run(self) -> None:
    carry = None
    while True:
      item = carry if carry is not None else self._queue.get()
      carry = None
      if item is _STOP:
        return
      group, total = [item], item[1]
      deadline = time.monotonic() + self.batch_timeout
      while total < self.max_batch_size:
        wait = deadline - time.monotonic()
        try:
          nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
          break
        if nxt is _STOP or total + nxt[1] > self.max_batch_size or set(nxt[0]) != set(item[0]):
          carry = nxt            # starts the next batch
          break
        group.append(nxt)
        total += nxt[1]
      self._execute(group)

  def _execute(self, group) -> None:
    """Runs a group as one merged call. If the merged call fails, each request is run alone,
    so a bad request (e.g. bytes that are not a tf.Example) fails only itself."""
    if len(group) > 1:
      try:
        merged = {k: np.concatenate([g[0][k] for g in group]) for k in group[0][0]}
        out = self.fn(merged)
        bounds = np.cumsum([0] + [g[1] for g in group])
        outputs = [{k: v[bounds[i]:bounds[i + 1]] for k, v in out.items()} for i in range(len(group))]
      except Exception:  # pylint: disable=broad-except
        outputs = None
      if outputs is not None:
        self.batches += 1
        for g, o in zip(group, outputs):
          _resolve(g[2], result=o)
        return
    for g in group:
      try:
        result = self.fn(g[0])
      except Exception as e:  # pylint: disable=broad-except
        _resolve(g[2], error=e)
        continue
      self.batches += 1
      _resolve(g[2], result=result)


def _resolve(future: concurrent.futures.Future, result=None, error=None) -> None:
  """Sets a request's outcome unless it gave up waiting (its future was cancelled)."""
  if not future.set_running_or_notify_cancel():
    return
  if error is not None:
    future.set_exception(error)
  else:
    future.set_result(result)
