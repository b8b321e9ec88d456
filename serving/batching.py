"""Server-side batching, as TF Serving's ``--enable_batching``: concurrent requests to the same
signature are merged along the batch dimension (up to ``max_batch_size`` rows, waiting at most
``batch_timeout`` seconds for more), run once, and split back."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Callable, Dict

import numpy as np

Arrays = Dict[str, np.ndarray]
_STOP = object()


class Batcher:
  """One worker thread per (model version, signature)."""

  def __init__(self, fn: Callable[[Arrays], Arrays], max_batch_size: int = 256,
               batch_timeout: float = 0.001, name: str = "batcher"):
    if max_batch_size < 1 or batch_timeout < 0:
      raise ValueError("max_batch_size must be >= 1 and batch_timeout >= 0")
    self.fn, self.max_batch_size, self.batch_timeout = fn, max_batch_size, batch_timeout
    self._queue: "queue.Queue" = queue.Queue()
    self._stopped = False
    self._thread = threading.Thread(target=self._run, name=name, daemon=True)
    self._thread.start()
    self.batches = 0   # how many merged calls were made (for tests and stats)

  def submit(self, inputs: Arrays) -> Arrays:
    if self._stopped:
      raise RuntimeError("batcher stopped")
    future: concurrent.futures.Future = concurrent.futures.Future()
    rows = len(next(iter(inputs.values()))) if inputs else 0
    self._queue.put((inputs, rows, future))
    return future.result()

  def stop(self) -> None:
    """Finishes queued work, then ends the worker."""
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
    try:
      if len(group) == 1:
        outputs = [self.fn(group[0][0])]
      else:
        merged = {k: np.concatenate([g[0][k] for g in group]) for k in group[0][0]}
        out = self.fn(merged)
        bounds = np.cumsum([0] + [g[1] for g in group])
        outputs = [{k: v[bounds[i]:bounds[i + 1]] for k, v in out.items()} for i in range(len(group))]
      self.batches += 1
      for g, o in zip(group, outputs):
        g[2].set_result(o)
    except Exception as e:  # pylint: disable=broad-except
      for g in group:
        if not g[2].done():
          g[2].set_exception(e)
