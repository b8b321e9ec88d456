"""What several command groups share."""

from __future__ import annotations

import fcntl
import inspect
import os
import time
from typing import Dict, IO

from cscnn.cli.errors import UsageError


def defaults(func) -> Dict[str, object]:
  """The keyword defaults of `func` (a class: of its constructor) by parameter name: a command
  whose flags feed `func` offers the same defaults."""
  return {name: p.default for name, p in inspect.signature(func).parameters.items()
          if p.default is not inspect.Parameter.empty}


def joined(values) -> str:
  """(1, 5, 25) -> "1,5,25": a default of a comma-separated list flag."""
  return ",".join(str(v) for v in values)


def load_spec(path):
  """The feature spec of `--spec PATH` (None: the project's default spec); a file that cannot be
  used is a UsageError naming the file, line and key."""
  from spec.features import DEFAULT_SPEC
  from spec.files import SpecFileError, load
  try:
    return DEFAULT_SPEC if path is None else load(path)
  except SpecFileError as e:
    raise UsageError(str(e)) from e


RUN_LOCK = ".run.lock"


def lock_output(output: str) -> IO:
  """An exclusive lock on the run folder `output` for as long as the returned file stays open
  (the process's lifetime at most). Two runs into one folder share its ML Metadata, caches and
  serving folder, so the second would read the first's state: it stops here with a UsageError
  naming the holder's pid instead."""
  os.makedirs(output, exist_ok=True)
  path = os.path.join(output, RUN_LOCK)
  f = open(path, "a+")   # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise UsageError(f"{output} is in use by a run that has not finished ({holder}): runs into one --output "
                     "share its metadata and serving folder; wait for it or use another --output") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
  f.flush()
  return f
